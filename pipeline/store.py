"""The store: Parquet files per (table, key) with DuckDB as the catalog; schema and views from ``sql/``."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb
import pandas as pd

from . import files
from .config import database_path



def stable_hash(*parts, length: int = 16) -> str:
    """Hex digest of JSON-serialised parts (keys sorted): data versions, cache keys and ids of stored rows."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class StoreError(RuntimeError):
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
    asset: str
    scope: str
    data_version: str
    code_version: str
    stats: dict


#: The key columns each table is written by: a write replaces exactly the rows of one such key (one file).
TABLE_KEYS = {
    "models": ("model_id",),
    "neurons": ("model_id",),
    "prompt_sets": ("prompt_set_id",),
    "documents": ("prompt_set_id",),
    "neuron_exemplars": ("model_id", "prompt_set_id"),
    "head_attributions": ("model_id", "prompt_set_id"),
    "exemplar_decompositions": ("model_id", "prompt_set_id"),
    "head_neuron_scores": ("model_id", "prompt_set_id"),
    "head_ablations": ("model_id", "prompt_set_id"),
    "ablation_tests": ("model_id", "prompt_set_id"),
    "explanations": ("model_id", "prompt_set_id", "explainer"),
    "explanation_scores": ("model_id", "prompt_set_id", "explainer"),
    "explanation_tests": ("model_id", "prompt_set_id", "explainer"),
    "llm_calls": (),  # appended, one file per batch of calls
    "asset_versions": ("asset", "scope"),
}
#: The result tables (``asset_versions`` is the steps' bookkeeping).
TABLES = tuple(t for t in TABLE_KEYS if t != "asset_versions")
SCHEMA_FILE = "_schema.parquet"  # sorts before part-*.parquet, so a table's columns come in schema order


def warehouse_root(path: Path) -> str:
    """Where the Parquet files live: ``LOOKUPS_WAREHOUSE`` (a folder or an object-store URL such as
    ``s3://bucket/lookups``), else a folder beside the DuckDB catalog file."""
    return os.environ.get("LOOKUPS_WAREHOUSE") or str(path.with_name(path.stem + "_tables"))


DUCKDB_SETUP_ENV = "LOOKUPS_DUCKDB_SETUP"


def _connect(database: str = ":memory:", **kwargs) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the deployment's setup SQL run first (``LOOKUPS_DUCKDB_SETUP``, e.g.
    ``CREATE SECRET (TYPE s3, PROVIDER credential_chain)`` for a warehouse on S3): credentials stay in the
    environment, never in the code or the catalog."""
    con = duckdb.connect(database, **kwargs)
    setup = os.environ.get(DUCKDB_SETUP_ENV)
    if setup:
        con.execute(setup)
    return con


def _is_local(root: str) -> bool:
    return "://" not in root


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Store:
    """Results as Parquet files, one per (table, key), with DuckDB as the catalog over them.

    A step's write conforms each frame to its table's schema (types, NOT NULL, CHECK, primary key, defaults,
    all from ``sql/schema.sql``) in an in-memory DuckDB, writes it to a temporary file and renames it over the
    key's file; the asset version is written last. So writers in parallel processes never share a file
    lock, a failed write leaves the old rows and version in place, and a reader sees each key's old file or
    its new one, never half of either. Queries run in an in-memory DuckDB whose tables are views over the
    files (plus ``sql/views.sql``); ``<name>.duckdb`` is the same catalog as a file, for the duckdb CLI and
    notebooks, refreshed when the schema or the warehouse location changes.
    """

    #: Only the catalog file has a lock (taken for a moment when the schema changes); a reader that finds
    #: it held by a client that writes to it waits this long.
    LOCK_WAIT_S = 600.0

    def __init__(self, path: str | Path | None = None, lock_wait_s: float | None = None):
        self.path = Path(path) if path else database_path()
        self.root = warehouse_root(self.path)
        self.lock_wait_s = self.LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        self._typed: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._exporting = False

    # ------------------------------------------------------------ locations

    def table_dir(self, table: str) -> str:
        return f"{self.root}/{table}"

    def key_file(self, table: str, keys: dict) -> str:
        if table not in TABLE_KEYS:
            raise StoreError(f"Unknown table {table}.")
        if tuple(keys) != TABLE_KEYS[table]:
            raise StoreError(f"{table} is written by key {TABLE_KEYS[table]}, not {tuple(keys)}.")
        return f"{self.table_dir(table)}/part-{stable_hash(table, [str(v) for v in keys.values()], length=24)}.parquet"

    def exists(self) -> bool:
        """Whether anything has been written (a catalog file alone, from an older version, counts too)."""
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
            for table in TABLE_KEYS:
                self._write_schema_file(con, table)
        return self._typed

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
            row = pd.DataFrame([{"data_version": version.data_version, "code_version": version.code_version, "stats": json.dumps(_json_safe(version.stats), default=float)}])
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
        self._refresh_catalog_quietly()

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

    def catalog_sql(self) -> str:
        """The catalog as SQL: a view per table over its Parquet files, then ``sql/views.sql``. Run it in any
        DuckDB (a MotherDuck database, a notebook) to query the same results."""
        return self._views_sql()

    def _views_sql(self) -> str:
        statements = [
            f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({_sql_string(self.table_dir(table) + '/*.parquet')}, union_by_name = true)"
            for table in TABLE_KEYS
        ]
        return ";\n".join(statements) + ";\n" + sql_text("views.sql")

    def _reading(self, require_results: bool = True) -> duckdb.DuckDBPyConnection:
        if self._reader is None:
            if require_results and not self.exists():
                raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
            self._typing()  # every table has its schema file, so an empty table reads as empty
            con = _connect()
            con.execute(self._views_sql())
            self._reader = con
        return self._reader

    def query(self, sql: str, params: list | dict | None = None, read_only: bool = True) -> pd.DataFrame:
        """Run SQL over every table and view (``read_only=False``: a step's read, where no results yet means
        empty tables). No file lock is taken: parallel writers and readers are fine."""
        cursor = self._reading(require_results=read_only).cursor()
        try:
            return cursor.execute(sql, params or []).df()
        finally:
            cursor.close()

    def version(self, asset: str, scope: str) -> AssetVersion | None:
        path = self.key_file("asset_versions", {"asset": asset, "scope": scope})
        if _is_local(self.root) and not Path(path).exists():
            return None
        try:
            row = _connect().execute(f"SELECT data_version, code_version, stats FROM read_parquet({_sql_string(path)})").fetchone()
        except duckdb.IOException:
            return None
        if row is None:
            return None
        return AssetVersion(asset, scope, row[0], row[1], json.loads(row[2]) if row[2] else {})

    # ------------------------------------------------------------ the catalog file

    def _catalog_stamp(self) -> Path:
        return self.path.with_name(self.path.name + ".catalog")

    @functools.cached_property
    def _catalog_version(self) -> str:
        """Read once per store: every write compares it with the stamp."""
        return stable_hash(self.root, sql_text("schema.sql"), sql_text("views.sql"), length=16)

    def _open_catalog(self, wait_s: float) -> duckdb.DuckDBPyConnection:
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

    def refresh_catalog(self, wait_s: float | None = None) -> None:
        """Write the views over the Parquet files into the catalog file (idempotent). A file written by an
        older version, with the rows in DuckDB tables, has them exported to Parquet first."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._typing()
        con = self._open_catalog(self.lock_wait_s if wait_s is None else wait_s)
        try:
            self._exporting = True
            self._export_tables(con)
            con.execute(self._views_sql())
        finally:
            self._exporting = False
            con.close()
        files.write_atomically(self._catalog_stamp(), self._catalog_version)

    def _refresh_catalog_quietly(self) -> None:
        """After a write: refresh the catalog file if it is missing or stale, unless a client holds it."""
        stamp = self._catalog_stamp()
        if self._exporting or (stamp.exists() and stamp.read_text() == self._catalog_version and self.path.exists()):
            return
        try:
            self.refresh_catalog(wait_s=2.0)
        except StoreError:
            pass  # the next write, or `lookups query`, refreshes it

    def refresh_views(self) -> bool:
        """Refresh the catalog file if needed; False when there is nothing yet or a client holds the file."""
        if not self.exists():
            return False
        try:
            self._refresh_catalog_quietly() if self.path.exists() else self.refresh_catalog(wait_s=2.0)
            return True
        except StoreError:
            return False

    def _export_tables(self, con) -> None:
        """Rows kept in DuckDB tables (the layout before the Parquet warehouse) move to Parquet, key by key."""
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()]
        for table in tables:
            if table in TABLE_KEYS:
                frame = con.execute(f"SELECT * FROM {table}").df()
                columns = list(TABLE_KEYS[table])
                if table == "asset_versions":
                    frame = frame.drop(columns=["updated_at"], errors="ignore")
                if columns:
                    for key, group in frame.groupby(columns) if len(frame) else []:
                        key = key if isinstance(key, tuple) else (key,)
                        self.replace(table, dict(zip(columns, key)), group.drop(columns=columns))
                elif len(frame):
                    self.append(table, frame)
            con.execute(f"DROP TABLE {table}")
