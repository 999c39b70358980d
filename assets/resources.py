"""Dagster resources and run-config classes: the pipeline's settings, exposed to the launchpad."""

from __future__ import annotations

import dagster as dg

from lookups.pipeline.config import (
    AblationSettings,
    AtlasSettings,
    AttributionSettings,
    CatalogSettings,
    CorpusReadSettings,
    ExemplarSettings,
    ExplanationSettings,
    HeadScoreSettings,
    ModelRunSettings,
    PromptSetSettings,
    ScoringSettings,
    database_path,
)
from lookups.pipeline.store import Store


class LookupsStore(dg.ConfigurableResource):
    """The DuckDB file every asset writes to (default: ``$LOOKUPS_DATA_DIR/lookups.duckdb``)."""

    database: str = ""

    def store(self) -> Store:
        return Store(self.database or database_path())


class ModelConfig(dg.Config, ModelRunSettings):
    """How the model runs; which model is the partition's `model` key."""


class CatalogConfig(dg.Config, CatalogSettings):
    """Next-token neuron selection (DESIGN step 1)."""


class CorpusConfig(dg.Config, CorpusReadSettings):
    """How the documents are read; where from is the partition's `prompt_set` key."""


class PromptSetConfig(dg.Config, PromptSetSettings):
    """How documents become a prompt set: passages, slice, splits."""


class ExemplarConfig(dg.Config, ExemplarSettings):
    """Max-activating prompts and truncation (DESIGN steps 2-3)."""


class AttributionConfig(dg.Config, AttributionSettings):
    """Head attribution and the active-head rule (DESIGN steps 4-5)."""


class HeadScoreConfig(dg.Config, HeadScoreSettings):
    """Which (neuron, head) pairs are consistent (DESIGN step 5)."""


class AblationConfig(dg.Config, AblationSettings):
    """Zero-ablation of each consistent pair's head (DESIGN step 8)."""


class AtlasConfig(dg.Config, AtlasSettings):
    """The static HTML atlas."""


class ExplanationConfig(dg.Config, ExplanationSettings):
    """LLM explanations of consistent pairs (DESIGN step 6). The endpoint, model and key of the openai backend
    come from the environment only (LOOKUPS_LLM_BASE_URL, LOOKUPS_LLM_MODEL, LOOKUPS_LLM_API_KEY)."""


class ScoringConfig(dg.Config, ScoringSettings):
    """Scoring explanations on held-out prompts, with baselines (DESIGN step 7)."""
