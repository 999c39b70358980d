"""`lookups ui` under a service manager: SIGTERM stops the whole process tree (docs/operations.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import descendants, running
from servers import free_port, wait_until_serving


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_stops_lookups_ui_and_everything_it_started(data_folder, tmp_path, sigint):
    """Also when started with SIGINT ignored, as `lookups ui &` in a script or a CI job starts it: `dagster dev` maps
    SIGTERM to its SIGINT handler, so an inherited ignored SIGINT would make it ignore SIGTERM."""
    port = free_port()
    log = (tmp_path / "ui.log").open("w+")
    ui = subprocess.Popen(
        [sys.executable, "-m", "lookups.pipeline.cli", "ui", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_ignore_sigint if sigint == "ignored" else None,
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
