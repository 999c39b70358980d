"""A full disk, recognised wherever it surfaces, said in one line.

A full data folder shows up as an ``OSError`` with ``ENOSPC`` (pickle, pyarrow, plain writes), as DuckDB's
"No space left on device", as SQLite's "database or disk is full" (Dagster's instance), or inside another error
whose cause is one of those: ``is_full`` looks through the message and the chain of causes, and ``full_message``
names the folder and the space a run needs (docs/operations.md, "Stopping a run, a full disk").
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

#: The errors a full disk (or an exhausted quota) gives.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: How each writer says it, lowercased: the OS (``strerror``), SQLite, DuckDB, pyarrow.
FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded", "[errno 28]")
#: The free space a run needs in the data folder, at least. Measured: the planted circuit's whole run leaves
#: 4.3 MB there (2.9 MB of it Dagster's run history); the default demo's results are 15 MB of Parquet and a
#: 4.3 MB atlas page, plus the run history. A real model's fp32 copy comes on top when the cache is this folder.
MIN_FREE_MB = 64


def is_full(err: BaseException | str | None) -> bool:
    """Whether ``err`` (an exception, its causes, or a message) says that a disk is full."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, str):
            return any(text in err.lower() for text in FULL_TEXTS)
        if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
            return True
        if any(text in str(err).lower() for text in FULL_TEXTS):
            return True
        err = err.__cause__ or err.__context__
    return False


def looks_full(err: BaseException | str | None, data: Path, cache: Path | None = None, warehouse: str | None = None) -> bool:
    """``is_full``, or an I/O error while one of the folders (as for ``full_folder``) has less than ``MIN_FREE_MB``
    free: SQLite reports a write that found no room as "disk I/O error" when it was in its journal, and every
    read after it likewise."""
    if is_full(err):
        return True
    if not _io_error(err):
        return False
    free = [free_mb(folder) for _, folder, _ in _folders(data, cache, warehouse)]
    return any(mb is not None and mb < MIN_FREE_MB for mb in free)


def _io_error(err: BaseException | str | None) -> bool:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, str):
            return "disk i/o error" in err.lower()
        if (isinstance(err, OSError) and err.errno == errno.EIO) or "disk i/o error" in str(err).lower():
            return True
        err = err.__cause__ or err.__context__
    return False


def _written_path(err: BaseException | str | None) -> Path | None:
    """The file whose write failed, when an ``OSError`` in the chain names it."""
    seen: set[int] = set()
    while isinstance(err, BaseException) and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in FULL_ERRNOS and (err.filename or err.filename2):
            return Path(str(err.filename or err.filename2)).resolve()
        err = err.__cause__ or err.__context__
    return None


def free_mb(folder: Path) -> float | None:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return None


def full_folder(err: BaseException | str | None, data: Path, cache: Path | None = None, warehouse: str | None = None) -> tuple[str, Path, str | None]:
    """(what it is, the folder, the variable that moves it) of the folder that is full: the one the failed write
    was in when the error names a file, else the one with the least free space (SQLite names no file).
    ``warehouse``: ``LOOKUPS_WAREHOUSE`` when it is a local folder (an object store is never full)."""
    folders = _folders(data, cache, warehouse)
    written = _written_path(err)
    if written is not None:
        inside = [entry for entry in folders if written.is_relative_to(entry[1].resolve())]
        if inside:
            return max(inside, key=lambda entry: len(entry[1].resolve().parts))
        return ("folder", written.parent, None)
    return min(folders, key=lambda entry: free_mb(entry[1]) if free_mb(entry[1]) is not None else float("inf"))


def _folders(data: Path, cache: Path | None, warehouse: str | None) -> list[tuple[str, Path, str | None]]:
    folders: list[tuple[str, Path, str | None]] = [("data folder", Path(data), "LOOKUPS_DATA_DIR")]
    if cache is not None and Path(cache).resolve() != Path(data).resolve():
        folders.append(("cache folder", Path(cache), "LOOKUPS_CACHE_DIR"))
    if warehouse and "://" not in warehouse:
        folders.append(("results folder", Path(warehouse), "LOOKUPS_WAREHOUSE"))
    return folders


def full_message(err: BaseException | str | None, data: Path, cache: Path | None = None, warehouse: str | None = None) -> str:
    """One line: which folder is full, how much is free, how much a run needs, what to do."""
    what, folder, variable = full_folder(err, data, cache, warehouse)
    free = free_mb(folder)
    now = f"{free:.1f} MB free" if free is not None else "its free space unknown"
    fix = f"free space or point {variable} at a bigger disk" if variable else "free space on its disk"
    return f"the {what} {folder} is full ({now}; a run needs at least {MIN_FREE_MB} MB free there, a real model more): {fix}, then run again"
