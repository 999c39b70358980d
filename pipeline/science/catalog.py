"""Step 1 of docs/method.md: the next-token neuron catalog.

A neuron n of layer L writes ``W_out[L][n, :]`` into the residual stream; its congruence with token t is
``W_out[L][n, :] · W_U[:, t]``. Its token is the argmax over the vocabulary, its score the max, and the
z-score says how far that max stands above the rest of the vocabulary.

The shape of that congruence row over the vocabulary gives the neuron's role (Gurnee et al. 2024, "Universal
Neurons in GPT2 Language Models"): a heavy-tailed row (high kurtosis) whose tail is positive raises a few
tokens' logits, a *prediction* neuron; one whose tail is negative lowers them, a *suppression* neuron (its
strongest tokens are its most negative ones, ``bottom_token``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.config import NEURON_ROLES, PAPER_ROLE_EXCESS_KURTOSIS, CatalogSettings
from lookups.pipeline.inputs.architecture import Architecture

WORD_START_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2, Llama 3, SmolLM2) and SentencePiece (Llama 2)
#: Elements of one piece of a chunk's congruence block whose moments are summed at once (64 MB in float32).
MOMENT_PIECE_ELEMENTS = 1 << 24


@dataclass
class CongruenceStats:
    """Per-neuron statistics of ``W_out · W_U``; every array is ``[n_layers, d_mlp]`` unless noted."""

    score: np.ndarray  # max over the vocabulary
    token_id: np.ndarray  # argmax
    vocab_mean: np.ndarray
    vocab_std: np.ndarray
    top_ids: np.ndarray  # [n_layers, d_mlp, top]
    top_scores: np.ndarray  # [n_layers, d_mlp, top]
    bottom_id: np.ndarray  # argmin: the token the neuron suppresses most
    bottom_score: np.ndarray  # that min
    vocab_skew: np.ndarray  # skewness over the vocabulary (population moments, as scipy.stats.skew)
    vocab_kurtosis: np.ndarray  # excess kurtosis over the vocabulary (0 for a Gaussian, as scipy.stats.kurtosis)

    @property
    def zscore(self) -> np.ndarray:
        return (self.score - self.vocab_mean) / np.maximum(self.vocab_std, 1e-12)


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def vocab_shape(block: torch.Tensor, center: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(skewness, excess kurtosis) of each row of ``block`` ``[rows, d_vocab]`` over the vocabulary, from its
    first four moments (population moments, as ``scipy.stats.skew`` and ``scipy.stats.kurtosis``).

    ``center`` and ``scale`` (``[rows]``) are the rows' mean and standard deviation computed in closed form: the
    power sums are of ``(block - center) / scale``, values of order 1, summed (cascade summation) over pieces of
    the vocabulary and accumulated across pieces in float64; the central moments follow about the rows' own
    mean, also in float64. Skew and kurtosis do not depend on the scale. No copy of the whole block is made. A
    constant row (a neuron that writes nothing) has skew 0 and excess kurtosis 0.
    """
    rows, d_vocab = block.shape
    acc = _accumulation_dtype(block.device)
    piece = max(1, MOMENT_PIECE_ELEMENTS // max(rows, 1))
    inv = torch.where(scale > 0, 1.0 / scale.clamp_min(torch.finfo(scale.dtype).tiny), torch.ones_like(scale)).to(block.dtype)[:, None]
    c = center.to(block.dtype)[:, None]
    sums = torch.zeros(4, rows, dtype=acc, device=block.device)
    for start in range(0, d_vocab, piece):
        z = (block[:, start : start + piece] - c).mul_(inv)
        z2 = z * z
        sums[0] += z.sum(dim=1).to(acc)
        sums[1] += z2.sum(dim=1).to(acc)
        sums[2] += z.mul_(z2).sum(dim=1).to(acc)  # z now holds z³
        sums[3] += z2.square_().sum(dim=1).to(acc)  # z2 now holds z⁴
    m1, r2, r3, r4 = sums / d_vocab
    m2 = (r2 - m1**2).clamp_min(0)
    m3 = r3 - 3 * m1 * r2 + 2 * m1**3
    m4 = (r4 - 4 * m1 * r3 + 6 * m1**2 * r2 - 3 * m1**4).clamp_min(0)
    spread = m2 > 1e-10 * r2  # not constant (a constant row's m2 is rounding, ~1e-16 of r2 in float64)
    safe = torch.where(spread, m2, torch.ones_like(m2))
    skew = torch.where(spread, m3 / safe**1.5, torch.zeros_like(m3))
    kurtosis = torch.where(spread, m4 / safe**2 - 3.0, torch.zeros_like(m4))
    return skew, kurtosis


def congruence_stats(W_out: torch.Tensor, W_U: torch.Tensor, top: int = 5, chunk: int = 768) -> CongruenceStats:
    """Batched ``W_out[L] @ W_U`` in neuron chunks, keeping only the per-neuron statistics.

    W_out: ``[n_layers, d_mlp, d_model]``; W_U: ``[d_model, d_vocab]``. Memory: one ``[chunk, d_vocab]`` block
    (and two pieces of it of ``MOMENT_PIECE_ELEMENTS``).
    """
    n_layers, d_mlp, _ = W_out.shape
    flat = W_out.reshape(n_layers * d_mlp, -1)
    W_U = W_U.to(flat.dtype)
    d_vocab = W_U.shape[1]
    # Mean and variance over the vocabulary need no [neurons, vocab] product: with ū the mean unembedding
    # and G = W_U W_Uᵀ / d_vocab, mean = w·ū and E[score²] = wᵀ G w.
    u_mean = W_U.mean(dim=1)
    gram = (W_U @ W_U.T) / d_vocab
    keys = ("top_ids", "top_scores", "bottom_id", "bottom_score", "skew", "kurtosis")
    outs = {k: [] for k in keys}
    with torch.no_grad():
        mean = flat @ u_mean
        second = ((flat @ gram) * flat).sum(dim=1)
        std = (second - mean**2).clamp_min(0).sqrt() * (d_vocab / (d_vocab - 1)) ** 0.5
        for start in range(0, flat.shape[0], chunk):
            block = flat[start : start + chunk] @ W_U  # [chunk, d_vocab]
            top_scores, top_ids = block.topk(top, dim=-1)  # [chunk, top]
            bottom_score, bottom_id = block.min(dim=-1)
            skew, kurtosis = vocab_shape(block, mean[start : start + chunk], std[start : start + chunk])
            for key, value in zip(keys, (top_ids, top_scores, bottom_id, bottom_score, skew, kurtosis)):
                outs[key].append(value)
            del block
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
        bottom_id=stacked("bottom_id"),
        bottom_score=stacked("bottom_score"),
        vocab_skew=stacked("skew"),
        vocab_kurtosis=stacked("kurtosis"),
    )


def neuron_roles(skew, kurtosis, kurtosis_min: float = PAPER_ROLE_EXCESS_KURTOSIS, skew_min: float = 0.0) -> np.ndarray:
    """Each neuron's role from the shape of its congruence row: 'prediction' when its excess kurtosis exceeds
    ``kurtosis_min`` and its skew exceeds ``skew_min``, 'suppression' when the kurtosis exceeds it and the skew is
    below ``-skew_min``, else 'other' (Gurnee et al. 2024). Arrays of any shape; returns object strings."""
    skew, kurtosis = np.asarray(skew, dtype=np.float64), np.asarray(kurtosis, dtype=np.float64)
    heavy = kurtosis > kurtosis_min
    prediction, suppression, other = NEURON_ROLES
    out = np.full(skew.shape, other, dtype=object)
    out[heavy & (skew > skew_min)] = prediction
    out[heavy & (skew < -skew_min)] = suppression
    return out


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


def random_baseline(selected: np.ndarray, per_layer: int | None, seed: int, share: float = 1.0) -> np.ndarray:
    """``[n_layers, d_mlp]`` bool: ``per_layer`` neurons (None: ``share`` of the layer's selected neurons, rounded
    up) drawn at random (seeded) from the unselected neurons of every layer that has selected neurons; the
    paper's random-neuron baseline for explanation scores."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(selected)
    for layer in np.flatnonzero(selected.any(axis=1)):
        pool = np.flatnonzero(~selected[layer])
        wanted = math.ceil(share * int(selected[layer].sum()) - 1e-9) if per_layer is None else per_layer
        out[layer, rng.choice(pool, size=min(wanted, len(pool)), replace=False)] = True
    return out


def catalog_frame(
    stats: CongruenceStats,
    qualifies: np.ndarray,
    selected: np.ndarray,
    rank: np.ndarray,
    display_tokens: list[str],
    baseline: np.ndarray | None = None,
    *,
    role_kurtosis_min: float = PAPER_ROLE_EXCESS_KURTOSIS,
    role_skew_min: float = 0.0,
) -> pd.DataFrame:
    """One row per neuron of every layer, the columns of the ``neurons`` table (without model_id)."""
    n_layers, d_mlp = stats.score.shape
    layer, neuron = np.meshgrid(np.arange(n_layers), np.arange(d_mlp), indexing="ij")
    tokens = np.asarray(display_tokens, dtype=object)
    top_ids = stats.top_ids.reshape(-1, stats.top_ids.shape[-1])
    skew, kurtosis = stats.vocab_skew.ravel().astype(np.float64), stats.vocab_kurtosis.ravel().astype(np.float64)
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
            "vocab_skew": skew,
            "vocab_kurtosis": kurtosis,
            "top_token_ids": list(top_ids.astype(np.int64)),
            "top_tokens": [list(tokens[row]) for row in top_ids],
            "top_scores": list(stats.top_scores.reshape(top_ids.shape).astype(np.float64)),
            "bottom_token_id": stats.bottom_id.ravel().astype(np.int64),
            "bottom_token": tokens[stats.bottom_id.ravel()],
            "bottom_score": stats.bottom_score.ravel().astype(np.float64),
            "role": neuron_roles(skew, kurtosis, role_kurtosis_min, role_skew_min),
            "qualifies": qualifies[stats.token_id.ravel()],
            "layer_rank": rank.ravel().astype(np.int32),
            "selected": selected.ravel(),
            "random_baseline": (baseline if baseline is not None else np.zeros_like(selected)).ravel(),
        }
    )


def build_catalog(arch: Architecture, tokenizer, settings: CatalogSettings) -> pd.DataFrame:
    """The whole catalog of a model, from the weights its ``Architecture`` says reach the logits (post-MLP and
    final norms included), with the selection ``settings`` make (their counts resolved for this model)."""
    W_out, W_U = arch.congruence_weights()
    n_layers, d_mlp, d_vocab = W_out.shape[0], W_out.shape[1], W_U.shape[1]
    raw = tokenizer.convert_ids_to_tokens(list(range(d_vocab)))
    display = [tokenizer.decode([i]) for i in range(d_vocab)]
    stats = congruence_stats(W_out, W_U, top=settings.top_tokens)
    qualifies = qualifying_tokens(raw, settings.min_token_chars, settings.deny_tokens)
    per_layer, last_layers = settings.resolved_neurons_per_layer(d_mlp), settings.resolved_last_layers(n_layers)
    selected, rank = select_neurons(stats.score, stats.token_id, qualifies, per_layer, last_layers)
    baseline = random_baseline(selected, settings.random_per_layer, settings.random_seed, settings.random_share)
    return catalog_frame(
        stats, qualifies, selected, rank, display, baseline, role_kurtosis_min=settings.role_kurtosis_min, role_skew_min=settings.role_skew_min
    )
