"""The one ``Definitions`` object of the code location (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

from .automation import (
    automation_sensor,
    corpus_files,
    corpus_folder_sensor,
    lookups_partitions,
    model_weights,
    observe_corpora,
    observe_models,
    refresh_schedules,
)
from .checks import ALL_CHECKS
from .core import (
    atlas_report,
    corpus,
    explanation_scores,
    explanations,
    head_ablations,
    head_attributions,
    head_neuron_scores,
    model,
    neuron_catalog,
    neuron_exemplars,
    prompt_set,
)
from .resources import LookupsStore

ALL_ASSETS = [
    model, neuron_catalog, corpus, prompt_set, neuron_exemplars, head_attributions, head_neuron_scores, head_ablations,
    explanations, explanation_scores, atlas_report,
]
SOURCES = [model_weights, corpus_files]
#: Which model and corpus are partition keys, not run config (these fields of older config files move there).
KEY_FIELDS = {"model": "name", "corpus": "source"}



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


def default_run_config() -> dict | None:
    """The run config the launchpad starts from: the YAML file named by ``LOOKUPS_RUN_CONFIG`` (set by
    ``lookups ui --config FILE``), else none (every setting at its default). A model name or corpus source
    in it is a partition key, picked in the materialize dialog, so it is left out here."""
    path = os.environ.get("LOOKUPS_RUN_CONFIG")
    if not path:
        return None
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    return split_keys({"ops": loaded.get("ops", loaded)})[0]


#: The main job: every asset and check of one (model, prompt_set) partition, in dependency order.
lookups_job = dg.define_asset_job(
    "lookups",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    partitions_def=lookups_partitions,
    description="Materialize every lookups asset of one (model, prompt_set) partition.",
    config=default_run_config(),
)

defs = dg.Definitions(
    assets=[*SOURCES, *ALL_ASSETS],
    asset_checks=ALL_CHECKS,
    jobs=[lookups_job, observe_models, observe_corpora],
    schedules=refresh_schedules(),
    sensors=[automation_sensor, corpus_folder_sensor],
    resources={"store": LookupsStore()},
)
