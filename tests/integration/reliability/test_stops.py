"""`lookups run` stopped by SIGINT or SIGTERM, and on a full data folder (docs/operations.md, "Stopping a run, a
full disk"). Each drives the real command on the planted circuit, as a person (Ctrl-C), a batch scheduler (SIGTERM
at its time limit) or a small disk would: one line, the exit code, no traceback, no process left, the Dagster run
marked, nothing half-written, and a rerun that completes.

The full disk is a 1.5 MB tmpfs mounted on the data folder; where mounting is not permitted the test skips."""

from __future__ import annotations

import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from processes import descendants, mount_tmpfs, running

#: What the runner's terminal log prints: ``HH:MM:SS step: message``. Anything else on stderr is a message.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d ")
STAGING = re.compile(r"^\..+\.\d+-(?:[0-9a-f]{8}-)?[0-9a-f]{8}\.tmp$")
RUN = ["-m", "lookups.pipeline.cli", "run", "--model", "planted", "--corpus", "planted"]


def start_run(data: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "LOOKUPS_DATA_DIR": str(data)}
    with log.open("w") as out:  # the child holds its own copy
        return subprocess.Popen([sys.executable, *RUN], env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)


def run_to_end(data: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOKUPS_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, *RUN], env=env, capture_output=True, text=True, timeout=timeout)


def working_on(data: Path) -> set[int]:
    """The live processes whose environment points LOOKUPS_DATA_DIR at ``data``: whatever `lookups run` started there."""
    wanted = f"LOOKUPS_DATA_DIR={data}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if wanted in (entry / "environ").read_bytes().split(b"\0") and running(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def run_statuses(data: Path) -> dict[str, tuple[str, str]]:
    """run id -> (job, status), from the instance's run storage."""
    with sqlite3.connect(data / "dagster_home" / "history" / "runs.db") as con:
        return {run_id: (job, status) for run_id, job, status in con.execute("SELECT run_id, pipeline_name, status FROM runs")}


def staging_files(data: Path) -> list[Path]:
    return [path for path in data.rglob(".*.tmp") if STAGING.match(path.name)]


def assert_nothing_half_written(data: Path) -> None:
    """Every result file whole: each Parquet file's footer reads, each handle unpickles (staging files aside)."""
    tables = [path for path in (data / "lookups_tables").rglob("*.parquet") if not STAGING.match(path.name)]
    assert tables, "no results were written before the stop"
    for path in tables:
        pq.read_metadata(path)
    for path in (data / "handles").rglob("*"):
        if path.is_file() and not STAGING.match(path.name) and not path.name.endswith(".lock"):
            with path.open("rb") as fh:
                pickle.load(fh)


def only_log_lines_and(stderr: str) -> str:
    """The one line that is not the runner's log; fails on any other (a traceback, a second message, Dagster's noise)."""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-4000:]
    other = [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(other) == 1 and other[0].startswith("lookups: "), stderr[-4000:]
    assert stderr.rstrip().splitlines()[-1] == other[0], stderr[-4000:]
    return other[0]


def stop_during(data: Path, log: Path, step: str, signum: int) -> tuple[int, str, float]:
    """Start `lookups run`, send ``signum`` to its process alone once ``step`` has started; (exit code, its one
    line, seconds to exit). Checks that it took every process it started with it."""
    cli = start_run(data, log)
    tree: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while f'Started execution of step "{step}"' not in log.read_text():
            assert cli.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        tree = descendants(cli.pid)
        assert tree, "the runner is not running"
        sent = time.monotonic()
        cli.send_signal(signum)
        code = cli.wait(timeout=60)
        took = time.monotonic() - sent
        time.sleep(0.2)  # the kernel reaps what the CLI killed last
        left = sorted(pid for pid in tree | working_on(data) if running(pid))
        assert not left, f"still running after {signal.Signals(signum).name}: {left}"
    finally:
        for pid in tree | working_on(data) | {cli.pid}:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    return code, only_log_lines_and(log.read_text()), took


def assert_canceled(data: Path, line: str, signum: int) -> None:
    name = signal.Signals(signum).name
    found = re.fullmatch(rf"lookups: stopped by {name}; the run (\S+) is marked canceled; results computed so far are kept, rerun to continue", line)
    assert found, line
    statuses = run_statuses(data)
    assert statuses[found[1]] == ("lookups", "CANCELED"), statuses
    assert all(status in ("SUCCESS", "CANCELED") for _, status in statuses.values()), statuses


def assert_completes(data: Path) -> None:
    rerun = run_to_end(data)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert not staging_files(data), staging_files(data)  # what a write cut short left is removed by the next start
    assert "STARTED" not in {status for _, status in run_statuses(data).values()}


def test_sigterm_then_ctrl_c_stop_the_run_cleanly_and_a_rerun_completes(data_folder, tmp_path):
    """SIGTERM in the model's load, then SIGINT in the explanations of the run that continues: exit 143, then 130,
    each within seconds, one line, the run CANCELED, nothing left running or half-written; then a rerun completes."""
    code, line, took = stop_during(data_folder, tmp_path / "term.log", "model", signal.SIGTERM)
    assert code == 143, line
    assert took < 15, f"{took:.1f} s from SIGTERM to exit"
    assert_canceled(data_folder, line, signal.SIGTERM)
    print(f"SIGTERM as the model loads: exit {code} {took:.1f} s after the signal")

    code, line, took = stop_during(data_folder, tmp_path / "int.log", "explanations", signal.SIGINT)
    assert code == 130, line
    assert took < 15, f"{took:.1f} s from SIGINT to exit"
    assert_canceled(data_folder, line, signal.SIGINT)
    assert_nothing_half_written(data_folder)
    print(f"SIGINT in the explanations: exit {code} {took:.1f} s after the signal")

    assert_completes(data_folder)


@pytest.fixture
def small_disk(data_folder):
    """The data folder on a 1.5 MB tmpfs (the planted run writes 4.3 MB there); yields the folder."""
    data_folder.mkdir(parents=True, exist_ok=True)
    mount_tmpfs(data_folder, "size=1500k")
    try:
        yield data_folder
    finally:
        for pid in working_on(data_folder):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["umount", "-l", str(data_folder)], check=True)


def test_a_full_data_folder_is_one_line_and_a_rerun_with_room_completes(small_disk):
    full = run_to_end(small_disk)
    assert full.returncode == 1, full.stderr[-4000:]
    line = only_log_lines_and(full.stderr)
    assert re.match(
        rf"lookups: the data folder {re.escape(str(small_disk))} is full \(\d+\.\d MB free; a run needs at least \d+ MB free there, a real model more\): "
        r"free space or point LOOKUPS_DATA_DIR at a bigger disk, then run again; ",
        line,
    ), line
    marked = re.search(r"; the run (?:(\S+) )?is marked failed( at the next start)?, results computed so far are kept$", line)
    assert marked, line
    assert not working_on(small_disk)

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # the run's documented minimum
    # Marked now when the instance could still record it, else (SQLite with no room for even that) at the next start.
    # Read once there is room: a full SQLite database may need to roll back its journal before it can be read.
    runs = {run_id: status for run_id, (job, status) in run_statuses(small_disk).items() if job == "lookups"}
    assert list(runs) == [marked[1]] if marked[1] else len(runs) == 1, (line, runs)
    assert list(runs.values()) == ["STARTED" if marked[2] else "FAILURE"], (line, runs)
    assert_completes(small_disk)
    assert run_statuses(small_disk)[next(iter(runs))] == ("lookups", "FAILURE")
