"""Step 1 of docs/method.md: the next-token neuron catalog.

A neuron n of layer L writes ``W_out[L][n, :]`` into the residual stream; its congruence with token t is
``W_out[L][n, :] · W_U[:, t]``. Its token is the argmax over the vocabulary, its score the max, and the
z-score says how far that max stands above the rest of the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2, Llama 3, SmolLM2) and SentencePiece (Llama 2)


@dataclass
class CongruenceStats:
    """Per-neuron statistics of ``W_out · W_U``; every array is ``[n_layers, d_mlp]`` unless noted."""

    score: np.ndarray  # max over the vocabulary
    token_id: np.ndarray  # argmax
    vocab_mean: np.ndarray
    vocab_std: np.ndarray
    top_ids: np.ndarray  # [n_layers, d_mlp, top]
    top_scores: np.ndarray  # [n_layers, d_mlp, top]

    @property
    def zscore(self) -> np.ndarray:
        return (self.score - self.vocab_mean) / np.maximum(self.vocab_std, 1e-12)


def congruence_stats(W_out: torch.Tensor, W_U: torch.Tensor, top: int = 5, chunk: int = 768) -> CongruenceStats:
    """Batched ``W_out[L] @ W_U`` in neuron chunks, keeping only the per-neuron statistics.

    W_out: ``[n_layers, d_mlp, d_model]``; W_U: ``[d_model, d_vocab]``. Memory: one ``[chunk, d_vocab]`` block.
    """
    n_layers, d_mlp, _ = W_out.shape
    flat = W_out.reshape(n_layers * d_mlp, -1)
    W_U = W_U.to(flat.dtype)
    d_vocab = W_U.shape[1]
    # Mean and variance over the vocabulary need no [neurons, vocab] product: with ū the mean unembedding
    # and G = W_U W_Uᵀ / d_vocab, mean = w·ū and E[score²] = wᵀ G w.
    u_mean = W_U.mean(dim=1)
    gram = (W_U @ W_U.T) / d_vocab
    outs = {k: [] for k in ("top_ids", "top_scores")}
    with torch.no_grad():
        mean = flat @ u_mean
        second = ((flat @ gram) * flat).sum(dim=1)
        std = (second - mean**2).clamp_min(0).sqrt() * (d_vocab / (d_vocab - 1)) ** 0.5
        for start in range(0, flat.shape[0], chunk):
            top_scores, top_ids = (flat[start : start + chunk] @ W_U).topk(top, dim=-1)  # [chunk, top]
            outs["top_ids"].append(top_ids)
            outs["top_scores"].append(top_scores)
    outs["mean"], outs["std"] = [mean], [std]
    outs["score"] = [torch.cat(outs["top_scores"])[:, 0]]
    outs["token"] = [torch.cat(outs["top_ids"])[:, 0]]

    def stacked(key: str) -> np.ndarray:
        arr = torch.cat(outs[key]).cpu().numpy()
        return arr.reshape(n_layers, d_mlp, *arr.shape[1:])

    return CongruenceStats(
        score=stacked("score"),
        token_id=stacked("token"),
        vocab_mean=stacked("mean"),
        vocab_std=stacked("std"),
        top_ids=stacked("top_ids"),
        top_scores=stacked("top_scores"),
    )


def qualifying_tokens(raw_tokens: list[str], min_chars: int, deny: list[str]) -> np.ndarray:
    """``[d_vocab]`` bool: the token starts a word (leading-space marker) followed by at least ``min_chars``
    characters, at least one a letter, and is not on the deny list (compared case-insensitively)."""
    denied = {d.strip().lower() for d in deny}
    out = np.zeros(len(raw_tokens), dtype=bool)
    for i, tok in enumerate(raw_tokens):
        if tok is None or not tok.startswith(WORD_START_MARKERS):
            continue
        rest = tok[1:]
        out[i] = len(rest) >= min_chars and any(c.isalpha() for c in rest) and rest.lower() not in denied
    return out


def select_neurons(score: np.ndarray, token_id: np.ndarray, qualifies: np.ndarray, per_layer: int, last_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``per_layer`` qualifying neurons by score in each of the last ``last_layers`` layers.

    score, token_id: ``[n_layers, d_mlp]``; qualifies: ``[d_vocab]``.
    Returns (selected ``[n_layers, d_mlp]`` bool, rank among the layer's qualifying neurons, -1 if none).
    """
    n_layers, d_mlp = score.shape
    ok = qualifies[token_id]
    masked = np.where(ok, score, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    rank = np.full((n_layers, d_mlp), -1, dtype=np.int64)
    rows = np.arange(n_layers)[:, None]
    rank[rows, order] = np.arange(d_mlp)[None, :]
    rank[~ok] = -1
    selected = (rank >= 0) & (rank < per_layer)
    selected[: max(0, n_layers - last_layers)] = False
    return selected, rank


def random_baseline(selected: np.ndarray, per_layer: int, seed: int) -> np.ndarray:
    """``[n_layers, d_mlp]`` bool: ``per_layer`` neurons drawn at random (seeded) from the unselected neurons of
    every layer that has selected neurons; the paper's random-neuron baseline for explanation scores."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(selected)
    for layer in np.flatnonzero(selected.any(axis=1)):
        pool = np.flatnonzero(~selected[layer])
        out[layer, rng.choice(pool, size=min(per_layer, len(pool)), replace=False)] = True
    return out


def catalog_frame(
    stats: CongruenceStats, qualifies: np.ndarray, selected: np.ndarray, rank: np.ndarray, display_tokens: list[str], baseline: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per neuron of every layer, the columns of the ``neurons`` table (without model_id)."""
    n_layers, d_mlp = stats.score.shape
    layer, neuron = np.meshgrid(np.arange(n_layers), np.arange(d_mlp), indexing="ij")
    tokens = np.asarray(display_tokens, dtype=object)
    top_ids = stats.top_ids.reshape(-1, stats.top_ids.shape[-1])
    return pd.DataFrame(
        {
            "layer": layer.ravel().astype(np.int32),
            "neuron": neuron.ravel().astype(np.int32),
            "token_id": stats.token_id.ravel().astype(np.int64),
            "token": tokens[stats.token_id.ravel()],
            "score": stats.score.ravel().astype(np.float64),
            "zscore": stats.zscore.ravel().astype(np.float64),
            "vocab_mean": stats.vocab_mean.ravel().astype(np.float64),
            "vocab_std": stats.vocab_std.ravel().astype(np.float64),
            "top_token_ids": list(top_ids.astype(np.int64)),
            "top_tokens": [list(tokens[row]) for row in top_ids],
            "top_scores": list(stats.top_scores.reshape(top_ids.shape).astype(np.float64)),
            "qualifies": qualifies[stats.token_id.ravel()],
            "layer_rank": rank.ravel().astype(np.int32),
            "selected": selected.ravel(),
            "random_baseline": (baseline if baseline is not None else np.zeros_like(selected)).ravel(),
        }
    )


def build_catalog(
    bridge, per_layer: int, last_layers: int, min_chars: int, deny: list[str], top: int = 5, random_per_layer: int = 0, random_seed: int = 0
) -> pd.DataFrame:
    """The whole catalog for a booted bridge (LayerNorm folded, so ``W_U`` already carries the final norm)."""
    tokenizer = bridge.tokenizer
    d_vocab = bridge.W_U.shape[1]
    raw = tokenizer.convert_ids_to_tokens(list(range(d_vocab)))
    display = [tokenizer.decode([i]) for i in range(d_vocab)]
    stats = congruence_stats(bridge.W_out.detach(), bridge.W_U.detach(), top=top)
    qualifies = qualifying_tokens(raw, min_chars, deny)
    selected, rank = select_neurons(stats.score, stats.token_id, qualifies, per_layer, last_layers)
    baseline = random_baseline(selected, random_per_layer, random_seed)
    return catalog_frame(stats, qualifies, selected, rank, display, baseline)
