"""The DuckDB store: schema from ``sql/``, idempotent keyed writes, named queries, read-only reads."""

from __future__ import annotations

import hashlib
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

from .config import database_path

TABLES = (
    "models", "neurons", "prompt_sets", "documents", "neuron_exemplars",
    "head_attributions", "exemplar_decompositions", "head_neuron_scores", "head_ablations", "ablation_tests",
    "explanations", "explanation_scores", "explanation_tests", "llm_calls",
)


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


class Store:
    """One DuckDB file. Write connections apply the schema; every write replaces the rows of its key and
    records the asset version in the same transaction, so a failed write leaves the old rows intact."""

    #: DuckDB admits one process at a time; the pipeline's steps hold the file only for a short write, so a
    #: step that finds it held (a parallel step of the same run) waits this long before giving up.
    LOCK_WAIT_S = 600.0

    def __init__(self, path: str | Path | None = None, lock_wait_s: float | None = None):
        self.path = Path(path) if path else database_path()
        self.lock_wait_s = self.LOCK_WAIT_S if lock_wait_s is None else lock_wait_s

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        started, delay = time.monotonic(), 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as err:
                if "lock" not in str(err).lower():
                    raise
                if time.monotonic() - started >= self.lock_wait_s:
                    raise StoreError(
                        f"{self.path} is locked by another process: a run writing to it, or a client (duckdb CLI, notebook) "
                        f"holding it open. Wait for the run to finish or close the other connection, then retry. ({err})"
                    ) from err
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open(read_only)
        try:
            if not read_only:
                con.execute(sql_text("schema.sql"))
                con.execute(sql_text("views.sql"))
            yield con
        finally:
            con.close()

    def replace(self, table: str, keys: dict, frame: pd.DataFrame, version: AssetVersion | None = None) -> int:
        """Delete the rows of ``keys`` in ``table`` and insert ``frame`` (key columns added), in one transaction."""
        self.replace_many([(table, keys, frame)], version)
        return len(frame)

    def replace_many(self, writes: list[tuple[str, dict, pd.DataFrame]], version: AssetVersion | None = None) -> None:
        """Several keyed replacements (and a version) in one transaction."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for table, keys, frame in writes:
                    if table not in TABLES:
                        raise StoreError(f"Unknown table {table}.")
                    frame = frame.copy()
                    for column, value in keys.items():
                        frame[column] = value
                    con.execute(f"DELETE FROM {table} WHERE " + " AND ".join(f"{c} = ?" for c in keys), list(keys.values()))
                    if len(frame):
                        con.register("incoming", frame)
                        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                        con.unregister("incoming")
                if version is not None:
                    self._record(con, version)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    def append(self, table: str, frame: pd.DataFrame) -> None:
        """Insert rows (no replacement): for logs such as ``llm_calls``."""
        if table not in TABLES:
            raise StoreError(f"Unknown table {table}.")
        if not len(frame):
            return
        with self.connect() as con:
            con.register("incoming", frame)
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            con.unregister("incoming")

    @staticmethod
    def _record(con, version: AssetVersion) -> None:
        con.execute(
            "INSERT OR REPLACE INTO asset_versions (asset, scope, data_version, code_version, stats, updated_at) "
            "VALUES (?, ?, ?, ?, ?, current_timestamp)",
            [version.asset, version.scope, version.data_version, version.code_version, json.dumps(_json_safe(version.stats), default=float)],
        )

    def version(self, asset: str, scope: str) -> AssetVersion | None:
        if not self.path.exists():
            return None
        with self.connect() as con:
            row = con.execute(
                "SELECT data_version, code_version, stats FROM asset_versions WHERE asset = ? AND scope = ?", [asset, scope]
            ).fetchone()
        if row is None:
            return None
        return AssetVersion(asset, scope, row[0], row[1], json.loads(row[2]) if row[2] else {})

    def refresh_views(self) -> bool:
        """Apply the schema and views to an existing file (both idempotent), so a file written by an older
        version answers the current views. Skipped, returning False, while another process holds the file."""
        if not self.path.exists():
            return False
        try:
            with self.connect():
                return True
        except StoreError:
            return False

    def query(self, sql: str, params: list | dict | None = None, read_only: bool = True) -> pd.DataFrame:
        with self.connect(read_only=read_only) as con:
            return con.execute(sql, params or []).df()
