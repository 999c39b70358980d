"""`lookups ui` under a service manager: SIGTERM stops the whole process tree (docs/operations.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from servers import free_port, wait_until_serving


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
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_sigterm_stops_lookups_ui_and_everything_it_started(data_folder, tmp_path):
    port = free_port()
    log = (tmp_path / "ui.log").open("w+")
    ui = subprocess.Popen(
        [sys.executable, "-m", "lookups.pipeline.cli", "ui", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    tree: set[int] = set()
    try:
        wait_until_serving(port, ui, timeout=300)
        tree = descendants(ui.pid) | {ui.pid}
        assert len(tree) >= 3, tree  # dagster dev, its webserver and daemon (and their code servers)
        started = time.monotonic()
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=60)
        while any(running(p) for p in tree) and time.monotonic() - started < 60:
            time.sleep(0.2)
        stopped_s = time.monotonic() - started
        left = sorted(p for p in tree if running(p))
        assert not left, f"still running {stopped_s:.0f} s after SIGTERM: {left}\n{Path(log.name).read_text()[-2000:]}"
        assert stopped_s < 30, f"the tree took {stopped_s:.1f} s to stop"
        print(f"{len(tree)} processes stopped {stopped_s:.1f} s after SIGTERM")
    finally:
        for pid in tree | {ui.pid}:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
