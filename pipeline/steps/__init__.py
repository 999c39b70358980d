"""The pipeline's steps as plain functions over the store, one per Dagster asset, over one mechanism
(``base.run_step``: skip when nothing changed, else load -> compute -> write), each declared once in the step
registry (``registry.STEPS``, rows beside their code). The only layer that joins the science and the store."""

# Imported in the graph's order: each module registers its steps, after the steps they take.
from lookups.pipeline.steps.inputs import run_catalog, run_corpus, run_model, run_prompt_set  # isort: skip
from lookups.pipeline.steps.heads import run_ablations, run_attributions, run_exemplars, run_head_scores  # isort: skip
from lookups.pipeline.steps.lookups import run_interventions, run_knockouts, run_lookups, run_qk  # isort: skip
from lookups.pipeline.steps.explanations import run_explanation_scores, run_explanations  # isort: skip
from lookups.pipeline.steps.atlas import run_atlas  # isort: skip
from lookups.pipeline.steps.base import (
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
    KnockoutsHandle,
    LookupsHandle,
    ModelHandle,
    PromptSetHandle,
    QKHandle,
    StepResult,
    code_version,
)
from lookups.pipeline.steps.registry import STEPS, Check, Outcome, PartitionKey, Preview, Step


def settings_of_steps() -> dict:
    """Each step's settings class, by step name: what a run's config may set (``config.check_run_settings``)."""
    return {name: step.settings for name, step in STEPS.items()}


__all__ = [
    "STEPS", "AblationsHandle", "AtlasHandle", "AttributionsHandle", "CatalogHandle", "Check", "CorpusHandle", "ExemplarsHandle",
    "ExplanationScoresHandle", "ExplanationsHandle", "Handle", "HeadScoresHandle", "InterventionsHandle", "KnockoutsHandle", "LookupsHandle",
    "ModelHandle", "Outcome", "PartitionKey", "Preview", "PromptSetHandle", "QKHandle", "Step", "StepResult",
    "code_version", "run_ablations", "run_atlas", "run_attributions", "run_catalog", "run_corpus", "run_exemplars",
    "run_explanation_scores", "run_explanations", "run_head_scores", "run_interventions", "run_knockouts", "run_lookups", "run_model",
    "run_prompt_set", "run_qk", "settings_of_steps",
]
