"""The manifest of an object-store warehouse (``LOOKUPS_WAREHOUSE=s3://...``): an append-only commit log, with the
guarantees of the local manifest (``manifest.py``) and neither a rename nor a lock (docs/object_store.md).

Every update writes one new small JSON object and never changes one:

- ``_manifest/log/<id>.json``: a published commit, the entries it ``set`` (slot -> Entry), the slots it
  ``drop``s (each only while it still names the damaged file), the pending commits it ``consumed``;
- ``_manifest/pending/<partition hash>/<id>.json``: one of a run's pending writes.

``<id>`` is ``<nanoseconds since the epoch, 20 digits>-<random hex>``: sortable by time, never the same for two
writers. A reader lists the log and folds its commits in id order (the last writer of a slot wins, as locally);
a run's reader overlays its partition's pending commits (those no published commit consumed). Publishing writes
one published commit with the pending entries and the names of the pending commits it took, then deletes
those; killed in between, the pending objects are already consumed, so nothing is published twice and the next
publish deletes them. Two writers never write the same object, so they never conflict. A put is atomic: a
reader sees a commit whole or not at all, and the result files a commit names were uploaded before it.

Commits are immutable, so each is read once per process. The log is not compacted (yet): a reader lists it
and reads new commits only; a published run adds one commit.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import uuid
from dataclasses import asdict

from lookups.pipeline.store.location import Location
from lookups.pipeline.store.manifest import ALL_PENDING, FORMAT, UNREFERENCED_GRACE_S, Entry

LOG = "_manifest/log"
PENDING = "_manifest/pending"

_last_id = 0
_id_lock = threading.Lock()


def commit_id() -> str:
    """A time-sortable id, increasing within this process."""
    global _last_id
    with _id_lock:
        _last_id = max(time.time_ns(), _last_id + 1)
        return f"{_last_id:020d}-{uuid.uuid4().hex}"


def partition_folder(partition: str) -> str:
    return hashlib.sha256(partition.encode()).hexdigest()[:24]


def _entries(fields: dict) -> dict[str, Entry]:
    return {slot: Entry(**value) for slot, value in fields.items()}


class ObjectManifests:
    """The published and pending entries of an object-store warehouse, as a commit log (module docstring)."""

    def __init__(self, location: Location):
        self.location = location
        self._documents: dict[str, dict | None] = {}  # commits are immutable: each read once

    # ------------------------------------------------------------ reading

    def _document(self, key: str) -> dict | None:
        if key not in self._documents:
            try:
                self._documents[key] = json.loads(self.location.read_bytes(key))
            except FileNotFoundError:  # a pending commit consumed and deleted since it was listed
                return None
        return self._documents[key]

    def _keys(self, folder: str) -> list[str]:
        return [key for key, _ in self.location.list(folder) if key.endswith(".json")]

    @staticmethod
    def _order(key: str) -> str:
        return key.rsplit("/", 1)[-1]

    def _fold_log(self, keys: list[str]) -> tuple[dict[str, Entry], set[str]]:
        entries: dict[str, Entry] = {}
        consumed: set[str] = set()
        for key in sorted(keys, key=self._order):
            document = self._document(key)
            if document is None:
                continue
            for slot, file in (document.get("drop") or {}).items():
                if slot in entries and entries[slot].file == file:
                    del entries[slot]
            entries.update(_entries(document.get("set") or {}))
            consumed.update(document.get("consumed") or ())
        return entries, consumed

    def _fold_pending(self, keys: list[str], consumed: set[str]) -> dict[str, dict[str, Entry]]:
        """Each partition's pending entries (by partition name), from these commits less the consumed ones."""
        out: dict[str, dict[str, Entry]] = {}
        for key in sorted(keys, key=self._order):
            if key in consumed:
                continue
            document = self._document(key)
            if document is None:
                continue
            partition = document.get("partition") or key.split("/")[-2]
            out.setdefault(partition, {}).update(_entries(document.get("set") or {}))
        return out

    def _pending_keys(self, partition: str | None) -> list[str]:
        if not partition:
            return []
        if partition == ALL_PENDING:
            return self._keys(PENDING)
        return self._keys(f"{PENDING}/{partition_folder(partition)}")

    def _state(self, partition: str | None) -> tuple[tuple, dict[str, Entry], dict[str, dict[str, Entry]]]:
        """(signature, published entries, pending entries by partition). The pending commits are listed before
        the log: one consumed and deleted since is then in the log as listed."""
        pending_keys = self._pending_keys(partition)
        log_keys = self._keys(LOG)
        published, consumed = self._fold_log(log_keys)
        pending = self._fold_pending(pending_keys, consumed)
        return (tuple(log_keys), tuple(k for k in pending_keys if k not in consumed)), published, pending

    def published(self) -> dict[str, Entry]:
        return self._fold_log(self._keys(LOG))[0]

    def pending(self, partition: str) -> dict[str, Entry]:
        pending = self._state(partition)[2]
        return next(iter(pending.values()), {}) if pending else {}

    def entries(self, partition: str | None = None) -> dict[str, Entry]:
        """What a reader of ``partition``'s run sees: the published entries, overlaid with the run's pending ones."""
        _, published, pending = self._state(partition)
        out = dict(published)
        for entries in pending.values():
            out.update(entries)
        return out

    def signature(self, partition: str | None = None) -> tuple:
        """Changes whenever what ``entries(partition)`` returns may have: the commits' names."""
        pending_keys = self._pending_keys(partition)
        return (tuple(self._keys(LOG)), tuple(pending_keys))

    def pending_partitions(self) -> dict[str, dict[str, Entry]]:
        return self._state(ALL_PENDING)[2]

    # ------------------------------------------------------------ writing

    def _commit(self, folder: str, document: dict) -> str:
        key = f"{folder}/{commit_id()}.json"
        self.location.write_bytes(key, json.dumps({"format": FORMAT, **document}, indent=1, sort_keys=True))
        return key

    def record(self, entries: dict[str, Entry], partition: str | None) -> None:
        """Name these files as their slots' current ones: a pending commit of ``partition``, or a published one."""
        document = {"partition": partition, "set": {slot: asdict(entry) for slot, entry in sorted(entries.items())}}
        self._commit(f"{PENDING}/{partition_folder(partition)}" if partition else LOG, document)

    def publish(self, partition: str) -> int:
        """Publish ``partition``'s pending commits (those listed now) in one commit, then delete them; returns how
        many entries. Result files no commit names any more, older than the grace period, are removed."""
        keys = self._keys(f"{PENDING}/{partition_folder(partition)}")
        _, consumed = self._fold_log(self._keys(LOG))
        taken = [key for key in keys if key not in consumed]
        entries: dict[str, Entry] = {}
        for found in self._fold_pending(taken, set()).values():
            entries.update(found)
        if taken:
            self._commit(LOG, {"partition": partition, "set": {slot: asdict(e) for slot, e in sorted(entries.items())}, "consumed": sorted(taken)})
        for key in keys:
            self.location.delete(key)
            self._documents.pop(key, None)
        self.remove_unreferenced()
        return len(entries)

    def drop(self, damaged: dict[str, Entry]) -> None:
        """Take these slots out of the published entries, each only while it still names this file (a newer
        write of the slot stays)."""
        if damaged:
            self._commit(LOG, {"partition": None, "drop": {slot: entry.file for slot, entry in sorted(damaged.items())}})

    def referenced(self) -> set[str]:
        """Every file a commit names now (published or pending)."""
        named = {entry.file for entry in self.published().values()}
        for entries in self.pending_partitions().values():
            named |= {entry.file for entry in entries.values()}
        return named

    def remove_unreferenced(self, grace_s: float = UNREFERENCED_GRACE_S) -> list[str]:
        """Remove the result files no commit names, once older than ``grace_s`` (a writer uploads its files before
        committing them; a reader that folded the log a moment ago may still read them)."""
        named, now, removed = self.referenced(), time.time_ns(), []
        for key, stat in itertools.chain.from_iterable(self.location.list(table) for table in self._tables()):
            table, _, name = key.partition("/")
            if "/" in name or not name.startswith("part-") or not name.endswith(".parquet"):
                continue
            if key not in named and (now - stat.mtime_ns) / 1e9 > grace_s:
                self.location.delete(key)
                removed.append(key)
        return removed

    def _tables(self) -> list[str]:
        from lookups.pipeline.store.sql_files import TABLE_KEYS

        return list(TABLE_KEYS)

    def check(self, entry: Entry, hashed: dict) -> str | None:
        """Why ``entry``'s object does not hold what was written (missing, another size, another hash), or None.
        ``hashed``: verified objects by (url, size, mtime); objects are never rewritten, so each is hashed once."""
        found = self.location.stat(entry.file)
        if found is None:
            return f"{entry.file} is missing"
        if found.size != entry.bytes:
            return f"{entry.file} has {found.size} bytes, {entry.bytes} when written (truncated or replaced)"
        key = (self.location.url(entry.file), found.size, found.mtime_ns)
        if key not in hashed:
            hashed[key] = self.location.sha256(entry.file) == entry.sha256
        if not hashed[key]:
            return f"{entry.file} does not hold what was written (its SHA-256 differs: altered in the object store)"
        return None
