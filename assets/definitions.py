"""The one ``Definitions`` object of the code location (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

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



def default_run_config() -> dict | None:
    """The run config the launchpad starts from: the YAML file named by ``LOOKUPS_RUN_CONFIG`` (set by
    ``lookups ui --config FILE``), else none (every setting at its default)."""
    path = os.environ.get("LOOKUPS_RUN_CONFIG")
    if not path:
        return None
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    return {"ops": loaded.get("ops", loaded)}


#: The main job: every asset and check, in dependency order.
lookups_job = dg.define_asset_job(
    "lookups", selection=dg.AssetSelection.all(), description="Materialize every lookups asset.", config=default_run_config()
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[lookups_job],
    resources={"store": LookupsStore()},
)
