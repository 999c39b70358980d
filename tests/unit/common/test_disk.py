"""A full disk recognised however it surfaces, and said in one line (pipeline/common/disk.py)."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from lookups.pipeline.common import disk


def _chained(outer: type[BaseException], inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer("wrapped") from err
    except BaseException as err:  # noqa: BLE001 - the chain is what is tested
        return err


@pytest.mark.parametrize(
    "err",
    [
        OSError(errno.ENOSPC, "No space left on device", "/data/x.parquet"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        sqlite3.OperationalError("database or disk is full"),
        RuntimeError('IO Error: Could not write file "/data/x.parquet": No space left on device'),  # DuckDB
        OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"),  # pyarrow
        "(sqlite3.OperationalError) database or disk is full",  # a step's failure message
    ],
    ids=["enospc", "quota", "sqlite", "duckdb", "pyarrow", "message"],
)
def test_a_full_disk_is_recognised(err):
    assert disk.is_full(err)


def test_the_cause_chain_is_read_and_other_errors_are_not_full():
    assert disk.is_full(_chained(RuntimeError, OSError(errno.ENOSPC, "No space left on device")))
    assert not disk.is_full(_chained(RuntimeError, OSError(errno.EACCES, "Permission denied")))
    assert not disk.is_full(ValueError("bad settings"))
    assert not disk.is_full(None)


def test_an_io_error_is_full_only_where_a_folder_has_too_little_room(tmp_path, monkeypatch):
    io_error = sqlite3.OperationalError("disk I/O error")
    assert not disk.looks_full(io_error, tmp_path)  # a real disk with room: an I/O error stays one
    monkeypatch.setattr(disk, "free_mb", lambda folder: 0.1)
    assert disk.looks_full(io_error, tmp_path)
    assert not disk.looks_full(ValueError("bad settings"), tmp_path)


def test_the_message_names_the_folder_the_write_was_in(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    cache.mkdir()
    err = OSError(errno.ENOSPC, "No space left on device", str(cache / "models" / "x.bin"))
    message = disk.full_message(err, data, cache)
    assert message.startswith(f"the cache folder {cache} is full (") and "LOOKUPS_CACHE_DIR" in message, message
    assert f"a run needs at least {disk.MIN_FREE_MB} MB free there" in message and "\n" not in message
    assert disk.full_message(OSError(errno.ENOSPC, "full", str(data / "x")), data, cache).startswith(f"the data folder {data} is full")


def test_without_a_file_the_folder_with_least_room_is_named(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    room = {data: 500.0, cache: 0.2}
    monkeypatch.setattr(disk, "free_mb", lambda folder: room[Path(folder)])
    message = disk.full_message(sqlite3.OperationalError("database or disk is full"), data, cache)
    assert message.startswith(f"the cache folder {cache} is full (0.2 MB free;"), message
    assert disk.full_message("database or disk is full", data).startswith(f"the data folder {data} is full (500.0 MB free;")


def test_a_local_warehouse_and_a_folder_of_its_own_are_named_too(tmp_path):
    data, tables = tmp_path / "data", tmp_path / "tables"
    err = OSError(errno.ENOSPC, "No space left on device", str(tables / "neurons" / "x.parquet"))
    assert disk.full_message(err, data, None, str(tables)).startswith(f"the results folder {tables} is full (")
    assert "LOOKUPS_WAREHOUSE" in disk.full_message(err, data, None, str(tables))
    elsewhere = disk.full_message(OSError(errno.ENOSPC, "full", "/elsewhere/x.bin"), data, None, "s3://bucket/lookups")
    assert elsewhere.startswith("the folder /elsewhere is full (") and "free space on its disk, then run again" in elsewhere, elsewhere
