"""The steps on one (model, prompt set): each neuron's exemplars (max-activating, truncated prompts), every
head's attribution on them, the per-pair scores and consistent flag, and the ablation of consistent heads."""

from __future__ import annotations

import pandas as pd

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import AblationSettings, AttributionSettings, ExemplarSettings, HeadScoreSettings, result_settings
from lookups.pipeline.science import ablation, attribution, exemplars, head_scores
from lookups.pipeline.steps import checks
from lookups.pipeline.steps.base import (
    AblationsHandle,
    AttributionsHandle,
    CatalogHandle,
    Computed,
    ExemplarsHandle,
    HeadScoresHandle,
    ModelHandle,
    PromptSetHandle,
    StepResult,
    Yield,
    partition_scope,
    run_step,
)
from lookups.pipeline.steps.registry import Preview, Step, register
from lookups.pipeline.store.store import Store


def run_exemplars(
    model: ModelHandle, neuron_catalog: CatalogHandle, prompt_set: PromptSetHandle, settings: ExemplarSettings, store: Store,
    progress: Progress | None = None,
) -> StepResult:
    keys = {"model_id": model.model_id, "prompt_set_id": prompt_set.prompt_set_id}

    def compute() -> Computed:
        neurons = store.read("exemplar_neurons", model_id=model.model_id)
        documents = store.read("prompt_set_documents", prompt_set_id=prompt_set.prompt_set_id)
        frame, stats = exemplars.find_exemplars(model.runtime(), neurons, documents, settings, progress)
        return Computed([("neuron_exemplars", keys, frame)], {**stats, "exemplars": len(frame)})

    def handle(data_version: str, stats: dict) -> ExemplarsHandle:
        return ExemplarsHandle(
            data_version=data_version, stats=stats, **keys, act_ratio=settings.act_ratio, max_prompt_tokens=settings.max_prompt_tokens
        )

    fingerprint = (neuron_catalog.data_version, prompt_set.data_version, result_settings(settings))
    yields = Yield("exemplars", "exemplars", "the neuron_exemplars settings (act_ratio, max_prompt_tokens, top_k)")
    return run_step(store, "neuron_exemplars", partition_scope(**keys), fingerprint, compute, handle, yields=yields)


def run_attributions(
    model: ModelHandle, neuron_exemplars: ExemplarsHandle, settings: AttributionSettings, store: Store, progress: Progress | None = None
) -> StepResult:
    keys = neuron_exemplars.keys

    def compute() -> Computed:
        prompts = store.read("exemplar_prompts", **keys)
        runtime = model.runtime()
        result = attribution.attribute_exemplars(runtime.arch, prompts, runtime.bos_id, settings, progress, runtime.pad_id)
        return Computed([("head_attributions", keys, result.heads), ("exemplar_decompositions", keys, result.totals)], result.stats)

    def handle(data_version: str, stats: dict) -> AttributionsHandle:
        return AttributionsHandle(data_version=data_version, stats=stats, **keys, identity_tolerance=settings.identity_tolerance)

    fingerprint = (neuron_exemplars.data_version, result_settings(settings))
    yields = Yield("head_rows", "head attributions", "the neuron_exemplars settings", inputs_empty=neuron_exemplars.stats.get("exemplars") == 0)
    return run_step(store, "head_attributions", neuron_exemplars.scope, fingerprint, compute, handle, yields=yields)


def run_head_scores(head_attributions: AttributionsHandle, settings: HeadScoreSettings, store: Store) -> StepResult:
    attributions = head_attributions
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
    model: ModelHandle, head_neuron_scores: HeadScoresHandle, settings: AblationSettings, store: Store, progress: Progress | None = None
) -> StepResult:
    scores = head_neuron_scores
    keys = scores.keys

    def compute() -> Computed:
        rows = store.read("ablation_prompts", **keys, splits=settings.splits)
        frame = pd.DataFrame(columns=ablation.ABLATION_COLUMNS)
        if len(rows):
            runtime = model.runtime()
            frame = ablation.ablate_pairs(ablation.Intervener(runtime.arch), rows, settings, runtime.bos_id, runtime.pad_id, progress)
        tests = ablation.ks_summary(frame)
        return Computed([("head_ablations", keys, frame), ("ablation_tests", keys, tests)], ablation.summary(frame, tests))

    def handle(data_version: str, stats: dict) -> AblationsHandle:
        return AblationsHandle(data_version=data_version, stats=stats, **keys)

    fingerprint = (scores.data_version, result_settings(settings))
    yields = Yield("rows", "ablation rows", "the head_ablations settings (splits)", inputs_empty=scores.stats.get("consistent_pairs") == 0)
    return run_step(store, "head_ablations", scores.scope, fingerprint, compute, handle, yields=yields)


# ---------------------------------------------------------------- registry rows

NEURON_EXEMPLARS = register(Step(
    name="neuron_exemplars", run=run_exemplars, settings=ExemplarSettings, inputs=("model", "neuron_catalog", "prompt_set"),
    code_version="2",  # 2: documents whose max activation is not positive are not exemplars
    tables=("neuron_exemplars",), checks=(checks.EXEMPLARS_VALID, checks.EXEMPLAR_COVERAGE), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("top exemplars", "preview_top_exemplars", 8),),
    description="Each selected neuron's max-activating documents per split, truncated to the shortest suffix that keeps the activation "
    "(docs/method.md, steps 2-3).",
))
HEAD_ATTRIBUTIONS = register(Step(
    name="head_attributions", run=run_attributions, settings=AttributionSettings, inputs=("model", "neuron_exemplars"),
    code_version="3",  # 2: decomposed on the Hugging Face model from the architecture description; 3: identity relative to its rounding scale
    tables=("head_attributions", "exemplar_decompositions"), checks=(checks.ATTRIBUTION_IDENTITY,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("strongest (neuron, head) attributions", "preview_strongest_attributions", 10),),
    description="Every candidate head's direct contribution to each exemplar's neuron at the prompt's last position, through the layer "
    "norm with its cached scale, and which heads are active (docs/method.md, steps 4-5). Also the per-exemplar decomposition totals in "
    "`exemplar_decompositions`.",
))
HEAD_NEURON_SCORES = register(Step(
    name="head_neuron_scores", run=run_head_scores, settings=HeadScoreSettings, inputs=("head_attributions",),
    code_version="2",  # 2: cohort column (next-token vs random baseline neurons)
    tables=("head_neuron_scores",), checks=(checks.HEAD_SCORES_VALID,), kinds=frozenset({"duckdb"}),
    previews=(
        Preview("heads by layer (consistent pairs)", "preview_heads_by_layer", 40), Preview("strongest consistent pairs", "preview_consistent_pairs", 10),
    ),
    description="Per (neuron, head): mean attribution, active fraction, rank, and the consistent flag (active on 25-75% of the neuron's "
    "explain prompts); held-out active counts as ground truth for scoring explanations.",
))
HEAD_ABLATIONS = register(Step(
    name="head_ablations", run=run_ablations, settings=AblationSettings, inputs=("model", "head_neuron_scores"),
    # 2: probabilities from soft-capped logits; 3: ablated passes resume at the head's layer (equal to fp32 rounding of another batch shape)
    code_version="3",
    tables=("head_ablations", "ablation_tests"), checks=(checks.ABLATIONS_VALID,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("active vs inactive (KS test)", "preview_ablation_comparison", 10),),
    description="Each consistent pair's head zero-ablated on the neuron's prompts: the neuron's activation and its token's probability "
    "before and after; active vs inactive prompts compared with a two-sample KS test (docs/method.md, step 8).",
))
