"""Run the main job in-process on the persistent Dagster instance, with concise terminal logs.

`lookups run` (pipeline/cli.py, which never imports Dagster) calls this as a subprocess:
``python -m lookups.assets.runner --run-config '<json>' --result out.json``. The run shows in the UI like
any other; the terminal gets one line per event (no stack traces) and, on failure, each failed step's
cause, the message the pipeline raised to say what to fix. SIGINT and SIGTERM mark the run canceled and end
the process (``stopping.py``); a full data folder ends it in one line (``pipeline/common/disk.py``).
"""

import argparse
import json
import logging
import sys
import threading
import time
import warnings
from contextlib import suppress

import dagster as dg

from lookups.pipeline import steps
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import EMBEDDED_CORPUS, EMBEDDED_MODEL, check_run_settings, full_disk_message, looks_full

from . import stopping
from .automation import add_partitions
from .instance import UNFINISHED, open_instance, owner_tags
from .resources import LookupsStore

#: Dagster logs these at DEBUG; the terminal shows them anyway (step boundaries and results).
SHOWN_EVENTS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"}


class _ConciseFilter(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if stopping.MUTED.is_set():  # a stop began: `lookups run` says what happened, in one line
            return False
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        return record.levelno >= self.level or (event is not None and event.event_type_value in SHOWN_EVENTS)


class _FirstLine(logging.Formatter):
    """``HH:MM:SS step: first line of the message`` (no stack traces: the summary gives each failure's cause)."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        message = str(meta.get("orig_message") or record.getMessage()).strip().split("\n")[0]
        step = meta.get("step_key") or ""
        return f"{self.formatTime(record, '%H:%M:%S')} {step + ': ' if step else ''}{message}"


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="One line per event, no stack traces: for terminals.",
)
def concise_console(init_context) -> logging.Logger:
    logger = logging.getLogger("lookups.run")
    logger.setLevel(logging.DEBUG)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FirstLine())
    handler.addFilter(_ConciseFilter(logging.getLevelName(init_context.logger_config["log_level"])))
    logger.addHandler(handler)
    logger.propagate = False
    return logger


def step_failures(result) -> list[tuple[str, str]]:
    """(step, cause) for each failed step: a Failure's description, else the innermost error message."""
    out = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        data = event.step_failure_data
        if data.user_failure_data and data.user_failure_data.description:
            message = data.user_failure_data.description
        else:
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = (error.message if error else "unknown error").strip()
        out.append((event.step_key, message))
    return out


def observe_sources(instance: dg.DagsterInstance) -> None:
    """Record the models' and corpora's current data versions (cheap: cached fingerprints, file hashes)."""
    from .definitions import defs

    # Dagster's default console logger prints every event at DEBUG: on the terminal, only what went wrong.
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    for name in ("observe_models", "observe_corpora"):
        defs.resolve_job_def(name).execute_in_process(run_config=quiet, instance=instance, raise_on_error=False, tags=owner_tags())


def prepare_partition(instance: dg.DagsterInstance, run_config: dict) -> tuple[dict, dg.MultiPartitionKey]:
    """The model name and corpus source in the run config (defaults: the embedded ones) are the partition's
    keys: add them to the instance if new, observe the sources so every data version is known, and return
    the run config without them and the partition."""
    from .definitions import split_keys

    run_config, keys = split_keys(run_config)
    key = add_partitions(instance, keys.get("model") or EMBEDDED_MODEL, keys.get("corpus") or EMBEDDED_CORPUS)
    observe_sources(instance)
    return run_config, key


def run_partition(instance: dg.DagsterInstance, run_config: dict, log_level: str | None = None, selection: list[str] | None = None):
    """Materialize one (model, corpus) partition in this process (``selection``: only these assets and their
    checks); the result of ``execute_in_process``."""
    from .definitions import defs

    run_config, key = prepare_partition(instance, run_config)
    job = defs.resolve_job_def("lookups")
    if log_level:
        run_config = {**run_config, "loggers": {"concise_console": {"config": {"log_level": log_level}}}}
        job = job.with_logger_defs({"concise_console": concise_console})
    keys = [dg.AssetKey(name) for name in selection] if selection else None
    result = job.execute_in_process(
        run_config=_selected(run_config, selection), instance=instance, partition_key=key, raise_on_error=False, tags=owner_tags(), asset_selection=keys,
    )
    if result.success:  # readers see a run's results once it succeeded (docs/data.md, "What a reader sees")
        LookupsStore().publish_run(result.dagster_run)
    return result


def _selected(run_config: dict, selection: list[str] | None) -> dict:
    """The run config of the selected assets only (Dagster refuses config for ops the run does not have)."""
    if not selection:
        return run_config
    return {**run_config, "ops": {op: block for op, block in (run_config.get("ops") or {}).items() if op in selection}}


def run_partition_multiprocess(instance: dg.DagsterInstance, run_config: dict, selection: list[str] | None = None) -> tuple[bool, str]:
    """Materialize one partition with the job's multiprocess executor (each step in its own process, the
    job rebuilt there from this module), as the UI and the automation sensor run it (``selection``: only these
    assets and their checks). (success, run_id)."""
    from .definitions import defs

    run_config, key = prepare_partition(instance, run_config)
    tags = {**defs.resolve_job_def("lookups").partitions_def.get_tags_for_partition_key(key), **owner_tags()}
    keys = [dg.AssetKey(name) for name in selection] if selection else None
    job = dg.reconstructable(reconstruct_main_job)
    with dg.execute_job(job, instance, run_config=_selected(run_config, selection), tags=tags, asset_selection=keys) as result:
        if result.success:
            LookupsStore().publish_run(result.dagster_run)
        return result.success, result.run_id


def run_partition_celery(instance: dg.DagsterInstance, run_config: dict, log_level: str = "INFO"):
    """Materialize one partition with the Celery executor: each step a task that a worker takes (``lookups
    worker``, docs/workers.md); this process only orchestrates. The terminal gets the lines it gets in-process,
    read from the run's event log (the steps log on the workers); Dagster's own console is silenced, on the
    workers too. (The result of ``execute_job``, {"model_id": ..., "prompt_set_id": ...} when it succeeded.)"""
    from .definitions import defs

    run_config, key = prepare_partition(instance, run_config)
    run_config = {**run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    tags = {**defs.resolve_job_def("lookups").partitions_def.get_tags_for_partition_key(key), **owner_tags()}
    tail = _EventTail(instance, log_level)
    tail.start()
    # dagster-celery makes its task again for every step it submits; Celery warns each time that it keeps the first
    warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already registered")
    try:
        # By module, not by file: this module runs as __main__ here, and the workers import it as a package.
        job = dg.build_reconstructable_job("lookups.assets.runner", "reconstruct_main_job")
        with dg.execute_job(job, instance, run_config=run_config, tags=tags) as result:
            if not result.success:
                return result, None
            LookupsStore().publish_run(result.dagster_run)
            return result, _ids_of(instance, str(key))
    finally:
        tail.close()


class _EventTail(threading.Thread):
    """Prints the concise lines (``concise_console``'s filter and format) of this process's main run as the
    workers write them to the event log, about every half second."""

    def __init__(self, instance: dg.DagsterInstance, log_level: str):
        super().__init__(daemon=True)
        self.instance, self.level = instance, logging.getLevelName(log_level)
        self.stopped = threading.Event()
        self.run_id: str | None = None
        self.cursor: str | None = None

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            with suppress(Exception):  # a busy SQLite file: the next poll reads it
                self.poll()

    def close(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        with suppress(Exception):
            self.poll()  # what came after the last poll

    def poll(self) -> None:
        if self.run_id is None:
            runs = self.instance.get_runs(filters=dg.RunsFilter(job_name=stopping.MAIN_JOB, tags=owner_tags()), limit=1)
            if not runs:
                return
            self.run_id = runs[0].run_id
        while True:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor)
            for record in connection.records:
                self.show(record.event_log_entry)
            self.cursor = connection.cursor
            if not connection.has_more:
                return

    def show(self, entry) -> None:
        if stopping.MUTED.is_set():
            return
        event = entry.dagster_event
        level = entry.level if isinstance(entry.level, int) else logging.getLevelName(entry.level)
        if not (level >= self.level or (event is not None and event.event_type_value in SHOWN_EVENTS)):
            return
        if event is not None and event.event_type_value == "ENGINE_EVENT" and level < logging.WARNING:
            return  # the Celery executor's bookkeeping ("Executing steps ... in celery worker"): the UI has it
        message = str(entry.user_message or (event.message if event else "") or "").strip().split("\n")[0]
        step = entry.step_key or ""
        print(f"{time.strftime('%H:%M:%S', time.localtime(entry.timestamp))} {step + ': ' if step else ''}{message}", file=sys.stderr, flush=True)


def run_failure(result) -> str | None:
    """Why a run failed that no step's failure explains (a worker lost mid-step, the broker gone): the run's
    failure message, its first line."""
    for event in result.all_events:
        if event.event_type_value == "RUN_FAILURE":
            data = event.event_specific_data
            error = getattr(data, "error", None)
            while error is not None and error.cause is not None:
                error = error.cause
            text = (error.message if error is not None else event.message) or ""
            return " ".join(text.split()) or None
    return None


def reconstruct_main_job():
    """The main job as each step's process rebuilds it (``dg.reconstructable`` needs a module-level function)."""
    from .definitions import defs

    return defs.resolve_job_def("lookups")


def executor_name() -> str:
    from .definitions import executor_name as name

    return name()


def run_main_job(run_config: dict, log_level: str = "INFO", stopper: stopping.Stopper | None = None) -> tuple[bool, dict]:
    check_run_settings(run_config.get("ops", {}), steps.settings_of_steps())  # every bad field at once, before any step starts
    with open_instance() as instance:
        if stopper is not None:
            stopper.instance = instance  # from now on a stop marks this process's runs canceled
        try:
            if executor_name() == "celery":
                result, ids = run_partition_celery(instance, run_config, log_level)
            else:
                result, ids = run_partition(instance, run_config, log_level), None
        except Exception as err:
            if not looks_full(err):
                raise
            message = full_disk_message(err)  # Dagster could not record the run's end: marked failed here if it still fits
            return False, {"disk_full": message, **fail_own_runs(instance, message)}
    if not result.success:
        failures = step_failures(result)
        full = next((message for _, message in failures if looks_full(message)), None)
        if full is not None:
            return False, {"run_id": result.run_id, "failures": failures, "disk_full": full_disk_message(full)}
        if not failures and (why := run_failure(result)):
            failures = [("run", why)]
        return False, {"run_id": result.run_id, "failures": failures}
    return True, {"run_id": result.run_id, **(ids or _ids(result))}


def _ids_of(instance: dg.DagsterInstance, partition: str) -> dict:
    """``_ids`` from the handles the workers stored (``output_for_node`` of a job run elsewhere builds an input
    context without the asset, which the IO manager needs)."""
    from .automation import lookups_partitions
    from .resources import HandleIOManager

    manager = HandleIOManager(store=LookupsStore())

    def load(name: str):
        context = dg.build_input_context(asset_key=dg.AssetKey(name), partition_key=partition, asset_partitions_def=lookups_partitions, instance=instance)
        with context:
            return manager.load_input(context)

    return {"model_id": load("model").model_id, "prompt_set_id": load("prompt_set").prompt_set_id}


def _ids(result) -> dict:
    """The model and prompt set a successful run analysed (the summary's keys)."""
    return {"model_id": result.output_for_node("model").model_id, "prompt_set_id": result.output_for_node("prompt_set").prompt_set_id}


def config_error_message(err: dg.DagsterInvalidConfigError) -> str:
    """Dagster's config errors, one line each, without the schema dump it appends."""
    lines = [f"  {error.message.split(' Expected: ')[0]}" for error in err.errors] or [f"  {str(err).splitlines()[0]}"]
    return "Invalid run config:\n" + "\n".join(lines) + "\nFix it (docs/configuration.md lists every setting) and run again."


def fail_own_runs(instance: dg.DagsterInstance, message: str) -> dict:
    """Mark failed this process's unfinished runs, if the instance can still be written (else the next start does):
    with an event in its log, else (no room for one) the run's status alone, a row updated in place. The main
    run's id and whether it is marked: ``{"run_id": ..., "marked": ...}``."""
    outcome: dict = {"run_id": None, "marked": False}
    with suppress(Exception):
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED, tags=owner_tags())):
            if run.job_name == stopping.MAIN_JOB:
                outcome["run_id"] = run.run_id
            try:
                instance.report_run_failed(run, message)
            except Exception:  # noqa: BLE001 - the event log is full; its status may still fit
                event = dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_FAILURE.value, job_name=run.job_name, message=message)
                with suppress(Exception):
                    instance.run_storage.handle_run_event(run.run_id, event)
        if outcome["run_id"]:
            marked = instance.get_run_by_id(outcome["run_id"])
            outcome["marked"] = marked is not None and marked.status == dg.DagsterRunStatus.FAILURE
    return outcome


class _WithoutFullDiskNoise:
    """``sys.stderr`` less Dagster's "Exception while writing logger call to event log: ... database or disk is full"
    (two lines per event it could not record): a full disk is said once, at the end, in one line."""

    NOISE = "Exception while writing logger call to event log"

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if text.startswith(self.NOISE) and looks_full(text):
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _run(args: argparse.Namespace, stopper: stopping.Stopper) -> tuple[bool, dict]:
    """The run and its outcome; a user error, invalid config or a full disk as one message."""
    try:
        return stopper.run(lambda: run_main_job(json.loads(args.run_config), args.log_level, stopper))
    except LookupsError as err:  # refused before any step ran (a bad key, bad settings), or no room for the instance
        return False, ({"disk_full": full_disk_message(err)} if looks_full(err) else {"error": str(err)})
    except dg.DagsterInvalidConfigError as err:
        return False, {"error": config_error_message(err)}
    except Exception as err:
        if not looks_full(err):
            raise  # a bug: its traceback
        return False, {"disk_full": full_disk_message(err)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-config", default="{}", help="Dagster run config as JSON.")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--result", help="Write the run's outcome as JSON here.")
    parser.add_argument("--parent-pid", type=int, help="Stop (as on SIGTERM) when this process, `lookups run`, dies.")
    args = parser.parse_args()
    stopper = stopping.Stopper(args.result).start(args.parent_pid)  # SIGINT, SIGTERM: the run canceled, the process ended
    sys.stderr = _WithoutFullDiskNoise(sys.stderr)
    success, outcome = _run(args, stopper)
    if args.result:
        with open(args.result, "w") as fh:
            json.dump(outcome, fh)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
