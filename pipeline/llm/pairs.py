"""Which pairs are explained, and the prompts each explanation sees: active and inactive explain prompts,
held-out prompts with their ground truth (whether the head was active)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from lookups.pipeline.config import ExplanationSettings
from lookups.pipeline.llm.ledger import cache_key

PAIR_KEYS = ["layer", "neuron", "head_layer", "head"]


@dataclass
class Pair:
    cohort: str
    layer: int
    neuron: int
    head_layer: int
    head: int
    token: str
    active: list[str] = field(default_factory=list)  # explain split, prompt texts
    inactive: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    heldout_truth: list[bool] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.layer, self.neuron, self.head_layer, self.head)


def choose_pairs(scores: pd.DataFrame, settings: ExplanationSettings) -> pd.DataFrame:
    """scores: consistent ``head_neuron_scores`` rows. Each neuron's strongest heads (by mean attribution), at
    most ``pairs_per_neuron``; then at most ``max_pairs`` per cohort, strongest first."""
    ranked = scores.sort_values(["cohort", "layer", "neuron", "mean_score"], ascending=[True, True, True, False])
    chosen = ranked.groupby(["cohort", "layer", "neuron"], sort=False).head(settings.pairs_per_neuron)
    if settings.max_pairs is not None:
        chosen = chosen.sort_values("mean_score", ascending=False).groupby("cohort", sort=False).head(settings.max_pairs)
    return chosen.sort_values(["cohort", *PAIR_KEYS]).reset_index(drop=True)


def build_pairs(chosen: pd.DataFrame, prompts: pd.DataFrame) -> list[Pair]:
    """chosen: pairs (cohort, layer, neuron, head_layer, head, token). prompts: per (pair, prompt) the split,
    the active flag, the prompt text and exemplar rank, for the chosen pairs' neurons."""
    by_pair = {k: g for k, g in prompts.groupby(PAIR_KEYS, sort=False)}
    out = []
    for row in chosen.itertuples():
        key = (row.layer, row.neuron, row.head_layer, row.head)
        pair = Pair(row.cohort, *map(int, key), token=row.token)
        rows = by_pair.get(key)
        if rows is not None:
            rows = rows.sort_values(["split", "rank"])
            explain = rows[rows["split"] == "explain"]
            heldout = rows[rows["split"] == "heldout"]
            pair.active = explain.loc[explain["active"], "prompt_text"].tolist()
            pair.inactive = explain.loc[~explain["active"], "prompt_text"].tolist()
            pair.heldout = heldout["prompt_text"].tolist()
            pair.heldout_truth = heldout["active"].astype(bool).tolist()
        out.append(pair)
    return out


def explanation_id(model_id: str, prompt_set_id: str, pair: Pair, explainer: str, template_version: str) -> str:
    return cache_key("explanation", model_id, prompt_set_id, pair.key, explainer, template_version)
