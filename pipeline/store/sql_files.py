"""The SQL files shipped in ``sql/``: their text, their ``$parameters``, and the tables of ``sql/schema.sql``
with the key columns each is written per."""

from __future__ import annotations

import re
from importlib import resources

from lookups.pipeline.store.errors import StoreError


def sql_text(name: str) -> str:
    """A .sql file shipped in the ``sql/`` folder, e.g. ``schema.sql`` or ``queries/top_neurons.sql``."""
    node = resources.files("lookups.sql")
    for part in name.split("/"):
        node = node / part
    if not node.is_file():
        raise StoreError(f"No SQL file '{name}' in the sql/ folder.")
    return node.read_text()


def named_queries() -> dict[str, str]:
    folder = resources.files("lookups.sql") / "queries"
    return {p.name[: -len(".sql")]: p.read_text() for p in folder.iterdir() if p.name.endswith(".sql")}


PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def sql_with_parameters(name: str, **values) -> tuple[str, dict]:
    """``sql/<name>.sql`` and, of ``values``, the ``$parameters`` it uses (DuckDB refuses extra ones);
    tuples become lists (DuckDB binds lists)."""
    sql = sql_text(f"{name}.sql")
    wanted = set(PARAMETER.findall(sql))
    missing = sorted(wanted - set(values))
    if missing:  # a caller's bug, not the user's: no StoreError
        raise ValueError(f"sql/{name}.sql needs " + ", ".join(f"${m}" for m in missing))
    return sql, {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k in wanted}


def _table_keys(schema: str) -> dict[str, tuple[str, ...]]:
    """Each table of ``sql/schema.sql`` and the key columns it is written per (its ``-- written per:`` note): a
    write replaces exactly the rows of one such key (one file); a table written per nothing is appended to."""
    found = {}
    for table, note in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \(\s*-- written per: ([^\n]*)", schema):
        found[table] = () if note.startswith("nothing") else tuple(column.strip() for column in note.split(","))
    return found


#: The key columns each table is written by, from sql/schema.sql.
TABLE_KEYS = _table_keys(sql_text("schema.sql"))
#: The result tables (``asset_versions`` is the steps' bookkeeping).
TABLES = tuple(t for t in TABLE_KEYS if t != "asset_versions")
SCHEMA_FILE = "_schema.parquet"  # sorts before part-*.parquet, so a table's columns come in schema order
