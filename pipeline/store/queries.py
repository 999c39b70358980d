"""Read-only SQL over the results: named queries from ``sql/queries/`` or any SELECT, with ``$name`` parameters.

Named queries take their parameters by name (``$model_id``, ``$prompt_set_id``, ``$limit``, ``$token``, ...);
``$model_id`` and ``$prompt_set_id`` default to the latest model and prompt set in the store, ``$limit`` to 20.
Two layers keep a query to reading the results (docs/data.md, "What a query can touch"): anything but a SELECT,
or an EXPLAIN of one, is refused before it runs, and it runs on a connection that cannot write
(``Store.query_read_only``).
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pandas as pd

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import dagster_home_dir, data_dir, database_path
from lookups.pipeline.store.manifest import ALL_PENDING
from lookups.pipeline.store.sql_files import named_queries
from lookups.pipeline.store.store import Store
from lookups.pipeline.store.warehouse import is_local

READ_STATEMENTS = {"SELECT", "EXPLAIN"}
PARAMETER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
FORMATS = ("table", "csv", "json", "parquet")


class QueryError(LookupsError, ValueError):
    """A query that cannot run as asked; the message says why and what to do."""


def describe_named() -> dict[str, str]:
    """Each named query's description: its leading comment lines."""
    out = {}
    for name, sql in sorted(named_queries().items()):
        head = []
        for line in sql.splitlines():
            if not line.startswith("--"):
                break
            head.append(line[2:].strip())
        out[name] = " ".join(head)
    return out


def resolve(text: str) -> tuple[str, str | None]:
    """(sql, name) for a named query; (text, None) for SQL."""
    stripped = text.strip()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", stripped):
        queries = named_queries()
        if stripped not in queries:
            raise QueryError(f"No named query '{stripped}'. Named queries: {', '.join(sorted(queries))}; or pass SQL in quotes.")
        return queries[stripped], stripped
    return text, None


def _explained(sql: str) -> str | None:
    """What an EXPLAIN statement explains, when that is a single SELECT; else None. EXPLAIN ANALYZE runs it (so
    ``EXPLAIN ANALYZE COPY ... TO`` writes): what follows EXPLAIN, its ANALYZE and its (options) must be a read."""
    raw = duckdb.tokenize(sql)
    ends = [offset for offset, _ in raw[1:]] + [len(sql)]
    tokens = [(offset, kind, sql[offset:end].strip()) for (offset, kind), end in zip(raw, ends) if kind != duckdb.token_type.comment]
    words = [text.upper() for _, _, text in tokens]
    if words[:1] != ["EXPLAIN"]:
        return None
    start = 2 if words[1:2] in (["ANALYZE"], ["ANALYSE"]) else 1
    candidates = [start]
    if words[start:start + 1] == ["("]:  # EXPLAIN (FORMAT json, ANALYZE) SELECT ...; or EXPLAIN (SELECT ...)
        depth = 0
        for i in range(start, len(tokens)):
            if tokens[i][1] == duckdb.token_type.operator:
                depth += tokens[i][2].count("(") - tokens[i][2].count(")")
            if depth == 0:
                candidates.append(i + 1)
                break
    for index in candidates:
        if index >= len(tokens):
            continue
        inner = sql[tokens[index][0]:]
        try:
            statements = duckdb.extract_statements(inner)
        except duckdb.Error:
            continue
        if len(statements) == 1 and statements[0].type.name == "SELECT":
            return inner
    return None


def check_read_only(sql: str) -> None:
    """Refuse anything but SELECT statements (DESCRIBE, SHOW, SUMMARIZE, FROM-first and WITH count as SELECT) and
    EXPLAIN (ANALYZE) of one."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise QueryError(f"The SQL does not parse: {err}") from err
    if not statements:
        raise QueryError("The query is empty.")
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS or (kind == "EXPLAIN" and _explained(statement.query) is None):
            what = "an EXPLAIN of something that is not a SELECT" if kind == "EXPLAIN" else f"a {kind} statement"
            raise QueryError(
                f"Refused: `lookups query` only reads, and this is {what} ({' '.join(statement.query.split())[:60]!r}). "
                "Results change by re-running the pipeline (`lookups run`); for ad-hoc tables, copy the data out "
                "(--format parquet) and work on the copy."
            )


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def pipeline_locations(store: Store) -> list[tuple[str, Path]]:
    """(what, where) for every place the pipeline writes, resolved with symlinks followed: the results first
    (the warehouse folder when local, the views file), then the Dagster instance and the data folder around them.
    No query reads the results as files (``--allow-files``), nor writes its rows into any of them (``--output``)."""
    places = [("the results", Path(store.root))] if is_local(store.root) else []
    places += [("the views file", store.path), ("the views file", database_path()), ("the Dagster instance", dagster_home_dir()),
               ("the data folder", data_dir())]
    return [(what, path.expanduser().resolve()) for what, path in places]


def readable_paths(paths: list, store: Store) -> list[str]:
    """``--allow-files`` paths, resolved (folders end in '/'); none may hold or lie inside the results, which a
    query reads as tables already and which must stay out of reach of anything DuckDB could write."""
    out = []
    results = [place for what, place in pipeline_locations(store) if what in ("the results", "the views file")]
    for given in paths:
        path = Path(given).expanduser().resolve()
        if not path.exists():
            raise QueryError(f"No file or folder {given} (--allow-files).")
        for place in results:
            if _inside(path, place) or _inside(place, path):
                raise QueryError(
                    f"--allow-files {given} overlaps the results ({place}), which a query reads as tables already; "
                    "name a file or folder outside them."
                )
        out.append(str(path) + "/" if path.is_dir() else str(path))
    return out


def check_output(output: str | Path, store: Store | None = None) -> Path:
    """``--output``, refused (before the query runs) when it is or lies inside a place the pipeline writes:
    the results, the views file, the data folder, the Dagster instance; compared with symlinks followed, so a
    link outside that points inside is refused too."""
    path = Path(output).expanduser()
    resolved = path.resolve()
    for what, place in pipeline_locations(store or Store()):
        if _inside(resolved, place):
            where = "" if resolved == path.absolute() else f" (it resolves to {resolved})"
            raise QueryError(
                f"--output {output} lies in {what} ({place}){where}, which only the pipeline writes: write the rows to a file outside it."
            )
    return path


def _refusal(err: duckdb.Error) -> QueryError:
    """What the locked connection refused, in one line; other failures as DuckDB words them."""
    first = str(err).strip().splitlines()[0]
    if isinstance(err, duckdb.PermissionException):
        return QueryError(f"Refused: a query reads only the results unless --allow-files PATH lets it read PATH ({first}).")
    if "configuration has been locked" in first:
        return QueryError(f"Refused: a query cannot change DuckDB's settings ({first}).")
    return QueryError(f"The query failed: {err}")


def default_parameters(store: Store) -> dict:
    """The latest model and prompt set in the store, and a row limit."""
    latest = store.read("latest_keys")
    return {"model_id": latest["model_id"][0], "prompt_set_id": latest["prompt_set_id"][0], "limit": 20}


#: The parameters that are numbers where the named queries (sql/queries/) use them; every other parameter is
#: text, even when it looks like a number (``--param token=42``, ``context_token=' 1990'``): cast it in SQL
#: (``$x::INTEGER``) where an ad-hoc query needs a number.
NUMERIC_PARAMETERS = {"limit": int, "layer": int, "neuron": int, "head_layer": int, "head": int}
#: The named queries' text parameters (a test checks that every parameter of sql/queries/ is one or the other).
TEXT_PARAMETERS = {"model_id", "prompt_set_id", "token", "context_token"}


def _typed(name: str, value):
    """A parameter given as text, as the query needs it: a number for ``NUMERIC_PARAMETERS``, else the text."""
    cast = NUMERIC_PARAMETERS.get(name)
    if cast is None or not isinstance(value, str):
        return value
    try:
        return cast(value.strip())
    except ValueError:
        raise QueryError(f"--param {name}={value!r}: ${name} is a whole number, e.g. --param {name}=3.") from None


def run_query(text: str, params: dict[str, str] | None = None, store: Store | None = None, allow_files: list = (), pending: bool = False) -> pd.DataFrame:
    """Run a named query or SQL on a read-only connection. ``params`` fills ``$name`` placeholders (text, but
    the ``NUMERIC_PARAMETERS`` given as text become numbers); only the placeholders the query uses are passed. ``allow_files``: files
    or folders (outside the results) the SQL may read too, e.g. with ``read_csv``. ``pending``: read the writes of
    runs that have not completed too (docs/data.md, "What a reader sees")."""
    store = store or Store(lock_wait_s=10.0, partition=ALL_PENDING if pending else None)  # a person is waiting: a few seconds, then say why
    sql, name = resolve(text)
    check_read_only(sql)
    readable = readable_paths(list(allow_files), store)
    store.refresh_views()
    wanted = set(PARAMETER.findall(sql))
    given = {k: _typed(k, v) for k, v in (params or {}).items()}
    values = {}
    if wanted:
        defaults = default_parameters(store) if wanted & {"model_id", "prompt_set_id", "limit"} else {}
        values = {k: given[k] if k in given else defaults.get(k) for k in wanted}
        missing = sorted(k for k, v in values.items() if v is None and k not in defaults)
        if missing:
            label = f"'{name}'" if name else "The query"
            raise QueryError(f"{label} needs " + ", ".join(f"--param {k}=..." for k in missing) + ".")
    try:
        return store.query_read_only(sql, values or None, readable)
    except duckdb.Error as err:
        raise _refusal(err) from err


def write_frame(frame: pd.DataFrame, fmt: str, output: Path | None) -> str | None:
    """Render ``frame`` as an aligned table, CSV or JSON (returned, or written to ``output``), or Parquet
    (written to ``output``, which it needs)."""
    if fmt not in FORMATS:
        raise QueryError(f"Unknown format '{fmt}': use one of {', '.join(FORMATS)}.")
    if fmt == "parquet":
        if output is None:
            raise QueryError("Parquet is binary: give --output FILE.parquet.")
        frame.to_parquet(output, index=False)
        return None
    if fmt == "table":
        with pd.option_context("display.max_colwidth", 80, "display.width", 250):
            text = frame.to_string(index=False) if len(frame) else "(no rows)"
    elif fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        text = frame.to_json(orient="records", indent=1, date_format="iso", default_handler=str)
    if output is not None:
        Path(output).write_text(text if text.endswith("\n") else text + "\n")
        return None
    return text

