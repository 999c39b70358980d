"""Which file holds each slot's rows, and what that file held when it was written (docs/data.md, "What a
reader sees").

A slot is one (table, key) of a keyed table, or one file of an append-only table. Every result file is
written once, under a name of its own (``<slot>.<first 12 hex of its SHA-256>.parquet``), and never rewritten
in place. The manifest, ``_manifest.json`` in the warehouse folder, names the file each slot holds now, with
its size, row count and SHA-256 and the step and scope that wrote it: readers read through it, so they see
whole writes only, and a missing, truncated or altered file is told by its size and hash.

A run of one (model, corpus) partition records its writes in a pending manifest of its own,
``_pending/<partition hash>.json``; its steps and checks read the published files overlaid with those. When
the run succeeds its entries are published with one rename; a failed or stopped run's stay pending, so the next
run of the partition continues from them (its finished steps are skipped) while every other reader keeps
seeing the last completed run. Manifest updates are read-modify-write under an advisory file lock, so runs
of several partitions may publish at once.

This is the manifest of a local warehouse folder; an object store's (no rename, no lock) is a commit log with
the same guarantees, ``object_manifest.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lookups.pipeline.common import files

MANIFEST_FILE = "_manifest.json"
PENDING_FOLDER = "_pending"
LOCK_FILE = "_manifest.lock"
#: A file no manifest names any more is removed this long after it was written: a reader that read the
#: manifest a moment before may still be reading it (and a duckdb client's views file names it until refreshed).
UNREFERENCED_GRACE_S = 3600.0
FORMAT = 1
#: The partition of a reader that sees every pending write, e.g. to inspect the rows of a run whose checks failed
#: (``lookups query --pending``).
ALL_PENDING = "*"


@dataclass(frozen=True)
class Entry:
    """One slot's file: its path under the warehouse folder, what it held when written, and who wrote it
    (``step`` and ``scope`` empty for log files and for files adopted from a store written before manifests)."""

    file: str
    bytes: int
    rows: int
    sha256: str
    step: str = ""
    scope: str = ""

    @property
    def table(self) -> str:
        return self.file.split("/", 1)[0]


def slot_of(file_name: str) -> str:
    """A file's slot (its name up to the first dot): ``part-<key hash>`` for ``part-<key hash>.<content>.parquet``."""
    return file_name.split(".", 1)[0]


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def partition_file_name(partition: str) -> str:
    """Partition keys are model paths and names of any shape: the pending manifest is named by their hash."""
    return hashlib.sha256(partition.encode()).hexdigest()[:24] + ".json"


class Manifests:
    """The published manifest and the pending ones of a local warehouse folder."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.published_path = self.root / MANIFEST_FILE
        self.pending_folder = self.root / PENDING_FOLDER

    def pending_path(self, partition: str) -> Path:
        return self.pending_folder / partition_file_name(partition)

    @contextlib.contextmanager
    def locked(self):
        """The manifests' advisory lock (held for a read-modify-write, never while computing)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------ reading

    @staticmethod
    def _read(path: Path) -> dict[str, Entry] | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return {slot: Entry(**fields) for slot, fields in json.loads(text)["entries"].items()}

    def published(self) -> dict[str, Entry]:
        """The published entries; a store written before manifests existed is adopted first."""
        found = self._read(self.published_path)
        if found is None:
            with self.locked():
                found = self.published_locked()
        return found

    def published_locked(self) -> dict[str, Entry]:
        """``published()`` for a caller that holds the lock (``flock`` does not nest)."""
        found = self._read(self.published_path)
        if found is None:
            found = self._adopt()
            self._write(self.published_path, found, None)
        return found

    def pending(self, partition: str) -> dict[str, Entry]:
        return self._read(self.pending_path(partition)) or {}

    def entries(self, partition: str | None = None) -> dict[str, Entry]:
        """What a reader of ``partition``'s run sees: the published entries, overlaid with the run's pending ones."""
        published = self.published()
        if partition == ALL_PENDING:
            pending = {}
            for entries in self.pending_partitions().values():
                pending.update(entries)
            return {**published, **pending}
        return {**published, **self.pending(partition)} if partition else published

    def signature(self, partition: str | None = None) -> tuple:
        """Changes whenever what ``entries(partition)`` returns may have (every update renames a new file in)."""
        out = []
        if partition == ALL_PENDING:
            others = sorted(self.pending_folder.glob("*.json")) if self.pending_folder.is_dir() else []
        else:
            others = [self.pending_path(partition)] if partition else []
        for path in [self.published_path, *others]:
            try:
                found = path.stat()
                out.append((found.st_ino, found.st_mtime_ns, found.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def pending_partitions(self) -> dict[str, dict[str, Entry]]:
        """Each pending manifest's partition and entries (a run that did not complete, or one running now)."""
        out = {}
        for path in sorted(self.pending_folder.glob("*.json")) if self.pending_folder.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            out[data.get("partition") or path.stem] = {slot: Entry(**fields) for slot, fields in data["entries"].items()}
        return out

    # ------------------------------------------------------------ writing

    def _write(self, path: Path, entries: dict[str, Entry], partition: str | None) -> None:
        document = {"format": FORMAT, "partition": partition, "entries": {slot: asdict(entry) for slot, entry in sorted(entries.items())}}
        files.write_atomically(path, json.dumps(document, indent=1))

    def write_published(self, entries: dict[str, Entry]) -> None:
        """Replace the published entries (call under the lock)."""
        self._write(self.published_path, entries, None)

    def record(self, entries: dict[str, Entry], partition: str | None) -> None:
        """Name these files as their slots' current ones: in ``partition``'s pending manifest, or published."""
        with self.locked():
            if partition:
                path = self.pending_path(partition)
                self._write(path, {**(self._read(path) or {}), **entries}, partition)
            else:
                self._write(self.published_path, {**self.published_locked(), **entries}, None)

    def publish(self, partition: str) -> int:
        """Publish ``partition``'s pending entries in one rename; returns how many. Files no manifest names any
        more, and older than the grace period, are removed."""
        with self.locked():
            pending = self.pending(partition)
            if pending:
                self._write(self.published_path, {**self.published_locked(), **pending}, None)
            self.pending_path(partition).unlink(missing_ok=True)
            self.remove_unreferenced()
        return len(pending)

    def check(self, entry: Entry, hashed: dict) -> str | None:
        """Why ``entry``'s file does not hold what was written, or None (``check_file``)."""
        return check_file(self.root, entry, hashed)

    def referenced(self) -> set[str]:
        """Every file a manifest names (call under the lock)."""
        named = {entry.file for entry in self.published_locked().values()}
        for entries in self.pending_partitions().values():
            named |= {entry.file for entry in entries.values()}
        return named

    def remove_unreferenced(self, grace_s: float = UNREFERENCED_GRACE_S) -> list[Path]:
        """Remove the result files no manifest names, once older than ``grace_s`` (call under the lock)."""
        named, now, removed = self.referenced(), time.time(), []
        for path in self.root.glob("*/part-*.parquet"):
            relative = f"{path.parent.name}/{path.name}"
            try:
                if relative not in named and now - path.stat().st_mtime > grace_s:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
        return removed

    def _adopt(self) -> dict[str, Entry]:
        """The entries of a store written before manifests (or whose manifest was lost): the newest file of each
        slot, taken as it is now."""
        import pyarrow.parquet as pq

        newest: dict[str, Path] = {}
        for path in self.root.glob("*/part-*.parquet"):
            slot = f"{path.parent.name}/{slot_of(path.name)}"
            if slot not in newest or path.stat().st_mtime_ns > newest[slot].stat().st_mtime_ns:
                newest[slot] = path
        entries = {}
        for slot, path in newest.items():
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception:  # unreadable: adopted with no rows, so that reading it says it is damaged
                rows = -1
            entries[slot] = Entry(f"{path.parent.name}/{path.name}", path.stat().st_size, rows, sha256_of(path))
        return entries


def check_file(root: Path, entry: Entry, hashed: dict) -> str | None:
    """Why ``entry``'s file does not hold what was written (missing, another size, another hash), or None.
    ``hashed``: a cache of verified files by (path, size, mtime), since written files are never rewritten."""
    path = root / entry.file
    try:
        found = path.stat()
    except FileNotFoundError:
        return f"{entry.file} is missing"
    if found.st_size != entry.bytes:
        return f"{entry.file} has {found.st_size} bytes, {entry.bytes} when written (truncated or replaced)"
    key = (str(path), found.st_size, found.st_mtime_ns)
    if key not in hashed:
        hashed[key] = sha256_of(path) == entry.sha256
    if not hashed[key]:
        return f"{entry.file} does not hold what was written (its SHA-256 differs: altered on disk)"
    if entry.rows < 0:
        return f"{entry.file} could not be read when adopted"
    return None


def staged_entry(root: Path, staged: Path, table: str, slot: str, rows: int, step: str, scope: str) -> tuple[Path, Entry]:
    """The final path and the entry of a staged file: named by its slot and content, so it never replaces another."""
    sha = sha256_of(staged)
    name = f"{slot}.{sha[:12]}.parquet"
    return root / table / name, Entry(f"{table}/{name}", os.path.getsize(staged), rows, sha, step, scope)
