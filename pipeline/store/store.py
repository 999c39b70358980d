"""The store: Parquet files per (table, key), named by a manifest, with DuckDB views over them; schema, views
and reads from ``sql/``.

The store owns every read: steps and assets ask for a named read (``sql/reads/<name>.sql``) or for the rows
of one key of a table, and get a DataFrame. See docs/architecture.md and, for what a reader is guaranteed,
docs/data.md ("What a reader sees").
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from lookups.pipeline.common import files
from lookups.pipeline.common.hashing import stable_hash
from lookups.pipeline.config import database_path
from lookups.pipeline.store.asset_versions import AssetVersion, version_from_row, version_write
from lookups.pipeline.store.errors import StoreError
from lookups.pipeline.store.location import Location
from lookups.pipeline.store.manifest import Entry, Manifests, staged_entry
from lookups.pipeline.store.object_manifest import ObjectManifests
from lookups.pipeline.store.sql_files import SCHEMA_FILE, TABLE_KEYS, sql_text, sql_with_parameters
from lookups.pipeline.store.warehouse import connect, is_local, lock_down, sql_string, warehouse_root


@dataclass(frozen=True)
class Verification:
    """What ``Store.verify`` found: files and bytes checked, how long it took, each damaged file's entry and
    problem, and the pending manifests (partitions whose run did not complete, or runs now) by file count."""

    files: int
    bytes: int
    seconds: float
    damaged: list[tuple[Entry, str]]
    pending: dict[str, int]

    def recomputed(self) -> list[str]:
        """What the next run computes again: each step (and scope) with a damaged file."""
        return sorted({f"{entry.step} ({entry.scope})" for entry, _ in self.damaged if entry.step})

    def unowned(self) -> list[Entry]:
        """Damaged files no step rewrites (logs; files from before manifests): only ``--repair`` clears them."""
        return [entry for entry, _ in self.damaged if not entry.step]


#: Files found to hold what was written (or not), by (path, size, mtime), for every store of this process:
#: a written file is never rewritten, so each is hashed once per process.
VERIFIED: dict[tuple, bool] = {}

#: How a view of a table with a damaged file reads: it fails, naming the file, and only when that table is read.
DAMAGED = "is damaged"


class Store:
    """Results as Parquet files, one per (table, key), named by a manifest, with DuckDB views over them.

    A step's write conforms each frame to its table's schema (types, NOT NULL, CHECK, primary key, defaults,
    all from ``sql/schema.sql``) in an in-memory DuckDB and writes it, with Parquet page checksums, to a new
    file named by its content; the manifest (``manifest.py``) then names the new files, the step's version
    record among them, in one rename. So writers in parallel processes never share a file, a failed write
    changes nothing, and a reader sees whole writes only. ``partition``: a run's store, whose writes stay
    pending until the run succeeds (``publish``) and whose reads see them; without it a write is published at
    once. Queries run in an in-memory DuckDB whose tables are views over the files the manifest names, each
    checked against its recorded size and SHA-256 (plus ``sql/views.sql``); ``<name>.duckdb``, the views
    file, holds the same views for the duckdb CLI and notebooks, refreshed when they change.

    An object-store warehouse (``LOOKUPS_WAREHOUSE=s3://...``, ``location.py``) has the same guarantees through a
    commit log instead of a renamed manifest (``object_manifest.py``): each file is staged locally, uploaded
    whole under its content name, then named by a new commit; reads go through Arrow datasets on pyarrow's S3
    file system. The files the steps hand each other (handles, the parsed corpus, the atlas) live there too,
    under ``_files/`` (``put_file``/``get_file``). See docs/object_store.md.
    """

    #: An object store's folder of the files the steps hand each other (handles, corpora, atlas pages, figures).
    FILES = "_files"

    #: Only the views file has a lock (taken for a moment when the schema changes); a reader that finds
    #: it held by a client that writes to it waits this long.
    LOCK_WAIT_S = 600.0

    def __init__(self, path: str | Path | None = None, lock_wait_s: float | None = None, partition: str | None = None):
        self.path = Path(path) if path else database_path()
        self.root = warehouse_root(self.path)
        self.lock_wait_s = self.LOCK_WAIT_S if lock_wait_s is None else lock_wait_s
        self.partition = partition or None
        self.location = Location(self.root)
        self.manifests = Manifests(self.root) if is_local(self.root) else ObjectManifests(self.location)
        self._scratch: tempfile.TemporaryDirectory | None = None  # an object store's staged files and schema files
        self._query_lock = threading.Lock()  # an object store's reader holds Arrow datasets: one query at a time
        self._typed: duckdb.DuckDBPyConnection | None = None
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reader_signature: tuple | None = None
        self._hashed = VERIFIED
        self._lock = threading.Lock()

    # ------------------------------------------------------------ locations

    @property
    def folder(self) -> Path:
        """The views file's folder: the corpus cache, the atlas pages, the figures and the assets' handles live
        under it, so a store pointed elsewhere carries everything with it."""
        return self.path.parent

    # ------------------------------------------------------------ the files the steps hand each other

    def file_url(self, name: str) -> str:
        """Where the file ``name`` (e.g. ``corpora/<key>.parquet``, ``handles/<asset>/<key>.pkl``) lives: under the
        store's folder, or, for an object-store warehouse, ``<warehouse>/_files/<name>``, so that a step on
        another machine finds it. ``read_url`` reads it back."""
        return str(self.folder / name) if self.location.local else self.location.url(f"{self.FILES}/{name}")

    def put_file(self, name: str, data: bytes | str, local_copy: bool = False) -> None:
        """Write ``name`` whole (readers see the old file or the new one). ``local_copy``: with an object store, a
        copy under the store's folder too (a page a person opens)."""
        if self.location.local or local_copy:
            files.write_atomically(self.folder / name, data)
        if not self.location.local:
            self.location.write_bytes(f"{self.FILES}/{name}", data)

    def get_file(self, name: str) -> bytes | None:
        """The file's bytes, or None when there is none."""
        try:
            if self.location.local:
                return (self.folder / name).read_bytes()
            return self.location.read_bytes(f"{self.FILES}/{name}")
        except FileNotFoundError:
            return None

    def has_file(self, name: str) -> bool:
        if self.location.local:
            return (self.folder / name).exists()
        return self.location.exists(f"{self.FILES}/{name}")

    def remove_file(self, name: str) -> None:
        """Remove the file (and an object store's local copy)."""
        (self.folder / name).unlink(missing_ok=True)
        if not self.location.local:
            self.location.delete(f"{self.FILES}/{name}")

    def list_files(self, folder: str) -> list[str]:
        """The names of the files in ``folder`` (e.g. ``atlas``), as ``<folder>/<file>``."""
        if self.location.local:
            found = self.folder / folder
            return [f"{folder}/{p.name}" for p in sorted(found.iterdir()) if p.is_file()] if found.is_dir() else []
        prefix = f"{self.FILES}/{folder}/"
        return [key[len(self.FILES) + 1:] for key, _ in self.location.list(prefix.rstrip("/")) if "/" not in key[len(prefix):]]

    def read_url(self, url: str) -> bytes:
        """The bytes of a ``file_url`` (a local path, or an object in this or another S3 prefix)."""
        if is_local(url):
            return Path(url).read_bytes()
        if url.startswith(self.root + "/"):
            return self.location.read_bytes(url[len(self.root) + 1:])
        bucket, _, key = url.split("://", 1)[1].partition("/")
        return Location(f"s3://{bucket}").read_bytes(key)

    def table_dir(self, table: str) -> str:
        return f"{self.root}/{table}"

    def slot(self, table: str, keys: dict) -> str:
        """The name every file of one (table, key) starts with (the manifest's slot for it)."""
        if table not in TABLE_KEYS:
            raise StoreError(f"Unknown table {table}.")
        if tuple(keys) != TABLE_KEYS[table]:
            raise StoreError(f"{table} is written by key {TABLE_KEYS[table]}, not {tuple(keys)}.")
        return f"part-{stable_hash(table, [str(v) for v in keys.values()], length=24)}"

    def entries(self) -> dict[str, Entry]:
        """The manifest's entries this store reads: published, overlaid with its run's pending ones."""
        return self.manifests.entries(self.partition)

    def exists(self) -> bool:
        """Whether anything has been written."""
        if not self.location.local:
            return bool(self.entries())
        if self.path.exists():
            return True
        published = self.manifests.published_path
        if published.exists():
            return bool(self.entries())
        return any(Path(self.root).glob("*/part-*.parquet"))

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

    def _scratch_dir(self) -> Path:
        """An object store's local folder of staged files and schema files, removed with the store."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="lookups-staging-")
        return Path(self._scratch.name)

    def _schema_file(self, table: str) -> str:
        """The table's schema file as a local path (an object store's: its copy in the scratch folder)."""
        if self.location.local:
            return f"{self.table_dir(table)}/{SCHEMA_FILE}"
        return str(self._scratch_dir() / table / SCHEMA_FILE)

    def _remove_stale_staging(self) -> None:
        """Before this store's first write: the staged files a killed writer left (never a live writer's)."""
        if self.location.local:
            for table in TABLE_KEYS:
                files.remove_stale_staging(Path(self.table_dir(table)), recursive=False)

    def _write_schema_file(self, con, table: str) -> None:
        """An empty file with the table's columns, so a table nothing has been written to reads as empty."""
        target = f"{self.table_dir(table)}/{SCHEMA_FILE}"
        columns = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]
        if not self.location.local:
            self._put_schema_file(con, table)
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

    def _put_schema_file(self, con, table: str) -> None:
        """An object store's schema file: written to the scratch folder (the writes' types) and put in the store
        unless the store's holds the same schema already."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        local = Path(self._schema_file(table))
        local.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY (SELECT * FROM {table} LIMIT 0) TO {sql_string(str(local))} (FORMAT parquet)")
        relative = f"{table}/{SCHEMA_FILE}"
        try:
            if pq.read_schema(pa.BufferReader(self.location.read_bytes(relative))).equals(pq.read_schema(local)):
                return
        except (FileNotFoundError, pa.ArrowInvalid):
            pass
        self.location.write_bytes(relative, local.read_bytes())

    def _conform(self, table: str, keys: dict, frame: pd.DataFrame, target: str) -> str:
        """Write ``frame`` (key columns added) through the table's constraints to a temporary file next to
        ``target`` (an object store's: in the scratch folder); returns that file. The files carry Parquet page
        checksums (DuckDB does not write them: pyarrow does, in the schema file's types)."""
        import pyarrow.parquet as pq

        con = self._typing()
        frame = frame.copy()
        for column, value in keys.items():
            frame[column] = value
        if self.location.local:
            staged = str(files.staging_path(Path(target)))
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        else:
            staged = str(files.staging_path(self._scratch_dir() / table / target.rsplit("/", 1)[-1]))
        with self._lock:
            con.execute("BEGIN TRANSACTION")
            try:
                if len(frame):
                    con.register("incoming", frame)
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                    con.unregister("incoming")
                rows = con.sql(f"SELECT * FROM {table}").to_arrow_table()
                schema = pq.read_schema(self._schema_file(table))
                pq.write_table(rows.cast(schema), staged, write_page_checksum=True)
            finally:
                con.execute("ROLLBACK")  # the typing tables stay empty
        return staged

    def replace(self, table: str, keys: dict, frame: pd.DataFrame, version: AssetVersion | None = None) -> int:
        """Replace the rows of ``keys`` in ``table`` with ``frame`` (key columns added)."""
        self.replace_many([(table, keys, frame)], version)
        return len(frame)

    def replace_many(self, writes: list[tuple[str, dict, pd.DataFrame]], version: AssetVersion | None = None) -> None:
        """Several keyed replacements and the version, recorded together: every frame is conformed and staged
        first, so a frame that breaks a constraint replaces nothing."""
        if version is not None:
            writes = [*writes, version_write(version)]
        step, scope = (version.asset, version.scope) if version is not None else ("", "")
        self._write_files([(table, self.slot(table, keys), keys, frame) for table, keys, frame in writes], step, scope)

    def append(self, table: str, frame: pd.DataFrame) -> None:
        """Insert rows without replacing any (logs such as ``llm_calls``): a new file per call."""
        if table not in TABLE_KEYS or TABLE_KEYS[table]:
            raise StoreError(f"{table} is not an append-only table.")
        if not len(frame):
            return
        self._write_files([(table, f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex}", {}, frame)], "", "")

    def _write_files(self, writes: list[tuple[str, str, dict, pd.DataFrame]], step: str, scope: str) -> None:
        """Stage every (table, slot, keys, frame), then move each to its final name and record them all in the
        manifest at once (the run's pending one for a run's store); nothing is recorded if any frame fails."""
        staged = []
        try:
            for table, slot, keys, frame in writes:
                target = f"{self.table_dir(table)}/{slot}.parquet"
                staged.append((table, slot, len(frame), self._conform(table, keys, frame, target), target))
        except Exception:
            for _, _, _, tmp, target in staged:
                if tmp != target:
                    Path(tmp).unlink(missing_ok=True)
            raise
        entries = {}
        try:
            for table, slot, rows, tmp, _ in staged:
                if self.location.local:
                    final, entry = staged_entry(Path(self.root), Path(tmp), table, slot, rows, step, scope)
                    os.replace(tmp, final)
                else:  # uploaded whole under its content name before any commit names it
                    _, entry = staged_entry(self._scratch_dir(), Path(tmp), table, slot, rows, step, scope)
                    self.location.upload(entry.file, Path(tmp))
                entries[f"{table}/{slot}"] = entry
        finally:
            if not self.location.local:
                for _, _, _, tmp, _ in staged:
                    Path(tmp).unlink(missing_ok=True)
        self.manifests.record(entries, self.partition)
        if not self.partition:
            self._refresh_views_file_quietly()

    def publish(self) -> int:
        """Publish this run's pending writes (``partition``) in one rename, so that every reader sees them; the
        number of files published. Called when the run succeeded (assets/runner.py, the run-status sensor)."""
        if not self.partition:
            return 0
        count = self.manifests.publish(self.partition)
        self._refresh_views_file_quietly()
        return count

    # ------------------------------------------------------------ verifying

    def problems(self, entries: dict[str, Entry] | None = None, hashed: dict | None = None) -> dict[str, str]:
        """Each damaged file's slot and what is wrong with it (missing, truncated, altered). ``hashed``: the
        verdicts to reuse (default: this process's)."""
        found = {}
        for slot, entry in (self.entries() if entries is None else entries).items():
            problem = self.manifests.check(entry, self._hashed if hashed is None else hashed)
            if problem:
                found[slot] = problem
        return found

    def verify(self) -> Verification:
        """Check every file the published and the pending manifests name (``lookups verify``)."""
        started = time.perf_counter()
        published = self.manifests.published()
        pending = self.manifests.pending_partitions()
        fresh: dict = {}  # every file hashed now, not trusted from an earlier read
        damaged = [(published[slot], problem) for slot, problem in self.problems(published, fresh).items()]
        for entries in pending.values():
            damaged += [(entries[slot], problem) for slot, problem in self.problems(entries, fresh).items()]
        everything = [*published.values(), *(e for entries in pending.values() for e in entries.values())]
        return Verification(
            files=len(everything), bytes=sum(e.bytes for e in everything), seconds=time.perf_counter() - started,
            damaged=damaged, pending={partition: len(entries) for partition, entries in pending.items()},
        )

    def drop_damaged(self) -> list[Entry]:
        """Take the damaged files out of the published manifest (``lookups verify --repair``), with the version
        record of each step that wrote one, so that the next run computes it again; a damaged file no step wrote
        (a log, or a file from before manifests) takes every version record with it: everything is computed again."""
        if not self.location.local:  # a commit that drops each slot only while it names the damaged file
            published = self.manifests.published()
            problems = self.problems(published)
            dropped = [published[slot] for slot in problems]
            owners = {(e.step, e.scope) for e in dropped if e.step}
            stepless = any(not e.step and TABLE_KEYS[e.table] for e in dropped if e.table != "asset_versions")
            self.manifests.drop({
                slot: e for slot, e in published.items()
                if slot in problems or (e.table == "asset_versions" and (stepless or (e.step, e.scope) in owners))
            })
            self._refresh_views_file_quietly()
            return dropped
        with self.manifests.locked():
            published = self.manifests.published_locked()
            problems = self.problems(published)
            dropped = [published[slot] for slot in problems]
            owners = {(e.step, e.scope) for e in dropped if e.step}
            stepless = any(not e.step and TABLE_KEYS[e.table] for e in dropped if e.table != "asset_versions")  # a log's rows need nothing recomputed
            kept = {
                slot: e for slot, e in published.items()
                if slot not in problems and not (e.table == "asset_versions" and (stepless or (e.step, e.scope) in owners))
            }
            self.manifests.write_published(kept)
        self._refresh_views_file_quietly()
        return dropped

    def damaged(self, step: str, scope: str) -> list[str]:
        """What is wrong with the files ``step`` wrote for ``scope`` (empty: all hold what was written)."""
        mine = {slot: e for slot, e in self.entries().items() if e.step == step and e.scope == scope}
        return list(self.problems(mine).values())

    # ------------------------------------------------------------ reading

    def views_sql(self, entries: dict[str, Entry] | None = None) -> str:
        """The views as SQL: one per table over the files the published manifest names (``entries``: these
        instead), then ``sql/views.sql``. Run it in any DuckDB (a MotherDuck database, a notebook) to query
        the same results. A table with a damaged file reads as an error that names the file."""
        entries = self.manifests.published() if entries is None else entries
        by_table, damaged = self._files_by_table(entries)
        statements = []
        for table in TABLE_KEYS:
            schema = sql_string(f"{self.table_dir(table)}/{SCHEMA_FILE}")
            if table in damaged:
                statements.append(failing_view(table, f"read_parquet({schema})", damaged[table]))
                continue
            listed = ", ".join([schema, *(sql_string(f"{self.root}/{f}") for f in by_table.get(table, []))])
            statements.append(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
        return ";\n".join(statements) + ";\n" + sql_text("views.sql")

    def _files_by_table(self, entries: dict[str, Entry]) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Each table's files (in slot order) and, for a table with a damaged file, the one-line reason. A log's
        (an append-only table's, e.g. the LLM calls) damaged file is left out instead: its rows are lost either
        way, and a cache or a record of calls reads well without them (``lookups verify`` lists it)."""
        problems = self.problems(entries)
        by_table: dict[str, list[str]] = {}
        damaged: dict[str, str] = {}
        for slot in sorted(entries):
            entry = entries[slot]
            if slot in problems and not TABLE_KEYS[entry.table]:
                continue
            by_table.setdefault(entry.table, []).append(entry.file)
            if slot in problems and entry.table not in damaged:
                more = sum(1 for s in problems if s.startswith(entry.table + "/")) - 1
                fix = "`lookups run` recomputes it" if entry.step else "no step rewrites it: `lookups verify --repair` drops it"
                damaged[entry.table] = (
                    f"{entry.table} {DAMAGED}: {problems[slot]}{f' (and {more} more)' if more else ''}. "
                    f"{fix}; `lookups verify` lists every damaged file."
                )
        return by_table, damaged

    def _reading(self, require_results: bool) -> duckdb.DuckDBPyConnection:
        if require_results and not self.exists():
            raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
        with self._lock:
            signature = self.manifests.signature(self.partition)
            if self._reader is None or signature != self._reader_signature:
                first = self._reader is None
                self._typing()  # every table has its schema file, so an empty table reads as empty
                con = connect()
                if self.location.local:
                    con.execute(self.views_sql(self.entries()))
                else:  # DuckDB reads no s3:// URL here (no httpfs offline): Arrow datasets on pyarrow's S3
                    self._register_tables(con, self.entries())
                self._reader, self._reader_signature = con, signature
                if first and not self.partition:
                    self._refresh_views_file_quietly()  # e.g. a copied data folder's views file names the original's files
        return self._reader

    def query(self, sql: str, params: list | dict | None = None, require_results: bool = True) -> pd.DataFrame:
        """Run SQL over every table and view. ``require_results``: with nothing written yet, say so (a
        person's query) rather than read empty tables (a step's read). No file lock is taken: parallel
        writers and readers are fine."""
        reader = self._reading(require_results)
        if not self.location.local:  # registered datasets are the connection's own: no cursor sees them
            with self._query_lock, damaged_as_store_error():
                return reader.execute(sql, params or []).df()
        cursor = reader.cursor()
        try:
            with damaged_as_store_error():
                return cursor.execute(sql, params or []).df()
        finally:
            cursor.close()

    def query_read_only(self, sql: str, params: list | dict | None = None, allow_files: list[str] = ()) -> pd.DataFrame:
        """Run a person's SQL (``lookups query``) on a connection that cannot write. The tables are Arrow datasets
        over the Parquet files (local, or on the object store through pyarrow's file system), so DuckDB itself
        opens no file at all: nothing it runs can write one, and ``allow_files`` (resolved paths, folders ending
        in '/') are the only files it may read. Built per query, so it sees every file written so far."""
        if not self.exists():
            raise StoreError(f"No results yet at {self.path}: run `make demo` (or `lookups run`) first.")
        with tempfile.TemporaryDirectory(prefix="lookups-query-") as scratch, connect() as con:  # setup SQL (credentials) runs before the lock
            self._typing()  # every table has its schema file, so an empty table reads as empty
            self._refresh_views_file_quietly()  # e.g. a copied data folder's views file names the original's files
            self._register_tables(con, self.entries())
            lock_down(con, list(allow_files), scratch)
            with damaged_as_store_error():
                return con.execute(sql, params or []).df()

    def _register_tables(self, con: duckdb.DuckDBPyConnection, entries: dict[str, Entry]) -> None:
        """Each table as an Arrow dataset over the files ``entries`` name (a table with a damaged file: a view that
        fails naming it, and only when that table is read), then ``sql/views.sql``."""
        by_table, damaged = self._files_by_table(entries)
        for table in TABLE_KEYS:
            if table in damaged:  # read as an error naming the file, and only when this table is read
                con.register(f"_{table}_columns", self._dataset(table, []))
                con.execute(failing_view(table, f"_{table}_columns", damaged[table]))
            else:
                con.register(table, self._dataset(table, by_table.get(table, [])))
        con.execute(sql_text("views.sql"))

    def _dataset(self, table: str, names: list[str]):
        """These files of a table (paths under the warehouse folder) as an Arrow dataset with its schema file's
        columns (a file written before a column was added reads it as null, as the view's ``union_by_name``
        does), their Parquet page checksums verified as they are read."""
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq

        checked = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True))
        schema = pq.read_schema(self._schema_file(table))
        if not self.location.local:
            return ds.dataset([self.location.path(name) for name in names], schema=schema, format=checked, filesystem=self.location.fs)
        return ds.dataset([f"{self.root}/{name}" for name in names], schema=schema, format=checked)

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
        """The version record a step wrote for ``scope``, or None (also when its file is damaged: the step
        then computes again)."""
        slot = self.slot("asset_versions", {"asset": asset, "scope": scope})
        entry = self.entries().get(f"asset_versions/{slot}")
        if entry is None or self.manifests.check(entry, self._hashed):
            return None
        columns = "data_version, code_version, stats, complete"
        with connect() as con:
            try:
                if self.location.local:
                    row = con.execute(f"SELECT {columns} FROM read_parquet({sql_string(f'{self.root}/{entry.file}')})").fetchone()
                else:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    con.register("version_file", pq.read_table(pa.BufferReader(self.location.read_bytes(entry.file))))
                    row = con.execute(f"SELECT {columns} FROM version_file").fetchone()
            except (duckdb.IOException, FileNotFoundError):
                return None
        if row is None:
            return None
        return version_from_row(asset, scope, row)

    # ------------------------------------------------------------ the views file

    def _views_stamp(self) -> Path:
        return self.path.with_name(self.path.name + ".views")

    def _views_version(self) -> str:
        """What the views file should hold: the views over the published files (in this folder)."""
        return stable_hash(self.root, self.views_sql(), length=16)

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
        if not self.location.local and not httpfs_available():
            raise StoreError(
                f"The views file {self.path} names s3:// objects, which DuckDB reads with its httpfs extension: not installed here. "
                "`lookups views-sql` prints the views for a DuckDB that has it (or MotherDuck); `lookups query` needs none."
            )
        con = self._open_views_file(self.lock_wait_s if wait_s is None else wait_s)
        try:
            if not self.location.local:
                con.execute("LOAD httpfs")
            con.execute(self.views_sql())
        finally:
            con.close()
        files.write_atomically(self._views_stamp(), self._views_version())

    def _refresh_views_file_quietly(self) -> None:
        """After a write: refresh the views file if it is missing or stale, unless a client holds it."""
        if not self.location.local and not httpfs_available():
            return  # the views file of an object store needs httpfs (refresh_views_file says so)
        stamp = self._views_stamp()
        if stamp.exists() and stamp.read_text() == self._views_version() and self.path.exists():
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


@functools.cache
def httpfs_available() -> bool:
    """Whether DuckDB's httpfs extension loads here without installing anything (no download is ever tried)."""
    con = duckdb.connect()
    try:
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("LOAD httpfs")
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


def failing_view(table: str, columns_from: str, reason: str) -> str:
    """A view of ``table`` with the columns of ``columns_from`` that fails with ``reason`` when read (and only then)."""
    return f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {columns_from} WHERE (SELECT error({sql_string(reason)})) IS NULL"


@contextlib.contextmanager
def damaged_as_store_error():
    """A read of a table with a damaged file ends in the one line its view raised, not DuckDB's error."""
    try:
        yield
    except duckdb.Error as err:
        if DAMAGED not in str(err):
            raise
        raise StoreError(str(err).split("Error: ", 1)[-1].strip()) from None
