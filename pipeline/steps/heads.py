"""The steps on one (model, prompt set): each neuron's exemplars (max-activating, truncated prompts), every
head's attribution on them, the per-pair scores and consistent flag, and the ablation of consistent heads."""

from __future__ import annotations

import pandas as pd

from lookups.pipeline.config import AblationSettings, AttributionSettings, ExemplarSettings, HeadScoreSettings, result_settings
from lookups.pipeline.inputs import architecture, models
from lookups.pipeline.science import ablation, attribution, exemplars, head_scores
from lookups.pipeline.steps.base import (
    AblationsHandle,
    AttributionsHandle,
    CatalogHandle,
    Computed,
    ExemplarsHandle,
    HeadScoresHandle,
    ModelHandle,
    PhaseProgress,
    PromptSetHandle,
    StepResult,
    Yield,
    partition_scope,
    run_step,
)
from lookups.pipeline.store.store import Store


def run_exemplars(
    model: ModelHandle, catalog: CatalogHandle, prompt_set: PromptSetHandle, settings: ExemplarSettings, store: Store,
    progress: PhaseProgress | None = None,
) -> StepResult:
    keys = {"model_id": model.model_id, "prompt_set_id": prompt_set.prompt_set_id}

    def compute() -> Computed:
        neurons = store.read("exemplar_neurons", model_id=model.model_id)
        documents = store.read("prompt_set_documents", prompt_set_id=prompt_set.prompt_set_id)
        bridge = models.load_bridge(model.local_dir, model.device)
        activation_model = models.load_activation_model(model.local_dir, model.device)
        frame, stats = exemplars.find_exemplars(bridge, activation_model, neurons, documents, settings, model.facts["bos_token_id"], progress)
        return Computed([("neuron_exemplars", keys, frame)], {**stats, "exemplars": len(frame)})

    def handle(data_version: str, stats: dict) -> ExemplarsHandle:
        return ExemplarsHandle(
            data_version=data_version, stats=stats, **keys, act_ratio=settings.act_ratio, max_prompt_tokens=settings.max_prompt_tokens
        )

    fingerprint = (catalog.data_version, prompt_set.data_version, result_settings(settings))
    yields = Yield("exemplars", "exemplars", "the neuron_exemplars settings (act_ratio, max_prompt_tokens, top_k)")
    return run_step(store, "neuron_exemplars", partition_scope(**keys), fingerprint, compute, handle, yields=yields)


def run_attributions(
    model: ModelHandle, exemplars_handle: ExemplarsHandle, settings: AttributionSettings, store: Store, progress: PhaseProgress | None = None
) -> StepResult:
    keys = exemplars_handle.keys

    def compute() -> Computed:
        prompts = store.read("exemplar_prompts", **keys)
        arch = architecture.load_architecture(model.local_dir, model.device)
        result = attribution.attribute_exemplars(arch, prompts, model.facts["bos_token_id"], settings, progress)
        return Computed([("head_attributions", keys, result.heads), ("exemplar_decompositions", keys, result.totals)], result.stats)

    def handle(data_version: str, stats: dict) -> AttributionsHandle:
        return AttributionsHandle(data_version=data_version, stats=stats, **keys, identity_tolerance=settings.identity_tolerance)

    fingerprint = (exemplars_handle.data_version, result_settings(settings))
    yields = Yield("head_rows", "head attributions", "the neuron_exemplars settings", inputs_empty=exemplars_handle.stats.get("exemplars") == 0)
    return run_step(store, "head_attributions", exemplars_handle.scope, fingerprint, compute, handle, yields=yields)


def run_head_scores(attributions: AttributionsHandle, settings: HeadScoreSettings, store: Store) -> StepResult:
    keys = attributions.keys

    def compute() -> Computed:
        heads = store.read("head_attribution_scores", **keys)
        random_neurons = store.read("random_baseline_neurons", model_id=attributions.model_id)
        frame = head_scores.head_neuron_scores(heads, settings, set(map(tuple, random_neurons.values.tolist())))
        return Computed([("head_neuron_scores", keys, frame)], head_scores.summary(frame))

    def handle(data_version: str, stats: dict) -> HeadScoresHandle:
        return HeadScoresHandle(data_version=data_version, stats=stats, **keys)

    fingerprint = (attributions.data_version, result_settings(settings))
    yields = Yield(
        "consistent_pairs", "consistent pairs", "the head_neuron_scores settings (consistent_min, consistent_max, min_prompts)",
        inputs_empty=attributions.stats.get("head_rows") == 0,
    )
    return run_step(store, "head_neuron_scores", attributions.scope, fingerprint, compute, handle, yields=yields)


def run_ablations(
    model: ModelHandle, scores: HeadScoresHandle, settings: AblationSettings, store: Store, progress: PhaseProgress | None = None
) -> StepResult:
    keys = scores.keys

    def compute() -> Computed:
        rows = store.read("ablation_prompts", **keys, splits=settings.splits)
        frame = pd.DataFrame(columns=ablation.ABLATION_COLUMNS)
        if len(rows):
            bridge = models.load_bridge(model.local_dir, model.device)
            ablator = ablation.HeadAblator(architecture.load_architecture(model.local_dir, model.device))
            pad_id = models.pad_token_id(bridge.tokenizer, model.facts["bos_token_id"])
            frame = ablation.ablate_pairs(ablator, rows, model.facts["bos_token_id"], pad_id, settings.batch_tokens, progress)
        tests = ablation.ks_summary(frame)
        return Computed([("head_ablations", keys, frame), ("ablation_tests", keys, tests)], ablation.summary(frame, tests))

    def handle(data_version: str, stats: dict) -> AblationsHandle:
        return AblationsHandle(data_version=data_version, stats=stats, **keys)

    fingerprint = (scores.data_version, result_settings(settings))
    yields = Yield("rows", "ablation rows", "the head_ablations settings (splits)", inputs_empty=scores.stats.get("consistent_pairs") == 0)
    return run_step(store, "head_ablations", scores.scope, fingerprint, compute, handle, yields=yields)
