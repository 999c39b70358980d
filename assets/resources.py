"""Dagster resources and run-config classes: the pipeline's settings, exposed to the launchpad."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import dagster as dg

from lookups.pipeline.common.files import write_atomically
from lookups.pipeline.config import (
    AblationSettings,
    AtlasSettings,
    AttributionSettings,
    CatalogSettings,
    CorpusReadSettings,
    ExemplarSettings,
    ExplanationSettings,
    HeadScoreSettings,
    InterventionSettings,
    LookupSettings,
    ModelRunSettings,
    PromptSetSettings,
    ScoringSettings,
    check_run_settings,
    data_dir,
    database_path,
    load_settings_file,
)
from lookups.pipeline.store.store import Store


class LookupsStore(dg.ConfigurableResource):
    """The store every asset writes to: Parquet files beside the views file ``database`` (default: ``$LOOKUPS_DATA_DIR/lookups.duckdb``)."""

    database: str = ""

    def store(self) -> Store:
        return Store(self.database or database_path())


class HandleIOManager(dg.ConfigurableIOManager):
    """The assets' outputs are small handles (ids, data versions, stats; the rows live in the store),
    pickled under ``<data>/handles/<asset>/<hash of the partition key>.pkl``. Partition keys are paths and
    names of any shape, so they never become file paths themselves."""

    folder: str = ""

    def _path(self, asset_key: dg.AssetKey, partition: str | None) -> Path:
        root = Path(self.folder) if self.folder else data_dir() / "handles"
        name = hashlib.sha256(str(partition).encode()).hexdigest()[:24] if partition is not None else "unpartitioned"
        return root / "__".join(asset_key.path) / f"{name}.pkl"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        path = self._path(context.asset_key, context.asset_partition_key if context.has_asset_partitions else None)
        write_atomically(path, pickle.dumps(obj))

    def load_input(self, context: dg.InputContext):
        partition = context.asset_partition_key if context.has_asset_partitions else None
        path = self._path(context.asset_key, partition)
        if not path.exists():
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} has not been materialized for partition {partition}: materialize it first "
                "(select it too, or run `lookups run` for this model and corpus).",
                allow_retries=False,
            )
        return pickle.loads(path.read_bytes())


class ModelConfig(dg.Config, ModelRunSettings):
    """How the model runs; which model is the partition's `model` key."""


class CatalogConfig(dg.Config, CatalogSettings):
    """Next-token neuron selection (docs/method.md, step 1)."""


class CorpusConfig(dg.Config, CorpusReadSettings):
    """How the documents are read; where from is the partition's `prompt_set` key."""


class PromptSetConfig(dg.Config, PromptSetSettings):
    """How documents become a prompt set: passages, slice, splits."""


class ExemplarConfig(dg.Config, ExemplarSettings):
    """Max-activating prompts and truncation (docs/method.md, steps 2-3)."""


class AttributionConfig(dg.Config, AttributionSettings):
    """Head attribution and the active-head rule (docs/method.md, steps 4-5)."""


class HeadScoreConfig(dg.Config, HeadScoreSettings):
    """Which (neuron, head) pairs are consistent (docs/method.md, step 5)."""


class AblationConfig(dg.Config, AblationSettings):
    """Zero-ablation of each consistent pair's head (docs/method.md, step 8)."""


class LookupConfig(dg.Config, LookupSettings):
    """What each consistent pair's head reads, by source position (docs/method.md, "Look-ups")."""


class InterventionConfig(dg.Config, InterventionSettings):
    """The counterfactual test of each look-up (docs/method.md, "Look-ups")."""


class AtlasConfig(dg.Config, AtlasSettings):
    """The static HTML atlas."""


class ExplanationConfig(dg.Config, ExplanationSettings):
    """LLM explanations of consistent pairs (docs/method.md, step 6). The endpoint, model and key of the openai backend
    come from the environment only (LOOKUPS_LLM_BASE_URL, LOOKUPS_LLM_MODEL, LOOKUPS_LLM_API_KEY)."""


class ScoringConfig(dg.Config, ScoringSettings):
    """Scoring explanations on held-out prompts, with baselines (docs/method.md, step 7)."""


# ---------------------------------------------------------------- settings file

#: The settings file (YAML run config, `lookups ui --config FILE`): its values become the defaults of the
#: config classes, so every run of the deployment uses them: launched from the UI, by the automation
#: sensor, by the schedule. A run's own config still overrides them.
SETTINGS_FILE_ENV = "LOOKUPS_RUN_CONFIG"
#: The run-config class of each asset.
CONFIG_OF_ASSET = {
    "model": ModelConfig, "neuron_catalog": CatalogConfig, "corpus": CorpusConfig, "prompt_set": PromptSetConfig,
    "neuron_exemplars": ExemplarConfig, "head_attributions": AttributionConfig, "head_neuron_scores": HeadScoreConfig,
    "head_ablations": AblationConfig, "head_lookups": LookupConfig, "lookup_interventions": InterventionConfig,
    "atlas_report": AtlasConfig, "explanations": ExplanationConfig, "explanation_scores": ScoringConfig,
}


def settings_file_ops(path: str | None = None) -> dict:
    """The ``ops`` of the settings file (``path``, default ``$LOOKUPS_RUN_CONFIG``; none: no settings), without
    the model name and corpus source (those are partition keys)."""
    path = path or os.environ.get(SETTINGS_FILE_ENV)
    if not path:
        return {}
    ops = load_settings_file(path, f"{SETTINGS_FILE_ENV}=")
    check_run_settings(ops, f"the settings file {SETTINGS_FILE_ENV}={path}")
    out = {}
    for op, block in ops.items():
        values = dict((block or {}).get("config") or {})
        values.pop({"model": "name", "corpus": "source"}.get(op, ""), None)
        out[op] = values
    return out


def _with_defaults(cls: type, values: dict) -> type:
    """``cls`` with the given field defaults (validated: an unknown field or a bad value fails at load)."""
    if not values:
        return cls
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no setting {', '.join(unknown)} (settings file {SETTINGS_FILE_ENV}).")
    cls.model_validate(values)
    import pydantic

    fields = {
        name: (
            cls.model_fields[name].annotation,
            pydantic.Field(value, description=cls.model_fields[name].description, json_schema_extra=cls.model_fields[name].json_schema_extra),
        )
        for name, value in values.items()
    }
    return pydantic.create_model(cls.__name__, __base__=cls, __doc__=cls.__doc__, __module__=cls.__module__, **fields)


def config_classes(settings: dict | None = None) -> dict[str, type]:
    """Every run-config class by name, with the defaults of ``settings`` (``settings_file_ops()``)."""
    settings = settings or {}
    return {cls.__name__: _with_defaults(cls, settings.get(asset, {})) for asset, cls in CONFIG_OF_ASSET.items()}
