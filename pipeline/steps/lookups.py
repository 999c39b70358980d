"""The look-up steps on one (model, prompt set): what each consistent pair's head reads (its attribution split by
source position), and the counterfactual test that the token it reads drives the neuron."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from lookups.pipeline.config import InterventionSettings, LookupSettings, result_settings
from lookups.pipeline.inputs import architecture, models
from lookups.pipeline.llm.pairs import pair_ids
from lookups.pipeline.science import counterfactual, lookups
from lookups.pipeline.steps.base import (
    Computed,
    ExplanationsHandle,
    HeadScoresHandle,
    InterventionsHandle,
    LookupsHandle,
    ModelHandle,
    PhaseProgress,
    StepResult,
    Yield,
    run_step,
)
from lookups.pipeline.store.store import Store


def _token_texts(tokenizer, ids: np.ndarray) -> np.ndarray:
    """Each id decoded on its own (what the position shows), decoded once per distinct id."""
    unique, inverse = np.unique(ids, return_inverse=True)
    return np.asarray([tokenizer.decode([int(i)]) for i in unique], dtype=object)[inverse]


def run_lookups(
    model: ModelHandle, scores: HeadScoresHandle, settings: LookupSettings, store: Store, progress: PhaseProgress | None = None
) -> StepResult:
    keys = scores.keys

    def compute() -> Computed:
        rows = store.read("lookup_prompts", **keys)
        frame = pd.DataFrame(columns=[*lookups.LOOKUP_COLUMNS, "token"])
        stats = {"lookup_rows": 0, "pairs": 0}
        if len(rows):
            arch = architecture.load_architecture(model.local_dir, model.device)
            tokenizer = models.load_bridge(model.local_dir, "cpu").tokenizer
            pad_id = models.pad_token_id(tokenizer, model.facts["bos_token_id"])
            result = lookups.head_lookups(arch, rows, model.facts["bos_token_id"], settings.batch_tokens, pad_id, progress)
            frame = result.rows.assign(token=_token_texts(tokenizer, result.rows["token_id"].to_numpy()))
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


def run_interventions(
    model: ModelHandle, looked_up: LookupsHandle, explained: ExplanationsHandle, settings: InterventionSettings, store: Store,
    progress: PhaseProgress | None = None,
) -> StepResult:
    """Replace each tested pair's top looked-up token (and a control position) on its active prompts."""
    keys = looked_up.keys
    # Which pairs is part of the fingerprint (not the explanations' data version: a new template changes no pair).
    chosen = store.read("explained_pairs", **keys) if settings.pairs == "explained" else None
    ids = pair_ids(chosen) if chosen is not None else ["-"]

    def compute() -> Computed:
        started = time.perf_counter()
        prompts = store.read("intervention_prompts", **keys, pairs=ids, all_pairs=settings.pairs == "all")
        frame = pd.DataFrame(columns=counterfactual.INTERVENTION_COLUMNS)
        if len(prompts):
            arch = architecture.load_architecture(model.local_dir, model.device)
            tokenizer = models.load_bridge(model.local_dir, "cpu").tokenizer
            bos_id = model.facts["bos_token_id"]
            special = {bos_id, *map(int, tokenizer.all_special_ids)}
            if settings.strategy == "unigram":
                substitutes = counterfactual.Substitutes.unigram(store.read("prompt_token_counts", **keys), special)
            else:
                substitutes = counterfactual.Substitutes.uniform(int(arch.model.config.vocab_size), special)
            variants = counterfactual.plan_variants(prompts, substitutes, settings.substitutes, settings.seed)
            pad_id = models.pad_token_id(tokenizer, bos_id)
            frame = counterfactual.run_interventions(arch, variants, bos_id, settings.batch_tokens, pad_id, progress)
        tests = counterfactual.pair_tests(frame, settings.fdr)
        stats = counterfactual.summary(tests, frame, time.perf_counter() - started)
        return Computed([("lookup_interventions", keys, frame), ("lookup_tests", keys, tests)], stats)

    def handle(data_version: str, stats: dict) -> InterventionsHandle:
        return InterventionsHandle(data_version=data_version, stats=stats, **keys, fdr=settings.fdr)

    fingerprint = (looked_up.data_version, tuple(ids), result_settings(settings))
    yields = Yield(
        "intervention_rows", "interventions", "the explanations settings (pairs_per_neuron, max_pairs) or lookup_interventions.pairs",
        inputs_empty=not looked_up.stats.get("lookup_rows") or (chosen is not None and not len(chosen)),
    )
    return run_step(store, "lookup_interventions", looked_up.scope, fingerprint, compute, handle, yields=yields)
