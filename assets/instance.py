"""Opening the Dagster instance: once at a time, checked, and tidied of what killed runs left.

Dagster's SQLite storages create their schema and stamp alembic's version table the first time they are
opened, with nothing to stop two processes doing it at once: two first runs in a fresh data folder can leave
two rows in ``alembic_version``, and every later open then fails. So every lookups process opens the instance
under a file lock in DAGSTER_HOME (see docs/operations.md), and says how to repair an instance that is broken
anyway. While it holds the lock it marks failed the runs whose process was killed (``execute_in_process`` runs
have no run worker for Dagster's run monitoring to check) and removes the staging files killed writers left.

``python -m lookups.assets.instance`` does just that (``lookups ui`` runs it before starting Dagster).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import sqlalchemy.exc
from alembic.util.exc import CommandError
from filelock import FileLock, Timeout

from lookups.pipeline.common import disk, files
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import cache_dir, dagster_home_dir, data_dir

LOCK_FILE = ".instance.lock"
LOCK_WAIT_S = 300.0  # opening takes a second or two; a first open that migrates, a little longer
#: Run tags naming the process that executes a run in-process (``lookups run``), so that the next start can
#: tell a run whose process was killed from one still going.
PID_TAG = "lookups/pid"
NAMESPACE_TAG = "lookups/process_namespace"
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


class InstanceError(LookupsError):
    """The Dagster instance cannot be opened (a broken schema, a lock held too long)."""


def home() -> Path:
    path = Path(os.environ.get("DAGSTER_HOME") or dagster_home_dir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def owner_tags() -> dict[str, str]:
    """Tags for a run this process executes itself."""
    return {PID_TAG: str(os.getpid()), NAMESPACE_TAG: files.process_namespace()}


def repair_hint(where: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (
        f"It holds only run history (results are Parquet files, untouched): move it aside with "
        f"`mv {where} {where}.broken-{stamp}` and run again (`lookups run` registers its keys again)."
    )


SCHEMA_ERRORS = (CommandError, sqlalchemy.exc.SQLAlchemyError, sqlite3.Error)


def _open_checked(where: Path) -> dg.DagsterInstance:
    """``DagsterInstance.get()``, with each storage's alembic version read back (it raises on two heads)."""
    instance = None
    try:
        instance = dg.DagsterInstance.get()
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            if storage is not None:
                storage.alembic_version()
    except SCHEMA_ERRORS as err:
        if instance is not None:
            instance.dispose()
        raise _instance_error(where, err) from err
    return instance


def _instance_error(where: Path, err: BaseException) -> InstanceError:
    cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if disk.is_full(err):  # full, not broken: the folder needs space, the instance nothing
        return InstanceError(disk.full_message(err, data_dir(), cache_dir(), os.environ.get("LOOKUPS_WAREHOUSE")))
    if "database is locked" in cause:  # busy, not broken: moving it aside would lose history for nothing
        return InstanceError(f"The Dagster instance in {where} is busy ({cause}): another process is writing to it. Run again in a moment.")
    return InstanceError(f"The Dagster instance in {where} cannot be opened: {cause}\n{repair_hint(where)}")


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the unfinished runs this machine executed in-process whose process is gone (canceled, those
    it was asked to stop: a runner killed while stopping); their ids."""
    statuses = [*UNFINISHED, dg.DagsterRunStatus.CANCELING]
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=statuses, tags={NAMESPACE_TAG: files.process_namespace()}))
    failed = []
    for run in runs:
        pid = run.tags.get(PID_TAG, "")
        if pid.isdigit() and not files.process_alive(int(pid)):
            if run.status == dg.DagsterRunStatus.CANCELING:
                instance.report_run_canceled(run, f"Its process (pid {pid}) was stopped before it could mark it canceled: marked at the next start.")
            else:
                instance.report_run_failed(run, f"Its process (pid {pid}) ended without finishing it (killed?): marked failed at the next start.")
            failed.append(run.run_id)
    return failed


def remove_stale_staging() -> list[Path]:
    """The staging files and folders killed writers left in the data and cache folders."""
    folders = {data_dir(), cache_dir()}
    return [path for folder in sorted(folders) for path in files.remove_stale_staging(folder)]


@contextmanager
def open_instance() -> Iterator[dg.DagsterInstance]:
    """The instance of DAGSTER_HOME, opened under its lock (so that concurrent first opens create the schema
    once), checked, with killed runs marked failed and their leftovers removed."""
    where = home()
    try:
        with FileLock(where / LOCK_FILE, timeout=LOCK_WAIT_S):
            instance = _open_checked(where)
            try:
                fail_abandoned_runs(instance)
                move_corpus_keys(instance)
            except BaseException:
                instance.dispose()
                raise
    except Timeout as err:
        raise InstanceError(
            f"Another lookups process kept the Dagster instance's lock ({where / LOCK_FILE}) for {LOCK_WAIT_S:.0f} s. "
            "Wait for it (`ps aux | grep lookups`) and run again."
        ) from err
    remove_stale_staging()
    with instance:
        yield instance


#: The corpus keys' partition dimension was called ``prompt_set`` before it was named after what it holds.
OLD_CORPUS_DIMENSION = "prompt_set"


def move_corpus_keys(instance: dg.DagsterInstance) -> None:
    """Register under ``corpus`` the corpus keys an older instance holds under ``prompt_set`` (once; the old
    keys stay for the run history). Their results are in the store, so their steps are skipped, not redone."""
    from .automation import CORPUS_DIMENSION

    old = instance.get_dynamic_partitions(OLD_CORPUS_DIMENSION)
    new = [key for key in old if not instance.has_dynamic_partition(CORPUS_DIMENSION, key)]
    if new:
        instance.add_dynamic_partitions(CORPUS_DIMENSION, new)


def main() -> int:
    try:
        with open_instance():
            pass
    except LookupsError as err:
        print(f"lookups: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
