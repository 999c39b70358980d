"""Steps on Celery workers (docs/workers.md), for real: a `redis-server` on a free loopback port, two `lookups worker`
processes (one takes the queue `gpu`, the other `dagster`), each with its own working and temporary folders and the same
data folder, and `lookups run` with LOOKUPS_EXECUTOR=celery.

1. Three partitions (the planted circuit, its control model, a tiny random GPT-2; one corpus) run through the workers
   give every table row for row what the in-process runner gives; each step ran on the worker of its queue. Both
   wall times are printed (`pytest -s`).
2. The `gpu` worker killed (SIGKILL, its whole process group) as a step that loads the model runs: Celery hands the
   step again to the worker started in its place once the visibility timeout has passed, the run completes, no
   staging file is left, `lookups verify` finds every file whole, and a rerun computes nothing and leaves the
   same rows as the in-process run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
import tiny_models
import yaml
from store_rows import IGNORED

from lookups.pipeline.common.files import STAGING_NAME
from lookups.pipeline.inputs import planted
from lookups.pipeline.store.sql_files import TABLES
from lookups.pipeline.store.store import Store

pytestmark = pytest.mark.slow

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
#: The visibility timeout of the kill test: how long a lost worker's step waits before it is handed out again.
REDELIVER_S = 12


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A Redis and the workers of one data folder; everything stopped by ``close``."""

    def __init__(self, root: Path, data: Path, env: dict):
        self.root, self.data = root, data
        self.port = free_port()
        self.broker = f"redis://127.0.0.1:{self.port}/0"
        self.env = {**env, "LOOKUPS_DATA_DIR": str(data), "LOOKUPS_CELERY_BROKER": self.broker, "LOOKUPS_EXECUTOR": "celery"}
        (root / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root / "redis")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.workers: dict[str, subprocess.Popen] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    def start_worker(self, name: str, queue: str) -> subprocess.Popen:
        """`lookups worker --queue QUEUE` in its own working and temporary folders (and its own process group)."""
        home = self.root / "workers" / name
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        log = (home / "worker.log").open("a")
        worker = subprocess.Popen(
            [sys.executable, "-m", "lookups.pipeline.cli", "worker", "--queue", queue, "--name", name],
            cwd=home, env={**self.env, "TMPDIR": str(home / "tmp")}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.workers[name] = worker
        self.wait_ready(name)
        return worker

    def wait_ready(self, name: str, timeout: float = 120) -> None:
        log = self.root / "workers" / name / "worker.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"{name}@" in log.read_text() and " ready." in log.read_text():
                return
            assert self.workers[name].poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"worker {name} not ready: {log.read_text()[-3000:]}")

    def kill(self, name: str) -> None:
        """SIGKILL the worker and everything it started (its process group): a machine lost, not a stop."""
        worker = self.workers.pop(name)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def close(self) -> None:
        for name in list(self.workers):
            self.kill(name)
        os.killpg(self.redis.pid, signal.SIGKILL)
        self.redis.wait()


def partitions(tmp_path: Path) -> list[tuple[str, Path]]:
    """(model folder, settings file) of each partition: the planted circuit, its control, a tiny GPT-2; one corpus."""
    circuit = planted.build_planted_circuit(tmp_path / "planted")
    control = planted.build_planted_circuit(tmp_path / "control", planted=False)
    tiny = tiny_models.build_tiny("gpt2", tmp_path / "tiny-gpt2")
    out = []
    for model in (circuit.model_dir, control.model_dir, str(tiny)):
        config = circuit.run_config()
        config["ops"]["model"]["config"]["name"] = model
        config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}
        path = tmp_path / f"{Path(model).name}.yaml"
        path.write_text(yaml.safe_dump(config))
        out.append((circuit.corpus_path, path))
    return out


def lookups_run(env: dict, config: Path, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lookups.pipeline.cli", "run", "--config", str(config)], env=env, capture_output=True, text=True, timeout=900, **popen
    )


def store_of(data: Path) -> Store:
    return Store(data / "lookups.duckdb", lock_wait_s=10.0)


def tables(data: Path) -> dict:
    """Every result table (and the version records' data versions), sorted, without timestamps and run ids."""
    store = store_of(data)
    out = {}
    for table in (*TABLES, "asset_versions"):
        columns = list(store.query(f"SELECT * FROM {table} LIMIT 0", require_results=False).columns)
        keep = ["asset", "scope", "data_version", "code_version", "complete"] if table == "asset_versions" else [c for c in columns if c not in IGNORED]
        frame = store.query(f"SELECT {', '.join(keep)} FROM {table}", require_results=False)
        out[table] = frame
    return out


def differences(want: dict, got: dict) -> list[str]:
    found = []
    for table, a in want.items():
        b = got[table]
        if list(a.columns) != list(b.columns):
            found.append(f"{table}: columns differ")
            continue
        con = duckdb.connect()
        con.register("a", a)
        con.register("b", b)
        left = con.execute("SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)").fetchall()[0][0]
        right = con.execute("SELECT count(*) FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a)").fetchall()[0][0]
        con.close()
        if left or right or len(a) != len(b):
            found.append(f"{table}: {left} rows only in-process, {right} only on the workers ({len(a)} vs {len(b)})")
    return found


def staging_files(data: Path) -> list[Path]:
    return [p for p in data.rglob(".*.tmp") if STAGING_NAME.match(p.name)]


def worker_of_each_step(data: Path) -> dict[str, set[str]]:
    """step -> the workers (names) that ran it, from the runs' engine events."""
    import dagster as dg

    seen: dict[str, set[str]] = {}
    with dg.DagsterInstance.from_config(str(data / "dagster_home")) as instance:
        for run in instance.get_runs(filters=dg.RunsFilter(job_name="lookups")):
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                metadata = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
                if "Celery worker" in metadata:
                    seen.setdefault(entry.step_key, set()).add(metadata["Celery worker"].value.split("@")[0])
    return seen


@pytest.mark.skipif(not Path(REDIS).exists(), reason="redis-server is not installed (apt-get install redis-server; make test installs it)")
def test_steps_on_celery_workers_give_the_in_process_rows_and_survive_a_killed_worker(tmp_path):
    runs = partitions(tmp_path / "inputs")
    base = {k: v for k, v in os.environ.items() if k not in ("LOOKUPS_EXECUTOR", "DAGSTER_HOME")}

    # The reference: in-process, one partition after the other; a copy after the first partition for the kill test.
    local = tmp_path / "in-process"
    started = time.monotonic()
    for i, (_, config) in enumerate(runs):
        out = lookups_run({**base, "LOOKUPS_DATA_DIR": str(local)}, config)
        assert out.returncode == 0, out.stderr[-3000:]
        if i == 0:
            first_only = tables(local)
    in_process_s = time.monotonic() - started
    want = tables(local)

    # The same partitions through two workers: `gpu` for the steps that load the model, `dagster` for the others.
    shared = tmp_path / "shared-data"
    cluster = Cluster(tmp_path / "cluster", shared, base)
    try:
        cluster.start_worker("gpu1", "gpu")
        cluster.start_worker("cpu1", "dagster")
        started = time.monotonic()
        for _, config in runs:
            out = lookups_run(cluster.env, config)
            assert out.returncode == 0, out.stderr[-3000:]
            assert "Traceback" not in out.stderr and "CeleryExecutor" not in out.stderr and "Warning" not in out.stderr, out.stderr[-3000:]
            assert 'neuron_exemplars: Started execution of step "neuron_exemplars".' in out.stderr  # the concise lines, as in-process
        celery_s = time.monotonic() - started
    finally:
        cluster.close()
    print(f"\nwall time, 3 partitions: in-process {in_process_s:.1f} s, Celery (2 workers) {celery_s:.1f} s; load {os.getloadavg()[0]:.2f}")
    assert differences(want, tables(shared)) == []
    from lookups.pipeline.steps import STEPS

    ran_on = worker_of_each_step(shared)
    for step in STEPS.values():
        assert ran_on.get(step.name) == ({"gpu1"} if step.loads_model else {"cpu1"}), (step.name, ran_on.get(step.name))

    # A worker killed mid-step: the step is handed out again (task_acks_late) once the visibility timeout passes.
    killed = tmp_path / "killed-data"
    cluster = Cluster(tmp_path / "cluster-kill", killed, {**base, "LOOKUPS_CELERY_VISIBILITY_TIMEOUT": str(REDELIVER_S)})
    try:
        cluster.start_worker("gpu1", "gpu")
        cluster.start_worker("cpu1", "dagster")
        log = (tmp_path / "killed-run.log").open("w+")
        run = subprocess.Popen([sys.executable, "-m", "lookups.pipeline.cli", "run", "--config", str(runs[0][1])], env=cluster.env,
                               stdout=subprocess.DEVNULL, stderr=log, text=True)
        deadline = time.monotonic() + 300
        marker = 'neuron_exemplars: Started execution of step "neuron_exemplars".'
        while marker not in Path(log.name).read_text():
            assert run.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
            time.sleep(0.05)
        killed_at = time.monotonic()
        cluster.kill("gpu1")
        cluster.start_worker("gpu2", "gpu")  # as a service manager restarts it
        assert run.wait(timeout=600) == 0, Path(log.name).read_text()[-3000:]
        recovered_s = time.monotonic() - killed_at
        stderr = Path(log.name).read_text()
        assert stderr.count(marker) == 2, stderr[-3000:]  # started on gpu1, killed; started again on gpu2
        assert "Traceback" not in stderr
        assert worker_of_each_step(killed)["neuron_exemplars"] == {"gpu1", "gpu2"}
        assert staging_files(killed) == []  # the killed writer's staging files, if any, removed by the next writer
        verify = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "verify"], env=cluster.env, capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        again = lookups_run(cluster.env, runs[0][1])  # a rerun: every step skipped, the same rows
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        cluster.close()
    print(f"killed worker: the run completed {recovered_s:.1f} s after the kill (visibility timeout {REDELIVER_S} s)")
    assert staging_files(killed) == []
    assert differences(first_only, tables(killed)) == []
