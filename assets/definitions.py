"""The one ``Definitions`` object of the code location (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations


import dagster as dg

from .automation import (
    automation_sensor,
    corpus_files,
    lookups_partitions,
    model_weights,
    observe_corpora,
    observe_models,
    refresh_schedules,
    run_tags,
    sources_sensor,
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
from .resources import HandleIOManager, LookupsStore

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


#: The main job: every asset and check of one (model, prompt_set) partition, in dependency order.
lookups_job = dg.define_asset_job(
    "lookups",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    partitions_def=lookups_partitions,
    tags=run_tags(),
    description="Materialize every lookups asset of one (model, prompt_set) partition.",
)

def build_definitions(assets: list | None = None) -> dg.Definitions:
    """The code location's definitions (``assets`` replaces the lookups assets, e.g. with other code versions)."""
    return dg.Definitions(
        assets=[*SOURCES, *(assets or ALL_ASSETS)],
        asset_checks=ALL_CHECKS,
        jobs=[lookups_job, observe_models, observe_corpora],
        schedules=refresh_schedules(),
        sensors=[automation_sensor, sources_sensor],
        resources={"store": LookupsStore(), "io_manager": HandleIOManager()},
    )


defs = build_definitions()
