"""The one ``Definitions`` object of the code location (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

import os

import dagster as dg

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import celery_settings
from lookups.pipeline.steps import STEPS

from .automation import (
    MAIN_JOB,
    automation_sensor,
    corpus_files,
    lookups_partitions,
    model_weights,
    observe_corpora,
    observe_models,
    publish_successful_runs,
    refresh_schedules,
    run_tags,
    sources_sensor,
)
from .checks import ALL_CHECKS
from .core import build_assets
from .resources import HandleIOManager, LookupsStore, config_classes, settings_file_ops

SOURCES = [model_weights, corpus_files]
#: The steps whose setting is a partition key, not run config (these fields of older config files move there):
#: ``{"model": "name", "corpus": "source"}``.
KEY_FIELDS = {name: step.key.setting for name, step in STEPS.items() if step.key is not None}


def split_keys(run_config: dict) -> tuple[dict, dict]:
    """(run config without the model name and corpus source, {"model": name, "corpus": source} found there)."""
    ops = {op: dict(block) for op, block in (run_config.get("ops") or {}).items()}
    keys = {}
    for op, field in KEY_FIELDS.items():
        config = dict((ops.get(op) or {}).get("config") or {})
        if field in config:
            keys[op] = config.pop(field)
            ops[op] = {**ops[op], "config": config}
    return {**run_config, "ops": ops}, keys


def main_job(assets: list) -> dg.UnresolvedAssetJobDefinition:
    """The main job: every asset and check of one (model, corpus) partition, in dependency order."""
    return dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.assets(*assets),
        partitions_def=lookups_partitions,
        tags=run_tags(),
        description="Materialize every lookups asset of one (model, corpus) partition.",
    )


def celery_executor() -> dg.ExecutorDefinition:
    """Dagster's Celery executor on the broker and backend of the settings (pipeline/config.py:celery_settings),
    as every worker reads them."""
    from dagster_celery import celery_executor as executor_def

    return executor_def.configured(celery_settings(), name="celery")


def k8s_executor() -> dg.ExecutorDefinition:
    """Dagster's Kubernetes step executor: each step a pod of its own, a model step's with its GPUs (core.op_tags);
    it needs the instance's ``K8sRunLauncher`` (deploy/kubernetes/dagster.yaml)."""
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as err:
        raise LookupsError(f"LOOKUPS_EXECUTOR=k8s needs dagster-k8s: pip install -e '.[k8s]' in the image ({err}).") from None
    return k8s_job_executor


#: How a run's steps execute (``LOOKUPS_EXECUTOR``): each in its own process (Dagster's default; a step's
#: failure cannot take the others down), all in the run's one process (faster to start: one torch import), or
#: each as a Celery task taken by a worker (``lookups worker``, maybe on another machine: docs/workers.md), or
#: each as a Kubernetes pod (docs/operations.md, "Scale-out").
EXECUTOR_ENV = "LOOKUPS_EXECUTOR"
EXECUTORS = {
    "multiprocess": lambda: dg.multiprocess_executor, "in_process": lambda: dg.in_process_executor, "celery": celery_executor,
    "k8s": k8s_executor,
}


def executor_name() -> str:
    """The executor ``LOOKUPS_EXECUTOR`` names (default: multiprocess); an unknown name is a clear error."""
    name = os.environ.get(EXECUTOR_ENV) or "multiprocess"
    if name not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={name!r} is not an executor: use one of {', '.join(EXECUTORS)}.")
    return name


def executor() -> dg.ExecutorDefinition:
    return EXECUTORS[executor_name()]()


def build_definitions(assets: list | None = None, settings: dict | None = None) -> dg.Definitions:
    """The code location's definitions. ``settings``: the settings file's ops (``settings_file_ops()``), the
    defaults of every run's config; ``assets`` replaces the lookups assets (e.g. with other code versions)."""
    assets = assets or build_assets(config_classes(settings))
    store = LookupsStore()
    return dg.Definitions(
        assets=[*SOURCES, *assets],
        asset_checks=ALL_CHECKS,
        jobs=[main_job(assets), observe_models, observe_corpora],
        schedules=refresh_schedules(),
        sensors=[automation_sensor, sources_sensor, publish_successful_runs],
        resources={"store": store, "io_manager": HandleIOManager(store=store)},
        executor=executor(),
    )


#: The deployment's assets and definitions, their run config defaulting to the settings file named by
#: $LOOKUPS_RUN_CONFIG (if any).
ALL_ASSETS = build_assets(config_classes(settings_file_ops()))
defs = build_definitions(ALL_ASSETS)
