"""The look-up steps on one (model, prompt set): what each consistent pair's head reads (its attribution split by
source position), and the counterfactual test that the token it reads drives the neuron."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import InterventionSettings, KnockoutSettings, LookupSettings, QKSettings, result_settings
from lookups.pipeline.inputs.runtime import ModelRuntime
from lookups.pipeline.llm.pairs import pair_ids
from lookups.pipeline.science import counterfactual, exemplars, head_reads, knockout, qk_attribution
from lookups.pipeline.steps import checks
from lookups.pipeline.steps.base import (
    Computed,
    HeadScoresHandle,
    InterventionsHandle,
    KnockoutsHandle,
    LookupsHandle,
    ModelHandle,
    QKHandle,
    StepResult,
    Yield,
    run_step,
)
from lookups.pipeline.steps.registry import Preview, Step, register
from lookups.pipeline.store.store import Store


def _token_texts(runtime: ModelRuntime, ids: np.ndarray) -> np.ndarray:
    """Each id decoded on its own (what the position shows), decoded once per distinct id."""
    unique, inverse = np.unique(ids, return_inverse=True)
    return np.asarray(runtime.decode_each(unique), dtype=object)[inverse]


def run_lookups(
    model: ModelHandle, head_neuron_scores: HeadScoresHandle, settings: LookupSettings, store: Store, progress: Progress | None = None
) -> StepResult:
    scores = head_neuron_scores
    keys = scores.keys

    def compute() -> Computed:
        rows = store.read("lookup_prompts", **keys)
        frame = pd.DataFrame(columns=[*head_reads.LOOKUP_COLUMNS, "token"])
        stats = {"lookup_rows": 0, "pairs": 0}
        if len(rows):
            runtime = model.runtime()
            result = head_reads.head_lookups(runtime.arch, rows, settings, runtime.bos_id, runtime.pad_id, progress)
            frame = result.rows.assign(token=_token_texts(runtime, result.rows["token_id"].to_numpy()))
            stats = result.stats
        return Computed([("head_lookups", keys, frame)], stats)

    def handle(data_version: str, stats: dict) -> LookupsHandle:
        return LookupsHandle(
            data_version=data_version, stats=stats, **keys, identity_tolerance=settings.identity_tolerance,
            attribution_tolerance=settings.attribution_tolerance,
        )

    fingerprint = (scores.data_version, result_settings(settings))
    yields = Yield("lookup_rows", "look-up rows", "the head_neuron_scores settings", inputs_empty=scores.no_pairs)
    return run_step(store, "head_lookups", scores.scope, fingerprint, compute, handle, yields=yields)


@dataclass(frozen=True)
class TestedPairs:
    """The pairs a test of the look-ups runs on (``pairs: explained``: those the explanations step wrote, which runs
    first; ``all``: every consistent pair), with what its fingerprint and its empty-result message take from them."""

    chosen: pd.DataFrame | None
    ids: list[str]  # 'layer:neuron:head_layer:head', or ['-'] for all pairs (part of the fingerprint, not the
    # explanations' data version: a new template changes no pair)

    @classmethod
    def read(cls, store: Store, keys: dict, pairs: str) -> TestedPairs:
        chosen = store.read("explained_pairs", **keys) if pairs == "explained" else None
        return cls(chosen, pair_ids(chosen) if chosen is not None else ["-"])

    @property
    def all_pairs(self) -> bool:
        return self.chosen is None

    def fingerprint(self, looked_up: LookupsHandle, settings) -> tuple:
        return (looked_up.data_version, tuple(self.ids), result_settings(settings))

    def yields(self, looked_up: LookupsHandle, counted: str, what: str, step: str) -> Yield:
        return Yield(
            counted, what, f"the explanations settings (pairs_per_neuron, max_pairs) or {step}.pairs",
            inputs_empty=not looked_up.stats.get("lookup_rows") or (self.chosen is not None and not len(self.chosen)),
        )


def run_interventions(
    model: ModelHandle, head_lookups: LookupsHandle, settings: InterventionSettings, store: Store, progress: Progress | None = None,
) -> StepResult:
    """Replace each tested pair's top looked-up token (and a control position) on its active prompts. With
    ``pairs: explained`` the pairs are those the explanations step wrote (it runs first: ``after``)."""
    looked_up = head_lookups
    keys = looked_up.keys
    tested = TestedPairs.read(store, keys, settings.pairs)

    def compute() -> Computed:
        started = time.perf_counter()
        prompts = store.read("intervention_prompts", **keys, pairs=tested.ids, all_pairs=tested.all_pairs)
        frame = pd.DataFrame(columns=counterfactual.INTERVENTION_COLUMNS)
        if len(prompts):
            runtime = model.runtime()
            special = runtime.special_ids()
            if settings.strategy == "unigram":
                substitutes = counterfactual.Substitutes.unigram(store.read("prompt_token_counts", **keys), special)
            else:
                substitutes = counterfactual.Substitutes.uniform(int(runtime.arch.model.config.vocab_size), special)
            variants = counterfactual.plan_variants(prompts, substitutes, settings.substitutes, settings.seed)
            frame = counterfactual.run_interventions(runtime.arch, variants, settings, runtime.bos_id, runtime.pad_id, progress)
        tests = counterfactual.pair_tests(frame, settings.fdr)
        stats = counterfactual.summary(tests, frame, time.perf_counter() - started)
        return Computed([("lookup_interventions", keys, frame), ("lookup_tests", keys, tests)], stats)

    def handle(data_version: str, stats: dict) -> InterventionsHandle:
        return InterventionsHandle(data_version=data_version, stats=stats, **keys, fdr=settings.fdr)

    yields = tested.yields(looked_up, "intervention_rows", "interventions", "lookup_interventions")
    return run_step(store, "lookup_interventions", looked_up.scope, tested.fingerprint(looked_up, settings), compute, handle, yields=yields)


def run_knockouts(
    model: ModelHandle, head_lookups: LookupsHandle, settings: KnockoutSettings, store: Store, progress: Progress | None = None,
) -> StepResult:
    """Block each tested pair's top look-up edge (and two controls) on its active prompts, truncated and, by
    ``settings.untruncated``, on the window each exemplar came from (docs/method.md, "Why the head looks there")."""
    looked_up = head_lookups
    keys = looked_up.keys
    tested = TestedPairs.read(store, keys, settings.pairs)

    def compute() -> Computed:
        started = time.perf_counter()
        prompts = store.read("intervention_prompts", **keys, pairs=tested.ids, all_pairs=tested.all_pairs)
        frame = pd.DataFrame(columns=knockout.KNOCKOUT_COLUMNS)
        if len(prompts):
            runtime = model.runtime()
            if settings.untruncated:
                documents = store.read("prompt_set_documents", prompt_set_id=looked_up.prompt_set_id)
                documents = documents[documents["doc_id"].isin(set(prompts["doc_id"]))]
                tokens = exemplars.tokenize_documents(runtime.tokenizer, documents["text"].tolist())
                prompts = knockout.with_untruncated(prompts, dict(zip(documents["doc_id"], tokens)), settings.max_window_tokens)
            else:
                prompts = prompts.assign(prompt_kind="truncated")
            frame = knockout.knock_out(runtime.arch, prompts, settings, runtime.bos_id, runtime.pad_id, progress)
        tests = knockout.pair_tests(frame, settings.fdr)
        return Computed([("lookup_knockouts", keys, frame), ("knockout_tests", keys, tests)], knockout.summary(tests, frame, started))

    def handle(data_version: str, stats: dict) -> KnockoutsHandle:
        return KnockoutsHandle(data_version=data_version, stats=stats, **keys, fdr=settings.fdr)

    yields = tested.yields(looked_up, "knockout_rows", "knockouts", "lookup_knockouts")
    return run_step(store, "lookup_knockouts", looked_up.scope, tested.fingerprint(looked_up, settings), compute, handle, yields=yields)


def run_qk(model: ModelHandle, head_lookups: LookupsHandle, settings: QKSettings, store: Store, progress: Progress | None = None) -> StepResult:
    """Split each tested pair's looked-up edges' attention scores into query-side and key-side component terms
    (docs/method.md, "Why the head looks there")."""
    looked_up = head_lookups
    keys = looked_up.keys
    tested = TestedPairs.read(store, keys, settings.pairs)

    def compute() -> Computed:
        edges = store.read("qk_edges", **keys, pairs=tested.ids, all_pairs=tested.all_pairs, positions=settings.positions)
        frame = pd.DataFrame(columns=qk_attribution.QK_COLUMNS)
        stats = {"edges": 0, "rows": 0}
        if len(edges):
            runtime = model.runtime()
            result = qk_attribution.qk_attributions(runtime.arch, edges, settings, runtime.bos_id, runtime.pad_id, progress)
            frame, stats = result.rows, result.stats
        return Computed([("qk_attributions", keys, frame)], stats)

    def handle(data_version: str, stats: dict) -> QKHandle:
        return QKHandle(data_version=data_version, stats=stats, **keys, identity_tolerance=settings.identity_tolerance)

    yields = tested.yields(looked_up, "edges", "QK edges", "qk_attributions")
    return run_step(store, "qk_attributions", looked_up.scope, tested.fingerprint(looked_up, settings), compute, handle, yields=yields)


# ---------------------------------------------------------------- registry rows

HEAD_LOOKUPS = register(Step(
    name="head_lookups", run=run_lookups, settings=LookupSettings, inputs=("model", "head_neuron_scores"),
    code_version="2",  # 2: the identity against this pass's own z (rounding scale), the agreement with the attribution apart
    tables=("head_lookups",), checks=(checks.LOOKUPS_IDENTITY,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("what each pair's head reads most", "preview_pair_lookups", 10),),
    description="What each consistent pair's head reads: its attribution split by source position (attention weight x the value at "
    "that position through W_O, the neuron's norm and input), on every prompt of both splits and both cohorts; per pair the tokens "
    "read most, the concentration, and flags for copying, previous-token and BOS heads (docs/method.md, \"Look-ups\").",
))


def _confirmed_shares(result: StepResult) -> dict:
    return {k: v for k, v in result.handle.stats.items() if k.endswith("share_confirmed") and v is not None}


LOOKUP_INTERVENTIONS = register(Step(
    name="lookup_interventions", run=run_interventions, settings=InterventionSettings, inputs=("model", "head_lookups"), after=("explanations",),
    # 1 still: the cached path (settings.path, a tuning setting) equals the full one within fp32 rounding, verdicts unchanged
    code_version="1", tables=("lookup_interventions", "lookup_tests"), checks=(checks.INTERVENTIONS_VALID,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("share of pairs confirmed", "preview_lookup_confirmation", 4),), metadata=_confirmed_shares,
    description="The counterfactual test of each explained pair's look-up: the token its head reads most, and a control position, "
    "replaced by substitutes from the prompt set's unigram distribution on the active prompts; the neuron's activation, the head's "
    "attribution and the token's probability before and after; a paired Wilcoxon test per pair and the share confirmed at a 5% "
    "false discovery rate (Benjamini-Hochberg), against the random-baseline pairs.",
))


LOOKUP_KNOCKOUTS = register(Step(
    name="lookup_knockouts", run=run_knockouts, settings=KnockoutSettings, inputs=("model", "head_lookups"), after=("explanations",),
    code_version="1", tables=("lookup_knockouts", "knockout_tests"), checks=(checks.KNOCKOUTS_VALID,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("share of pairs confirmed by knockout", "preview_knockout_confirmation", 4),), metadata=_confirmed_shares,
    description="The attention knockout of each explained pair's look-up: the edge from the last position to the position its head "
    "reads most blocked in that head only (its other weights renormalised), against the same knockout at a control position of the "
    "head and at the looked-up position in a control head of the layer, on the truncated prompts and the untruncated windows; the "
    "neuron's activation, the head's attribution and the token's probability before and after; one-sided paired Wilcoxon tests and "
    "the share confirmed at a 5% false discovery rate (docs/method.md, \"Why the head looks there\").",
))


def _qk_metadata(result: StepResult) -> dict:
    return {k: v for k, v in result.handle.stats.items() if k.startswith(("identity_max", "attention_max")) or k in ("edges", "qk_seconds")}


QK_ATTRIBUTIONS = register(Step(
    name="qk_attributions", run=run_qk, settings=QKSettings, inputs=("model", "head_lookups"), after=("explanations",),
    code_version="1", tables=("qk_attributions",), checks=(checks.QK_IDENTITY,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("why heads look where they do", "preview_qk_summary", 4),), metadata=_qk_metadata,
    description="Why each explained pair's head looks where it does: the head's pre-softmax score from the last position to each "
    "looked-up position split exactly into (query component, key component) terms, over the token and position embeddings, every "
    "earlier head and MLP and the biases, through the norms with their cached scales, W_Q / W_K, q/k norms and the rotary embedding; per "
    "edge the top query-side, key-side and pair terms (docs/method.md, \"Why the head looks there\").",
))
