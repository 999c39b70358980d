"""Run the main job in-process on the persistent Dagster instance, with concise terminal logs.

`lookups run` (pipeline/cli.py, which never imports Dagster) calls this as a subprocess:
``python -m lookups.assets.runner --run-config '<json>' --result out.json``. The run shows in the UI like
any other; the terminal gets one line per event (no stack traces) and, on failure, each failed step's
cause, the message the pipeline raised to say what to fix.
"""

import argparse
import json
import logging
import sys

import dagster as dg

from lookups.pipeline import steps
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import EMBEDDED_CORPUS, EMBEDDED_MODEL, check_run_settings

from .automation import add_partitions
from .instance import open_instance, owner_tags

#: Dagster logs these at DEBUG; the terminal shows them anyway (step boundaries and results).
SHOWN_EVENTS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"}


class _ConciseFilter(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
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
    return job.execute_in_process(
        run_config=_selected(run_config, selection), instance=instance, partition_key=key, raise_on_error=False, tags=owner_tags(), asset_selection=keys,
    )


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
        return result.success, result.run_id


def reconstruct_main_job():
    """The main job as each step's process rebuilds it (``dg.reconstructable`` needs a module-level function)."""
    from .definitions import defs

    return defs.resolve_job_def("lookups")


def run_main_job(run_config: dict, log_level: str = "INFO") -> tuple[bool, dict]:
    check_run_settings(run_config.get("ops", {}), steps.settings_of_steps())  # every bad field at once, before any step starts
    with open_instance() as instance:
        result = run_partition(instance, run_config, log_level)
    if not result.success:
        return False, {"run_id": result.run_id, "failures": step_failures(result)}
    return True, {
        "run_id": result.run_id,
        "model_id": result.output_for_node("model").model_id,
        "prompt_set_id": result.output_for_node("prompt_set").prompt_set_id,
    }


def config_error_message(err: dg.DagsterInvalidConfigError) -> str:
    """Dagster's config errors, one line each, without the schema dump it appends."""
    lines = [f"  {error.message.split(' Expected: ')[0]}" for error in err.errors] or [f"  {str(err).splitlines()[0]}"]
    return "Invalid run config:\n" + "\n".join(lines) + "\nFix it (docs/configuration.md lists every setting) and run again."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-config", default="{}", help="Dagster run config as JSON.")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--result", help="Write the run's outcome as JSON here.")
    args = parser.parse_args()
    try:
        success, outcome = run_main_job(json.loads(args.run_config), args.log_level)
    except LookupsError as err:  # refused before any step ran (a bad key, bad settings)
        success, outcome = False, {"error": str(err)}
    except dg.DagsterInvalidConfigError as err:
        success, outcome = False, {"error": config_error_message(err)}
    if args.result:
        with open(args.result, "w") as fh:
            json.dump(outcome, fh)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
