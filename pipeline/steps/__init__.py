"""The pipeline's steps as plain functions over the store, one per Dagster asset, over one mechanism
(``base.run_step``: skip when nothing changed, else load -> compute -> write). The only layer that joins the
science and the store."""

from lookups.pipeline.steps.atlas import run_atlas
from lookups.pipeline.steps.base import (
    CODE_VERSIONS,
    AblationsHandle,
    AtlasHandle,
    AttributionsHandle,
    CatalogHandle,
    CorpusHandle,
    ExemplarsHandle,
    ExplanationScoresHandle,
    ExplanationsHandle,
    Handle,
    HeadScoresHandle,
    InterventionsHandle,
    LookupsHandle,
    ModelHandle,
    PromptSetHandle,
    StepResult,
    asset_code_version,
)
from lookups.pipeline.steps.explanations import run_explanation_scores, run_explanations
from lookups.pipeline.steps.heads import run_ablations, run_attributions, run_exemplars, run_head_scores
from lookups.pipeline.steps.inputs import run_catalog, run_corpus, run_model, run_prompt_set
from lookups.pipeline.steps.lookups import run_interventions, run_lookups

__all__ = [
    "CODE_VERSIONS", "AblationsHandle", "AtlasHandle", "AttributionsHandle", "CatalogHandle", "CorpusHandle", "ExemplarsHandle",
    "ExplanationScoresHandle", "ExplanationsHandle", "Handle", "HeadScoresHandle", "InterventionsHandle", "LookupsHandle", "ModelHandle",
    "PromptSetHandle", "StepResult",
    "asset_code_version", "run_ablations", "run_atlas", "run_attributions", "run_catalog", "run_corpus", "run_exemplars",
    "run_explanation_scores", "run_explanations", "run_head_scores", "run_interventions", "run_lookups", "run_model", "run_prompt_set",
]
