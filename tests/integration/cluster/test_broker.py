"""A broker that cannot be reached is one line naming it and the fix, exit 2, before anything starts: for `lookups
worker` and for `lookups run` with the Celery executor (docs/workers.md). No Redis, no model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def one_line(out: subprocess.CompletedProcess, url: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert url in lines[0] and "cannot be reached" in lines[0] and "LOOKUPS_CELERY_BROKER" in lines[0] and "redis-server" in lines[0]
    return lines[0]


def test_a_worker_and_a_run_without_their_broker_say_so_in_one_line(tmp_path):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    worker = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "worker", "--broker", url], capture_output=True, text=True, timeout=120)
    one_line(worker, url)
    assert worker.stdout == ""  # nothing started

    env = {**os.environ, "LOOKUPS_EXECUTOR": "celery", "LOOKUPS_CELERY_BROKER": url.replace("127.0.0.1", ":secret@127.0.0.1")}
    run = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", "planted", "--corpus", "planted"], env=env,
                         capture_output=True, text=True, timeout=300)
    line = one_line(run, url.replace("127.0.0.1", ":***@127.0.0.1"))
    assert "secret" not in line  # the password is masked


def test_a_broker_url_that_is_not_redis_is_refused(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "worker", "--broker", "amqp://guest@127.0.0.1//"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "is not a Redis URL" in out.stderr and len(out.stderr.strip().splitlines()) == 1
