"""Writing files that parallel runs (two partitions at once) may write too: never half a file."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

#: A staging file or folder: ``.<name>.<pid>-<process namespace>-<random>.tmp`` (older: no namespace).
STAGING_NAME = re.compile(r"^\..+\.(?P<pid>\d+)-(?:(?P<namespace>[0-9a-f]{8})-)?[0-9a-f]{8}\.tmp$")
#: Leftovers whose writer cannot be checked from here (another machine or container) go after this long:
#: no write stays staged for a day.
STALE_STAGING_S = 24 * 3600


@functools.cache
def process_namespace() -> str:
    """Which processes ``os.kill(pid, 0)`` can see: the kernel boot and pid namespace on Linux (two containers
    on one machine share a hostname but not their pids), else the hostname."""
    try:
        ident = Path("/proc/sys/kernel/random/boot_id").read_text().strip() + str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ident = socket.gethostname()
    return hashlib.sha256(ident.encode()).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs in this pid namespace (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def staging_path(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this writer (same folder, so the rename is atomic). It names
    the writer's process, so that what a killed writer left can be told from what a live one is writing."""
    return path.with_name(f".{path.name}.{os.getpid()}-{process_namespace()}-{uuid.uuid4().hex[:8]}.tmp")


def remove_stale_staging(folder: Path, recursive: bool = True) -> list[Path]:
    """Remove the staging files and folders under ``folder`` that a killed writer left: those whose process is
    gone from this machine, or, when it cannot be checked from here, older than a day. A live writer's stay."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    for path in list(candidates):
        found = STAGING_NAME.match(path.name)
        if not found:
            continue
        try:
            age = time.time() - path.lstat().st_mtime
        except FileNotFoundError:  # its writer renamed it a moment ago
            continue
        checkable = found["namespace"] == process_namespace()
        if (checkable and not process_alive(int(found["pid"]))) or (not checkable and age > STALE_STAGING_S):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a unique temporary file and rename it over ``path``: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
