"""Processes and file systems for the reliability tests: the processes below one (from /proc), whether one still
runs, and a tmpfs mounted for a block (the tests run as root here; elsewhere they skip, saying why)."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc: children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def mount_tmpfs(folder: Path, options: str) -> None:
    """Mount a tmpfs with ``options`` (e.g. ``size=1500k``, ``ro,size=1m``) on ``folder``, or skip the test."""
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    except OSError as err:
        pytest.skip(f"cannot mount a tmpfs here ({err}): run as root, or where mount is permitted")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): run as root, or where mount is permitted")


@contextmanager
def tmpfs(folder: Path, options: str):
    """A tmpfs on ``folder`` for the block (see ``mount_tmpfs``), unmounted after."""
    mount_tmpfs(folder, options)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
