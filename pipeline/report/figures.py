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


def e_histogram(scores: pd.DataFrame, title: str) -> bytes | None:
    """The paper's figure: per explainer, the histogram of E over next-token pairs with the random-neuron
    baseline (and the shuffled baseline) overlaid. PNG bytes, or None with nothing scored."""
    if not len(scores):  # nothing explained yet (a frame with no columns, too)
        return None
    scored = scores[scores["status"] == "scored"]
    if not len(scored):
        return None
    plt = _pyplot()
    explainers = sorted(scored["explainer"].unique())
    fig, axes = plt.subplots(1, len(explainers), figsize=(5 * len(explainers), 3.4), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, explainer in zip(axes[0], explainers):
        group = scored[scored["explainer"] == explainer]
        series = {
            "next-token neurons": group[(group["cohort"] == "next_token") & (group["baseline"] == "none")]["e_score"],
            "random neurons (baseline)": group[(group["cohort"] == "random") & (group["baseline"] == "none")]["e_score"],
            "shuffled explanations": group[group["baseline"] == "shuffled"]["e_score"],
        }
        for (label, values), style in zip(series.items(), ({"alpha": 0.75}, {"alpha": 0.5}, {"histtype": "step", "linewidth": 1.5})):
            if len(values):
                ax.hist(values.astype(float), bins=bins, density=True, label=f"{label} (n={len(values)}, mean {values.mean():.3f})", **style)
        ax.axvline(0.5, color="#888", linestyle=":", linewidth=1)
        ax.set_title(explainer, fontsize=9)
        ax.set_xlabel("Head Explanation Score E (balanced accuracy, held-out)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)
