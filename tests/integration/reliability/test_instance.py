"""The Dagster instance under concurrent first runs, a broken schema and killed runs (docs/operations.md).

Each test drives real processes: the openers import the runner and open the instance exactly as
``lookups run`` does, and the killed run is a real ``lookups run`` stopped with SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

#: Opens the instance the way the runner does (``run_main_job``), once every opener has imported Dagster:
#: the openers start together, as two `lookups run` in a fresh folder do.
OPENER = r"""
import os, sys, time
from lookups.assets import runner
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
with runner.open_instance() as instance:
    print(len(instance.get_runs()))
"""


def cli_env(data: Path) -> dict:
    """What `lookups` gives its Dagster subprocesses (pipeline/cli.py:_dagster_env)."""
    home = data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "LOOKUPS_DATA_DIR": str(data)}


def alembic_rows(home: Path) -> dict[str, int]:
    """Rows of each storage database's alembic_version table (a sound instance has one in each)."""
    rows = {}
    for db in sorted(home.rglob("*.db")):
        with sqlite3.connect(db) as con:
            if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone():
                rows[str(db.relative_to(home))] = con.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
    return rows


def run_statuses(home: Path) -> dict[str, str]:
    with sqlite3.connect(home / "history" / "runs.db") as con:
        return dict(con.execute("SELECT run_id, status FROM runs").fetchall())


def open_once(env: dict) -> subprocess.CompletedProcess:
    """A later start: `python -m lookups.assets.instance` opens the instance as `lookups run` and `lookups ui` do."""
    return subprocess.run([sys.executable, "-m", "lookups.assets.instance"], env=env, capture_output=True, text=True, timeout=120)


def test_concurrent_first_opens_create_the_schema_once(data_folder):
    for attempt in range(2):  # unguarded, each attempt left the instance broken or failed an opener (docs/operations.md)
        data = data_folder / f"attempt{attempt}"
        env = cli_env(data)
        home = Path(env["DAGSTER_HOME"])
        go = data / "go"
        openers = [
            subprocess.Popen([sys.executable, "-c", OPENER, str(go)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        time.sleep(6)  # every opener has imported Dagster and waits
        go.touch()
        results = [opener.communicate(timeout=180) for opener in openers]
        for opener, (out, err) in zip(openers, results):
            assert opener.returncode == 0 and out.strip() == "0", err[-2000:]
        rows = alembic_rows(home)
        assert set(rows) == {"history/runs.db", "history/runs/index.db", "schedules/schedules.db"}, rows
        assert all(n == 1 for n in rows.values()), f"alembic_version rows per database: {rows}"
        later = open_once(env)
        assert later.returncode == 0, later.stderr[-2000:]


def test_a_broken_instance_says_how_to_repair_it(data_folder):
    env = cli_env(data_folder)
    home = Path(env["DAGSTER_HOME"])
    assert open_once(env).returncode == 0
    with sqlite3.connect(home / "history" / "runs.db") as con:  # what two unguarded first opens leave
        con.execute("INSERT INTO alembic_version VALUES ('5771160a95ad')")
    run = subprocess.run(
        [sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", "planted", "--corpus", "planted"],
        env={**os.environ, "LOOKUPS_DATA_DIR": str(data_folder)}, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    message = [line for line in run.stderr.splitlines() if line.strip()]
    assert message[0].startswith(f"lookups: The Dagster instance in {home} cannot be opened: Version table 'alembic_version' has more than one head"), message
    assert len(message) == 2, message
    repair = message[1].split("`")[1]
    assert repair.startswith(f"mv {home} {home}.broken-"), repair
    subprocess.run(repair, shell=True, check=True)  # the hint, as given
    assert open_once(cli_env(data_folder)).returncode == 0
    assert alembic_rows(home) and all(n == 1 for n in alembic_rows(home).values())


def test_a_killed_run_is_marked_failed_at_the_next_start(data_folder):
    env = {**os.environ, "LOOKUPS_DATA_DIR": str(data_folder)}
    home = data_folder / "dagster_home"
    log = (data_folder.parent / "run.log").open("w+")
    run = subprocess.Popen(
        [sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", "planted", "--corpus", "planted"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while "STEP_SUCCESS" not in Path(log.name).read_text() and "Finished execution of step" not in Path(log.name).read_text():
            assert run.poll() is None and time.time() < deadline, Path(log.name).read_text()[-3000:]
            time.sleep(0.5)
        main_run = next(run_id for run_id, status in run_statuses(home).items() if status == "STARTED")
        # A start while the run is alive leaves it alone.
        assert open_once(cli_env(data_folder)).returncode == 0
        assert run_statuses(home)[main_run] == "STARTED"
        # The runner leads its own process group, and stops cleanly when `lookups run` dies: kill both at once.
        runners = [int(pid) for pid in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()]
        for pgid in (*runners, run.pid):
            os.killpg(pgid, signal.SIGKILL)
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run_statuses(home)[main_run] == "STARTED"  # nothing else would ever change it
    assert open_once(cli_env(data_folder)).returncode == 0
    statuses = run_statuses(home)
    assert statuses[main_run] == "FAILURE", statuses
    assert "STARTED" not in statuses.values() and "STARTING" not in statuses.values(), statuses
