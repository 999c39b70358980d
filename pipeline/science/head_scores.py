"""Step 5 of docs/method.md: per (neuron, head), how often the head is active on the neuron's prompts, and whether the
pair is consistent (active on some prompts, not all: context-dependent).

The explain split defines the pairs; the held-out split's per-prompt ``active`` flags (in
``head_attributions``) are the ground truth explanations are later scored against, summarised here.
"""

from __future__ import annotations

import pandas as pd

from lookups.pipeline.config import HeadScoreSettings

PAIR_KEYS = ["layer", "neuron", "head_layer", "head"]
SCORE_COLUMNS = PAIR_KEYS + [
    "n_prompts", "mean_score", "std_score", "mean_gate", "mean_in", "active_count", "active_fraction", "rank", "consistent",
    "heldout_n_prompts", "heldout_active_count", "heldout_active_fraction", "cohort",
]
#: Pairs of selected next-token neurons are the findings; pairs of random neurons are the baseline.
COHORTS = ("next_token", "random")


def head_neuron_scores(heads: pd.DataFrame, settings: HeadScoreSettings, random_neurons: set[tuple[int, int]] = frozenset()) -> pd.DataFrame:
    """heads: ``head_attributions`` rows (layer, neuron, split, head_layer, head, score, gate/in contributions,
    active). One row per (neuron, head) seen in the explain split: SCORE_COLUMNS. ``rank`` is 1 for the head
    with the highest mean score on the neuron's explain prompts. ``random_neurons``: (layer, neuron) of the
    random baseline neurons, whose pairs get cohort 'random'."""
    explain = heads[heads["split"] == "explain"]
    grouped = explain.groupby(PAIR_KEYS, sort=True)
    out = grouped.agg(
        n_prompts=("score", "size"),
        mean_score=("score", "mean"),
        std_score=("score", "std"),
        mean_gate=("gate_contribution", "mean"),
        mean_in=("in_contribution", "mean"),
        active_count=("active", "sum"),
    ).reset_index()
    out["std_score"] = out["std_score"].fillna(0.0)
    out["active_fraction"] = out["active_count"] / out["n_prompts"]
    out["rank"] = out.groupby(["layer", "neuron"])["mean_score"].rank(ascending=False, method="first").astype(int)
    out["consistent"] = (
        (out["n_prompts"] >= settings.min_prompts)
        & (out["active_fraction"] >= settings.consistent_min)
        & (out["active_fraction"] <= settings.consistent_max)
    )
    heldout = heads[heads["split"] == "heldout"].groupby(PAIR_KEYS).agg(
        heldout_n_prompts=("active", "size"), heldout_active_count=("active", "sum")
    ).reset_index()
    out = out.merge(heldout, on=PAIR_KEYS, how="left")
    out["heldout_n_prompts"] = out["heldout_n_prompts"].fillna(0).astype(int)
    out["heldout_active_count"] = out["heldout_active_count"].fillna(0).astype(int)
    out["heldout_active_fraction"] = out["heldout_active_count"] / out["heldout_n_prompts"].where(out["heldout_n_prompts"] > 0)
    out["active_count"] = out["active_count"].astype(int)
    is_random = [(int(layer), int(n)) in random_neurons for layer, n in zip(out["layer"], out["neuron"])]
    out["cohort"] = [COHORTS[1] if r else COHORTS[0] for r in is_random]
    return out[SCORE_COLUMNS]


def summary(frame: pd.DataFrame) -> dict:
    """Counts of the scores: pairs and consistent pairs per cohort, neurons and heads with consistent pairs."""
    baseline = frame[frame["cohort"] == "random"]
    next_token = frame[frame["cohort"] == "next_token"]
    consistent = next_token[next_token["consistent"]]
    return {
        "random_baseline_pairs": len(baseline),
        "random_baseline_consistent_pairs": int(baseline["consistent"].sum()),
        "pairs": len(next_token),
        "consistent_pairs": len(consistent),
        "neurons": int(next_token.groupby(["layer", "neuron"]).ngroups) if len(next_token) else 0,
        "neurons_with_consistent_heads": int(consistent.groupby(["layer", "neuron"]).ngroups) if len(consistent) else 0,
        "consistent_heads": int(consistent.groupby(["head_layer", "head"]).ngroups) if len(consistent) else 0,
    }
