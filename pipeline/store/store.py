"""The store: Parquet files per (table, key), with DuckDB views over them; schema, views and reads from ``sql/``.

The store owns every read: steps and assets ask for a named read (``sql/reads/<name>.sql``) or for the rows
of one key of a table, and get a DataFrame. See docs/architecture.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd

from lookups.pipeline.common import files
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.common.hashing import stable_hash
from lookups.pipeline.config import database_path


class StoreError(LookupsError, RuntimeError):
    """The store cannot do what was asked; the message says why and what to do."""


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


def _json_safe(value):
    """NaN and infinities (e.g. a test with no samples) become null: JSON has no such numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class AssetVersion:
    """A step's version record: what it computed from (``data_version``), by which code, its stats, and
    whether it finished (a run stopped by its LLM budget did not: the next run computes again)."""

    asset: str
    scope: str
    data_version: str
    code_version: str
    stats: dict
    complete: bool = True


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


def warehouse_root(path: Path) -> str:
    """Where the Parquet files live: ``LOOKUPS_WAREHOUSE`` (a folder or an object-store URL such as
    ``s3://bucket/lookups``), else a folder beside the views file."""
    return os.environ.get("LOOKUPS_WAREHOUSE") or str(path.with_name(path.stem + "_tables"))


DUCKDB_SETUP_ENV = "LOOKUPS_DUCKDB_SETUP"


def _connect(database: str = ":memory:", **kwargs) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the deployment's setup SQL run first (``LOOKUPS_DUCKDB_SETUP``, e.g.
    ``CREATE SECRET (TYPE s3, PROVIDER credential_chain)`` for a warehouse on S3): credentials stay in the
    environment, never in the code or the views file."""
    con = duckdb.connect(database, **kwargs)
    setup = os.environ.get(DUCKDB_SETUP_ENV)
    if setup:
        con.execute(setup)
    return con


def _lock_down(con: duckdb.DuckDBPyConnection, readable: list[str], scratch: str) -> None:
    """Close ``con`` around what it may read (docs/data.md, "What a query can touch"): no file but ``readable``
    (folders end in '/'), no extension installed or loaded, no Python variable scanned, and the configuration
    locked, so no SET, RESET or PRAGMA undoes any of it. With nothing readable the local file system is off.
    Otherwise DuckDB may still write in its temp directory, so that is ``scratch``, a folder thrown away after."""
    folders = [p for p in readable if p.endswith("/")]
    paths = [p for p in readable if not p.endswith("/")]
    if folders:  # must be set before external access goes off
        con.execute(f"SET allowed_directories = [{', '.join(map(_sql_string, folders))}]")
    if paths:
        con.execute(f"SET allowed_paths = [{', '.join(map(_sql_string, paths))}]")
    con.execute(f"SET temp_directory = {_sql_string(scratch)}")
    for setting in ("autoload_known_extensions", "autoinstall_known_extensions", "allow_community_extensions", "python_enable_replacements"):
        con.execute(f"SET {setting} = false")
    con.execute("SET enable_external_access = false")
    if not readable:
        con.execute("SET disabled_filesystems = 'LocalFileSystem'")  # after external access: turning that off checks the file system
    con.execute("SET lock_configuration = true")


def _is_local(root: str) -> bool:
    return "://" not in root


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Store:
    """Results as Parquet files, one per (table, key), with DuckDB views over them.

    A step's write conforms each frame to its table's schema (types, NOT NULL, CHECK, primary key, defaults,
    all from ``sql/schema.sql``) in an in-memory DuckDB, writes it to a temporary file and renames it over the
    key's file; the asset version is written last. So writers in parallel processes never share a file
    lock, a failed write leaves the old rows and version in place, and a reader sees each key's old file or
    its new one, never half of either. Queries run in an in-memory DuckDB whose tables are views over the
    files (plus ``sql/views.sql``); ``<name>.duckdb``, the views file, holds the same views for the duckdb
    CLI and notebooks, refreshed when the schema or the warehouse location changes.
    """

    #: Only the views file has a lock (taken for a moment when the schema changes); a reader that finds
    #: it held by a client that writes to it waits this long.
    LOCK_WAIT_S = 600.0

    def __init__(self, path: str | Path | None = None, lock_wait_s: float | None = None):
        self.path = Path(path) if path else database_path()
        self.root = warehouse_root(self.path)
        self.lock_wait_s = self.LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        self._typed: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ locations

    @property
    def folder(self) -> Path:
        """The views file's folder: the corpus cache, the atlas pages, the figures and the assets' handles live
        under it, so a store pointed elsewhere carries everything with it."""
        return self.path.parent

    def table_dir(self, table: str) -> str:
        return f"{self.root}/{table}"

    def key_file(self, table: str, keys: dict) -> str:
        if table not in TABLE_KEYS:
            raise StoreError(f"Unknown table {table}.")
        if tuple(keys) != TABLE_KEYS[table]:
            raise StoreError(f"{table} is written by key {TABLE_KEYS[table]}, not {tuple(keys)}.")
        return f"{self.table_dir(table)}/part-{stable_hash(table, [str(v) for v in keys.values()], length=24)}.parquet"

    def exists(self) -> bool:
        """Whether anything has been written."""
        if self.path.exists():
            return True
        return not _is_local(self.root) or any(Path(self.root).glob("*/part-*.parquet"))

    # ------------------------------------------------------------ writing

    def _typing(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the real tables of schema.sql, empty: writes are conformed through it."""
        if self._typed is None:
            con = _connect()
            con.execute(sql_text("schema.sql"))
            self._typed = con
            self._remove_stale_staging()
            for table in TABLE_KEYS:
                self._write_schema_file(con, table)
        return self._typed

    def _remove_stale_staging(self) -> None:
        """Before this store's first write: the staged files a killed writer left (never a live writer's)."""
        if _is_local(self.root):
            for table in TABLE_KEYS:
                files.remove_stale_staging(Path(self.table_dir(table)), recursive=False)

    def _write_schema_file(self, con, table: str) -> None:
        """An empty file with the table's columns, so a table nothing has been written to reads as empty."""
        target = f"{self.table_dir(table)}/{SCHEMA_FILE}"
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        if not _is_local(self.root):
            con.execute(f"COPY (SELECT * FROM {table} LIMIT 0) TO {_sql_string(target)} (FORMAT parquet)")
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        if Path(target).exists():
            try:
                found = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_sql_string(target)})").fetchall()]
                if found == columns:
                    return
            except duckdb.Error:
                pass
        tmp = files.staging_path(Path(target))
        con.execute(f"COPY (SELECT * FROM {table} LIMIT 0) TO {_sql_string(str(tmp))} (FORMAT parquet)")
        os.replace(tmp, target)

    def _conform(self, table: str, keys: dict, frame: pd.DataFrame, target: str) -> str:
        """Write ``frame`` (key columns added) through the table's constraints to a temporary file next to
        ``target``; returns that file (the target itself for object stores, whose puts are atomic)."""
        con = self._typing()
        frame = frame.copy()
        for column, value in keys.items():
            frame[column] = value
        staged = target if not _is_local(self.root) else str(files.staging_path(Path(target)))
        if _is_local(self.root):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            con.execute("BEGIN TRANSACTION")
            try:
                if len(frame):
                    con.register("incoming", frame)
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                    con.unregister("incoming")
                con.execute(f"COPY {table} TO {_sql_string(staged)} (FORMAT parquet)")
            finally:
                con.execute("ROLLBACK")  # the typing tables stay empty
        return staged

    def replace(self, table: str, keys: dict, frame: pd.DataFrame, version: AssetVersion | None = None) -> int:
        """Replace the rows of ``keys`` in ``table`` with ``frame`` (key columns added)."""
        self.replace_many([(table, keys, frame)], version)
        return len(frame)

    def replace_many(self, writes: list[tuple[str, dict, pd.DataFrame]], version: AssetVersion | None = None) -> None:
        """Several keyed replacements, then the version: every frame is conformed and staged first, so a
        frame that breaks a constraint replaces nothing."""
        if version is not None:
            row = pd.DataFrame([{
                "data_version": version.data_version, "code_version": version.code_version,
                "stats": json.dumps(_json_safe(version.stats), default=float), "complete": version.complete,
            }])
            writes = [*writes, ("asset_versions", {"asset": version.asset, "scope": version.scope}, row)]
        staged = []
        try:
            for table, keys, frame in writes:
                target = self.key_file(table, keys)
                staged.append((self._conform(table, keys, frame, target), target))
        except Exception:
            for tmp, target in staged:
                if tmp != target:
                    Path(tmp).unlink(missing_ok=True)
            raise
        for tmp, target in staged:
            if tmp != target:
                os.replace(tmp, target)
        self._refresh_views_file_quietly()

    def append(self, table: str, frame: pd.DataFrame) -> None:
        """Insert rows without replacing any (logs such as ``llm_calls``): a new file per call."""
        if table not in TABLE_KEYS or TABLE_KEYS[table]:
            raise StoreError(f"{table} is not an append-only table.")
        if not len(frame):
            return
        target = f"{self.table_dir(table)}/part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex}.parquet"
        tmp = self._conform(table, {}, frame, target)
        if tmp != target:
            os.replace(tmp, target)

    # ------------------------------------------------------------ reading

    def views_sql(self) -> str:
        """The views as SQL: one per table over its Parquet files, then ``sql/views.sql``. Run it in any
        DuckDB (a MotherDuck database, a notebook) to query the same results."""
        statements = [
            f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({_sql_string(self.table_dir(table) + '/*.parquet')}, union_by_name = true)"
            for table in TABLE_KEYS
        ]
        return ";\n".join(statements) + ";\n" + sql_text("views.sql")

    def _reading(self, require_results: bool) -> duckdb.DuckDBPyConnection:
        if require_results and not self.exists():
            raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
        if self._reader is None:
            self._typing()  # every table has its schema file, so an empty table reads as empty
            con = _connect()
            con.execute(self.views_sql())
            self._reader = con
        return self._reader

    def query(self, sql: str, params: list | dict | None = None, require_results: bool = True) -> pd.DataFrame:
        """Run SQL over every table and view. ``require_results``: with nothing written yet, say so (a
        person's query) rather than read empty tables (a step's read). No file lock is taken: parallel
        writers and readers are fine."""
        cursor = self._reading(require_results).cursor()
        try:
            return cursor.execute(sql, params or []).df()
        finally:
            cursor.close()

    def query_read_only(self, sql: str, params: list | dict | None = None, allow_files: list[str] = ()) -> pd.DataFrame:
        """Run a person's SQL (``lookups query``) on a connection that cannot write. Locally, the tables are Arrow
        datasets over the Parquet files, so DuckDB itself opens no file at all: nothing it runs can write one, and
        ``allow_files`` (resolved paths, folders ending in '/') are the only files it may read. On an object store
        it reads the warehouse prefix through its own file system; only the statement check of ``queries.py``
        keeps writes out there. Built per query, so it sees every file written so far."""
        if not self.exists():
            raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
        with tempfile.TemporaryDirectory(prefix="lookups-query-") as scratch, _connect() as con:  # setup SQL (credentials) runs before the lock
            if _is_local(self.root):
                self._typing()  # every table has its schema file, so an empty table reads as empty
                for table in TABLE_KEYS:
                    con.register(table, self._dataset(table))
                con.execute(sql_text("views.sql"))
                _lock_down(con, list(allow_files), scratch)
            else:
                con.execute(self.views_sql())
                _lock_down(con, [self.root.rstrip("/") + "/", *allow_files], scratch)
            return con.execute(sql, params or []).df()

    def _dataset(self, table: str):
        """A table's Parquet files as an Arrow dataset with its schema file's columns (a file written before a
        column was added reads it as null, as the view's ``union_by_name`` does)."""
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        folder = Path(self.table_dir(table))
        parts = sorted(str(p) for p in folder.glob("*.parquet") if p.name != SCHEMA_FILE)
        return ds.dataset(parts, schema=pq.read_schema(folder / SCHEMA_FILE), format="parquet")

    def read(self, name: str, **params) -> pd.DataFrame:
        """A named read, ``sql/reads/<name>.sql``, with its ``$parameters`` (a step's or an asset's input:
        nothing written yet reads as empty tables)."""
        sql, values = sql_with_parameters(f"reads/{name}", **params)
        return self.query(sql, values or None, require_results=False)

    def named_query(self, name: str, **params) -> pd.DataFrame:
        """A named query a person runs, ``sql/queries/<name>.sql``, with its ``$parameters``."""
        sql, values = sql_with_parameters(f"queries/{name}", **params)
        return self.query(sql, values or None)

    def check_read(self, name: str, **params) -> pd.DataFrame:
        """A data-quality check's read, ``sql/checks/<name>.sql``, with its ``$parameters``."""
        sql, values = sql_with_parameters(f"checks/{name}", **params)
        return self.query(sql, values or None, require_results=False)

    def rows(self, table: str, **keys) -> pd.DataFrame:
        """Every row of ``table`` with these key values (e.g. one partition's rows, for its checks)."""
        if table not in TABLE_KEYS:
            raise StoreError(f"Unknown table {table}.")
        unknown = sorted(set(keys) - set(TABLE_KEYS[table]))
        if unknown:
            raise StoreError(f"{table} has no key column {', '.join(unknown)}; its keys are {TABLE_KEYS[table]}.")
        where = " AND ".join(f"{column} = ${column}" for column in keys) or "true"
        return self.query(f"SELECT * FROM {table} WHERE {where}", keys or None, require_results=False)

    def version(self, asset: str, scope: str) -> AssetVersion | None:
        """The version record a step wrote for ``scope``, or None."""
        path = self.key_file("asset_versions", {"asset": asset, "scope": scope})
        if _is_local(self.root) and not Path(path).exists():
            return None
        with _connect() as con:
            try:
                row = con.execute(f"SELECT data_version, code_version, stats, complete FROM read_parquet({_sql_string(path)})").fetchone()
            except duckdb.IOException:
                return None
        if row is None:
            return None
        return AssetVersion(asset, scope, row[0], row[1], json.loads(row[2]) if row[2] else {}, bool(row[3]))

    # ------------------------------------------------------------ the views file

    def _views_stamp(self) -> Path:
        return self.path.with_name(self.path.name + ".views")

    @functools.cached_property
    def _views_version(self) -> str:
        """Read once per store: every write compares it with the stamp."""
        return stable_hash(self.root, sql_text("schema.sql"), sql_text("views.sql"), length=16)

    def _open_views_file(self, wait_s: float) -> duckdb.DuckDBPyConnection:
        started, delay = time.monotonic(), 0.05
        while True:
            try:
                return _connect(str(self.path))
            except duckdb.IOException as err:
                if "lock" not in str(err).lower():
                    raise
                if time.monotonic() - started >= wait_s:
                    raise StoreError(
                        f"{self.path} is locked by another process (a duckdb CLI or notebook that opened it for writing). "
                        f"Close it, or open it read-only (`duckdb -readonly`, `read_only=True`), then retry. ({err})"
                    ) from err
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def refresh_views_file(self, wait_s: float | None = None) -> None:
        """Write the views over the Parquet files into the views file (idempotent)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._typing()
        con = self._open_views_file(self.lock_wait_s if wait_s is None else wait_s)
        try:
            con.execute(self.views_sql())
        finally:
            con.close()
        files.write_atomically(self._views_stamp(), self._views_version)

    def _refresh_views_file_quietly(self) -> None:
        """After a write: refresh the views file if it is missing or stale, unless a client holds it."""
        stamp = self._views_stamp()
        if stamp.exists() and stamp.read_text() == self._views_version and self.path.exists():
            return
        try:
            self.refresh_views_file(wait_s=2.0)
        except StoreError:
            pass  # the next write, or `lookups query`, refreshes it

    def refresh_views(self) -> bool:
        """Refresh the views file if needed; False when there is nothing yet or a client holds the file."""
        if not self.exists():
            return False
        try:
            self._refresh_views_file_quietly()
            return True
        except StoreError:
            return False
