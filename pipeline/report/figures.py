"""The findings' figures as PNG bytes: the steps write them to files under ``<data>/figures/``, the atlas
inlines them, the Dagster layer shows them in asset metadata (one convention: files on disk)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, **savefig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, **savefig)
    plt.close(fig)
    return buffer.getvalue()


def heads_by_layer(heads_by_layer: pd.DataFrame, n_layers: int) -> bytes:
    """Where the look-up heads lie: consistent pairs per head layer."""
    plt = _pyplot()
    counts = heads_by_layer.set_index("head_layer")["consistent_pairs"].reindex(range(n_layers), fill_value=0)
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.bar(counts.index, counts.values, color="#3b6ea5")
    ax.set_xlabel("head layer")
    ax.set_ylabel("consistent pairs")
    ax.set_title("Where the look-up heads lie")
    return _png(fig, bbox_inches="tight")


def ablation(ablations: pd.DataFrame) -> bytes | None:
    """Zero-ablating each consistent pair's head: the drops when the head is active vs inactive (box plots)."""
    if not len(ablations):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.0), layout="constrained")
    for ax, metric, label in zip(axes, ("act_drop", "prob_drop"), ("neuron activation drop", "token probability drop")):
        groups = [ablations.loc[ablations["active"] == flag, metric].to_numpy(dtype=float) for flag in (True, False)]
        ax.boxplot([g if len(g) else [np.nan] for g in groups], showfliers=False)
        ax.set_xticks([1, 2], ["head active", "head inactive"])
        ax.set_title(label, fontsize=10)
    fig.suptitle("Zero-ablating the head of each consistent pair")
    return _png(fig, bbox_inches="tight")


#: The panels of the score histograms, the threshold-free figures first: (scorer, measure, axis label, range).
SCORE_PANELS = (
    ("detection", "auc", "detection AUC (P(Yes), held-out)", (0.0, 1.0)),
    ("embedding", "auc", "embedding AUC (cosine, held-out)", (0.0, 1.0)),
    ("simulation", "correlation", "simulation r (Spearman, held-out)", (-1.0, 1.0)),
    ("detection", "e_score", "Head Explanation Score E (balanced accuracy at 0.5)", (0.0, 1.0)),
)


def score_histograms(scores: pd.DataFrame, title: str) -> bytes | None:
    """The paper's figure, per scorer: one row per explainer, one panel per measure it has (detection AUC,
    embedding AUC, simulation r, E), each the histogram over next-token pairs with the random-neuron and shuffled
    baselines overlaid and chance marked. PNG bytes, or None with nothing scored."""
    if not len(scores):  # nothing explained yet (a frame with no columns, too)
        return None
    scored = scores[scores["status"] == "scored"]
    if not len(scored):
        return None
    panels = [p for p in SCORE_PANELS if p[1] in scored and scored.loc[scored["scorer"] == p[0], p[1]].notna().any()]
    explainers = sorted(scored["explainer"].unique())
    plt = _pyplot()
    fig, axes = plt.subplots(len(explainers), len(panels), figsize=(4.2 * len(panels), 2.9 * len(explainers)), squeeze=False)
    for row, explainer in zip(axes, explainers):
        group = scored[scored["explainer"] == explainer]
        for ax, (scorer, measure, label, (low, high)) in zip(row, panels):
            mine = group[(group["scorer"] == scorer) & group[measure].notna()]
            series = {
                "next-token neurons": mine[(mine["cohort"] == "next_token") & (mine["baseline"] == "none")][measure],
                "random neurons": mine[(mine["cohort"] == "random") & (mine["baseline"] == "none")][measure],
                "shuffled explanations": mine[mine["baseline"] == "shuffled"][measure],
            }
            bins = np.linspace(low, high, 21)
            for (name, values), style in zip(series.items(), ({"alpha": 0.75}, {"alpha": 0.5}, {"histtype": "step", "linewidth": 1.5})):
                if len(values):
                    ax.hist(values.astype(float), bins=bins, density=True, label=f"{name} (n={len(values)}, mean {values.mean():.3f})", **style)
            ax.axvline(0.0 if measure == "correlation" else 0.5, color="#888", linestyle=":", linewidth=1)
            ax.set_title(f"{explainer}: {scorer}", fontsize=8)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("density", fontsize=8)
            if len(mine):
                ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
