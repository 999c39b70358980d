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
    heldout_scores: list[float] = field(default_factory=list)  # the head's attribution score on each held-out prompt
    # Per active explain prompt (aligned with ``active``), what the head reads most: (text before, the token,
    # text after), None where that is BOS or no look-up is stored; and that token's text ('' for BOS).
    active_marked: list[tuple[str, str, str] | None] = field(default_factory=list)
    active_lookups: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.layer, self.neuron, self.head_layer, self.head)


def pair_ids(pairs: pd.DataFrame) -> list[str]:
    """Each pair's 'layer:neuron:head_layer:head' key, as the reads taking ``$pairs`` match them."""
    return [":".join(str(int(v)) for v in r) for r in pairs[PAIR_KEYS].itertuples(index=False)]


def choose_pairs(scores: pd.DataFrame, settings: ExplanationSettings) -> pd.DataFrame:
    """scores: consistent ``head_neuron_scores`` rows. Each neuron's strongest heads (by mean attribution), at
    most ``pairs_per_neuron``; then at most ``max_pairs`` per cohort, strongest first."""
    ranked = scores.sort_values(["cohort", "layer", "neuron", "mean_score"], ascending=[True, True, True, False])
    chosen = ranked.groupby(["cohort", "layer", "neuron"], sort=False).head(settings.pairs_per_neuron)
    if settings.max_pairs is not None:
        chosen = chosen.sort_values("mean_score", ascending=False).groupby("cohort", sort=False).head(settings.max_pairs)
    return chosen.sort_values(["cohort", *PAIR_KEYS]).reset_index(drop=True)


def marked(pieces, top_position) -> tuple[str, str, str] | None:
    """A prompt's tokens (BOS left out) split around the position the head reads most (BOS = 0: none)."""
    if pieces is None or top_position is None or pd.isna(top_position) or int(top_position) < 1:
        return None
    i = int(top_position) - 1
    return "".join(pieces[:i]), pieces[i], "".join(pieces[i + 1:])


def build_pairs(chosen: pd.DataFrame, prompts: pd.DataFrame, lookups: pd.DataFrame | None = None) -> list[Pair]:
    """chosen: pairs (cohort, layer, neuron, head_layer, head, token). prompts: per (pair, prompt) the doc id,
    split, active flag, the head's score, prompt text and exemplar rank, for the chosen pairs' neurons. lookups: per (pair,
    prompt) the head's reading (``pair_lookup_prompts``: pieces, top position and token)."""
    if lookups is not None and len(lookups):
        prompts = prompts.merge(lookups[[*PAIR_KEYS, "doc_id", "pieces", "top_position", "top_token"]], on=[*PAIR_KEYS, "doc_id"], how="left")
    else:
        prompts = prompts.assign(pieces=None, top_position=None, top_token=None)
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
            active = explain[explain["active"]]
            pair.active = active["prompt_text"].tolist()
            pair.active_marked = [marked(p, t) for p, t in zip(active["pieces"], active["top_position"])]
            pair.active_lookups = [
                "" if m is None else m[1] for m in pair.active_marked
            ]
            pair.inactive = explain.loc[~explain["active"], "prompt_text"].tolist()
            pair.heldout = heldout["prompt_text"].tolist()
            pair.heldout_truth = heldout["active"].astype(bool).tolist()
            pair.heldout_scores = heldout["score"].astype(float).tolist() if "score" in heldout else []
        out.append(pair)
    return out


def explanation_id(model_id: str, prompt_set_id: str, pair: Pair, explainer: str, template_version: str) -> str:
    return cache_key("explanation", model_id, prompt_set_id, pair.key, explainer, template_version)
