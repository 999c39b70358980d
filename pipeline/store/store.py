"""The store: Parquet files per (table, key), with DuckDB views over them; schema, views and reads from ``sql/``.

The store owns every read: steps and assets ask for a named read (``sql/reads/<name>.sql``) or for the rows
of one key of a table, and get a DataFrame. See docs/architecture.md.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from lookups.pipeline.common import files
from lookups.pipeline.common.hashing import stable_hash
from lookups.pipeline.config import database_path
from lookups.pipeline.store.asset_versions import AssetVersion, version_from_row, version_write
from lookups.pipeline.store.errors import StoreError
from lookups.pipeline.store.sql_files import SCHEMA_FILE, TABLE_KEYS, sql_text, sql_with_parameters
from lookups.pipeline.store.warehouse import connect, is_local, lock_down, sql_string, warehouse_root


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
        return not is_local(self.root) or any(Path(self.root).glob("*/part-*.parquet"))

    # ------------------------------------------------------------ writing

    def _typing(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with the real tables of schema.sql, empty: writes are conformed through it."""
        if self._typed is None:
            con = connect()
            con.execute(sql_text("schema.sql"))
            self._typed = con
            self._remove_stale_staging()
            for table in TABLE_KEYS:
                self._write_schema_file(con, table)
        return self._typed

    def _remove_stale_staging(self) -> None:
        """Before this store's first write: the staged files a killed writer left (never a live writer's)."""
        if is_local(self.root):
            for table in TABLE_KEYS:
                files.remove_stale_staging(Path(self.table_dir(table)), recursive=False)

    def _write_schema_file(self, con, table: str) -> None:
        """An empty file with the table's columns, so a table nothing has been written to reads as empty."""
        target = f"{self.table_dir(table)}/{SCHEMA_FILE}"
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        if not is_local(self.root):
            con.execute(f"COPY (SELECT * FROM {table} LIMIT 0) TO {sql_string(target)} (FORMAT parquet)")
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        if Path(target).exists():
            try:
                found = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({sql_string(target)})").fetchall()]
                if found == columns:
                    return
            except duckdb.Error:
                pass
        tmp = files.staging_path(Path(target))
        con.execute(f"COPY (SELECT * FROM {table} LIMIT 0) TO {sql_string(str(tmp))} (FORMAT parquet)")
        os.replace(tmp, target)

    def _conform(self, table: str, keys: dict, frame: pd.DataFrame, target: str) -> str:
        """Write ``frame`` (key columns added) through the table's constraints to a temporary file next to
        ``target``; returns that file (the target itself for object stores, whose puts are atomic)."""
        con = self._typing()
        frame = frame.copy()
        for column, value in keys.items():
            frame[column] = value
        staged = target if not is_local(self.root) else str(files.staging_path(Path(target)))
        if is_local(self.root):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            con.execute("BEGIN TRANSACTION")
            try:
                if len(frame):
                    con.register("incoming", frame)
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                    con.unregister("incoming")
                con.execute(f"COPY {table} TO {sql_string(staged)} (FORMAT parquet)")
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
            writes = [*writes, version_write(version)]
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
            f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({sql_string(self.table_dir(table) + '/*.parquet')}, union_by_name = true)"
            for table in TABLE_KEYS
        ]
        return ";\n".join(statements) + ";\n" + sql_text("views.sql")

    def _reading(self, require_results: bool) -> duckdb.DuckDBPyConnection:
        if require_results and not self.exists():
            raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
        if self._reader is None:
            self._typing()  # every table has its schema file, so an empty table reads as empty
            con = connect()
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
        with tempfile.TemporaryDirectory(prefix="lookups-query-") as scratch, connect() as con:  # setup SQL (credentials) runs before the lock
            if is_local(self.root):
                self._typing()  # every table has its schema file, so an empty table reads as empty
                for table in TABLE_KEYS:
                    con.register(table, self._dataset(table))
                con.execute(sql_text("views.sql"))
                lock_down(con, list(allow_files), scratch)
            else:
                con.execute(self.views_sql())
                lock_down(con, [self.root.rstrip("/") + "/", *allow_files], scratch)
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
        if is_local(self.root) and not Path(path).exists():
            return None
        with connect() as con:
            try:
                row = con.execute(f"SELECT data_version, code_version, stats, complete FROM read_parquet({sql_string(path)})").fetchone()
            except duckdb.IOException:
                return None
        if row is None:
            return None
        return version_from_row(asset, scope, row)

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
                return connect(str(self.path))
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
