"""Steps 4-5 of docs/method.md: each head's direct contribution to a neuron on its exemplar prompts, and active heads.

For an exemplar of neuron n in layer L, at the prompt's last position, the stream that layer L's MLP reads is
decomposed into the components the model's ``Architecture`` names (docs/method.md, "Every model family"): the
embedding, every head of the attention layers that feed it (layers 0..L in serial blocks, < L in parallel
ones), every earlier MLP, and the biases. Each is passed through the norms between it and the neuron with the
scales cached on this prompt (the MLP's norm; for post-norm models also the component's own post-norm) and
projected on the neuron's input weights. A head's part is its slice of the attention output projection's
input ``z`` times that slice of ``W_O``. The components sum exactly to the neuron's pre-activation; the
difference is recorded per exemplar (``identity_abs_error``, and ``identity_rel_error`` over the rounding scale
``scale_in``/``scale_gate``, which bounds the model's own fp32 rounding: ``_decompose``) and checked.

Scores:

- ungated MLP (GPT-2): ``score_h = in_h``, the head's contribution to the pre-activation (the paper's);
- gated MLP (SwiGLU, GeGLU: act = f(g)·u, with g = x·W_gate[:, n] and u = x·W_in[:, n]): ``gate_h`` and
  ``in_h`` are the head's contributions to g and u (each decomposition sums to its own pre-activation), and
  the score is the head's first-order contribution to the activation at the actual operating point,
  ``score_h = f'(g)·u·gate_h + f(g)·in_h``.

A head is *active* on a prompt when its score exceeds the mean + ``active_sigma`` standard deviations
(sample std, ddof=1) of the scores of all candidate heads on that prompt.

Cost: prompts are batched by length with right padding (causal: real positions never see the padding); one
forward pass of the plain Hugging Face model per batch keeps only each row's last real position of the
values the decomposition reads, and stops at the deepest MLP needed. Products are in float64.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import AttributionSettings
from lookups.pipeline.inputs.architecture import Architecture, activation_and_slope
from lookups.pipeline.inputs.capture import capture
from lookups.pipeline.science.batching import group_prompts, pad_right

HEAD_COLUMNS = ["layer", "neuron", "doc_id", "split", "head_layer", "head", "gate_contribution", "in_contribution", "score", "active"]
TOTAL_COLUMNS = [
    "layer", "neuron", "doc_id", "split", "n_tokens", "pre_gate", "pre_in", "act", "sum_gate", "sum_in",
    "heads_gate", "heads_in", "mlps_gate", "mlps_in", "embed_gate", "embed_in", "bias_gate", "bias_in", "scale_gate", "scale_in",
    "identity_abs_error", "identity_rel_error", "active_threshold", "n_candidate_heads", "n_active_heads",
]


@dataclass
class AttributionResult:
    heads: pd.DataFrame  # one row per (exemplar, candidate head): HEAD_COLUMNS
    totals: pd.DataFrame  # one row per exemplar: TOTAL_COLUMNS
    stats: dict


def active_threshold(scores: np.ndarray, sigma: float) -> np.ndarray:
    """scores ``[rows, heads]`` -> per-row threshold mean + sigma·std (ddof=1) ``[rows]``; +inf (no head is
    active) with fewer than two candidates (layer 0 of a parallel-block model has none)."""
    if scores.shape[1] < 2:
        return np.full(scores.shape[0], np.inf)
    return scores.mean(axis=1) + sigma * scores.std(axis=1, ddof=1)


def last_position_values(arch: Architecture, tokens: torch.Tensor, lengths: torch.Tensor, layers: set[int]) -> dict[str, torch.Tensor]:
    """Run ``tokens`` ``[batch, pos]`` (right-padded; row b has ``lengths[b]`` real tokens) and keep, at each
    row's last real position, what the decomposition of the MLP input at ``layers`` reads (``[batch, ...]``,
    float64): the embedding, each feeding layer's ``z`` and post-attention norm's 1/scale, each earlier MLP's
    added output, and per target layer its norm's 1/scale, pre-activations and activation. The
    forward stops at the deepest layer's activation."""
    deepest = max(layers)
    wanted = {"embed": (arch.first_block, "input"), **norm_wanted(arch, layers, arch.heads_feeding(deepest))}
    for layer in range(deepest + 1):
        spec = arch.layers[layer]
        if layer in arch.heads_feeding(deepest):
            wanted[f"z{layer}"] = (spec.attn_out, "input")
        if layer < deepest:
            wanted[f"mlp{layer}"] = (spec.post_mlp_norm.path if spec.post_mlp_norm else spec.mlp_out, "output")
        if layer in layers:
            wanted[f"pre_in{layer}"] = (spec.mlp_in, "output")
            if spec.mlp_gate:
                wanted[f"pre_gate{layer}"] = (spec.mlp_gate, "output")
            wanted[f"act{layer}"] = (spec.mlp_out, "input")
    rows = torch.arange(tokens.shape[0], device=arch.device)
    last = (lengths - 1).to(device=arch.device, dtype=torch.long)
    got = {key: value.double() for key, value in capture(arch.model, tokens, wanted, stop_after=f"act{deepest}", pick=lambda value: value[rows, last]).items()}
    return with_norm_scales(arch, got)


def norm_wanted(arch: Architecture, layers: Iterable[int], sources: Iterable[int]) -> dict[str, tuple[str, str]]:
    """The hooks ``with_norm_scales`` reads: the MLP norms of ``layers``, the post-attention norms of ``sources``."""
    wanted = {}
    for layer in sources:
        if arch.layers[layer].post_attn_norm:
            wanted[f"post_attn_in{layer}"] = (arch.layers[layer].post_attn_norm.path, "input")
            wanted[f"post_attn_out{layer}"] = (arch.layers[layer].post_attn_norm.path, "output")
    for layer in layers:
        if arch.layers[layer].mlp_norm:
            wanted[f"norm_in{layer}"] = (arch.layers[layer].mlp_norm.path, "input")
            wanted[f"norm_out{layer}"] = (arch.layers[layer].mlp_norm.path, "output")
    return wanted


def with_norm_scales(arch: Architecture, got: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``got`` with each captured norm's input and output replaced by its 1/scale (``post_attn_scale{L}``,
    ``norm_scale{L}``): once per batch row, whatever number of projections and neurons read it."""
    for layer, spec in enumerate(arch.layers):
        if f"post_attn_in{layer}" in got:
            got[f"post_attn_scale{layer}"] = spec.post_attn_norm.inverse_scale(got.pop(f"post_attn_in{layer}"), got.pop(f"post_attn_out{layer}"))
        if f"norm_in{layer}" in got:
            got[f"norm_scale{layer}"] = spec.mlp_norm.inverse_scale(got.pop(f"norm_in{layer}"), got.pop(f"norm_out{layer}"))
    return got


class Weights:
    """The projections the decomposition multiplies by, in float64 on the model's device, converted once."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self._cache: dict[tuple[str, str], torch.Tensor | None] = {}

    def weight(self, path: str) -> torch.Tensor:
        if ("w", path) not in self._cache:
            self._cache[("w", path)] = self.arch.weight(path).double()
        return self._cache[("w", path)]

    def magnitude(self, path: str) -> torch.Tensor:
        """``|weight|`` elementwise, ``[in, out]``: the rounding scale of a product with it."""
        if ("abs", path) not in self._cache:
            self._cache[("abs", path)] = self.weight(path).abs()
        return self._cache[("abs", path)]

    def bias(self, path: str) -> torch.Tensor | None:
        if ("b", path) not in self._cache:
            bias = self.arch.bias(path)
            self._cache[("b", path)] = bias.double() if bias is not None else None
        return self._cache[("b", path)]


def attribute_exemplars(
    arch: Architecture,
    exemplars: pd.DataFrame,
    bos_id: int,
    settings: AttributionSettings,
    progress: Progress | None = None,
    pad_id: int | None = None,
) -> AttributionResult:
    """exemplars: rows with layer, neuron, doc_id, split, prompt_token_ids (BOS not included; it is prepended
    here, as in truncation). Returns per-head rows, per-exemplar totals and statistics. Prompts are batched
    by length (right padding, ``batch_tokens`` padded tokens per forward pass)."""
    pad_id = bos_id if pad_id is None else pad_id
    exemplars = exemplars.reset_index(drop=True)
    started = time.perf_counter()
    weights = Weights(arch)
    # Identical prompts (e.g. the same passage for two neurons) run once.
    layers_all = exemplars["layer"].to_numpy()
    neurons_all = exemplars["neuron"].to_numpy()
    grouped = group_prompts(exemplars["prompt_token_ids"].tolist(), layers_all, bos_id, settings.batch_tokens)
    prompts, batches = grouped.prompts, grouped.batches

    head_parts, total_parts = [], []
    done = 0
    for batch in batches:
        tokens, lengths = pad_right([prompts[p] for p in batch], pad_id)
        rows, row_b = grouped.rows(batch)
        values = last_position_values(arch, tokens, lengths, set(layers_all[rows].tolist()))
        for layer in sorted(set(layers_all[rows].tolist())):
            sel = layers_all[rows] == layer
            head_part, total_part = _attribute_layer(arch, weights, values, layer, rows[sel], row_b[sel], neurons_all, settings)
            total_part["n_tokens"] = lengths[row_b[sel]].numpy() - 1  # BOS not counted
            head_parts.append(head_part)
            total_parts.append(total_part)
        done += len(batch)
        if progress:
            progress("attribute", done, len(prompts))

    keys = exemplars[["layer", "neuron", "doc_id", "split"]]
    heads = _assemble(head_parts, keys, HEAD_COLUMNS)
    totals = _assemble(total_parts, keys, TOTAL_COLUMNS)
    seconds = time.perf_counter() - started
    stats = {
        "exemplars": len(exemplars),
        "prompts": len(prompts),
        "forward_batches": len(batches),
        "prompt_tokens": int(sum(len(p) for p in prompts)),
        "head_rows": len(heads),
        "attribution_seconds": seconds,
        "seconds_per_neuron": seconds / max(1, exemplars.groupby(["layer", "neuron"]).ngroups),
        "identity_max_abs_error": float(totals["identity_abs_error"].max()) if len(totals) else 0.0,
        "identity_max_rel_error": float(totals["identity_rel_error"].max()) if len(totals) else 0.0,
    }
    return AttributionResult(heads, totals, stats)


@dataclass
class _Decomposition:
    """One projection's decomposition for a set of rows: every part ``[rows]`` or ``[rows, heads]``."""

    heads: torch.Tensor  # [rows, candidate heads]
    mlps: torch.Tensor
    embed: torch.Tensor
    bias: torch.Tensor  # the stream's biases (attention output, norms) and the neuron's own input bias
    pre: torch.Tensor  # the pre-activation the model computed
    rounding_scale: torch.Tensor  # what bounds the model's rounding of pre (see ``_decompose``)

    @property
    def total(self) -> torch.Tensor:
        return self.heads.sum(dim=1) + self.mlps + self.embed + self.bias


@dataclass(frozen=True)
class Reader:
    """How a neuron's pre-activation reads something added before it, on each row: a vector ``x`` contributes
    ``x · read`` (``read`` ``[rows, width]``); ``bias`` ``[rows]`` gathers the biases met on the way and
    ``bias_scale`` ``[rows]`` their elementwise magnitude ``Σ_k |bias_k · read_k|``, for the rounding scale."""

    read: torch.Tensor
    bias: torch.Tensor
    bias_scale: torch.Tensor
    through: torch.Tensor | None = None  # a head reader's stream-space direction before the output projection


def stream_read(arch: Architecture, weights: Weights, values: dict, layer: int, b: torch.Tensor, neurons: torch.Tensor, path: str) -> Reader:
    """How the pre-activation read by projection ``path`` (columns ``neurons``, one per row) of ``layer``'s MLP
    reads the stream on each row (``read`` ``[rows, d_model]``); the biases are the neuron's input bias and
    the MLP norm's bias."""
    spec = arch.layers[layer]
    directions = weights.weight(path)[:, neurons].T  # [rows, d_model]: the neuron's input direction
    bias = torch.zeros(len(b), dtype=torch.float64, device=directions.device)
    own = weights.bias(path)
    if own is not None:
        bias = bias + own[neurons]
    bias_scale = bias.abs()
    if not spec.mlp_norm:
        return Reader(directions, bias, bias_scale)  # OLMo 2: the MLP reads the raw stream
    norm = spec.mlp_norm
    if norm.bias is not None:
        bias = bias + directions @ norm.bias.to(directions)
        bias_scale = bias_scale + directions.abs() @ norm.bias.abs().to(directions)
    return Reader(norm.through(directions, values[f"norm_scale{layer}"][b]), bias, bias_scale)


def head_read(arch: Architecture, weights: Weights, values: dict, source: int, stream: Reader, b: torch.Tensor) -> Reader:
    """How the stream reader ``stream`` reads layer ``source``'s heads (``read`` ``[rows, n_heads * d_head]``):
    head h contributes ``read[h slice] · (z_h - value_bias_h)``; the biases are the post-attention norm's, the
    output projection's and the value biases' part."""
    spec = arch.layers[source]
    read = stream.read
    bias = torch.zeros(len(b), dtype=torch.float64, device=read.device)
    bias_scale = torch.zeros_like(bias)
    through = read
    if spec.post_attn_norm:
        post = spec.post_attn_norm
        if post.bias is not None:
            bias = bias + read @ post.bias.to(read)
            bias_scale = bias_scale + read.abs() @ post.bias.abs().to(read)
        through = post.through(read, values[f"post_attn_scale{source}"][b])
    attn_bias = weights.bias(spec.attn_out)
    if attn_bias is not None:
        bias = bias + through @ attn_bias
        bias_scale = bias_scale + through.abs() @ attn_bias.abs()
    read_z = through @ weights.weight(spec.attn_out).T  # [rows, n_heads * d_head]
    bias = bias + read_z @ spec.value_bias.to(read_z)  # the same on every prompt (see Layer.value_bias)
    return Reader(read_z, bias, bias_scale, through)


def _decompose(
    arch: Architecture, weights: Weights, values: dict, layer: int, b: torch.Tensor, neurons: torch.Tensor, path: str, pre_key: str
) -> _Decomposition:
    """Decompose the pre-activation read by projection ``path`` (columns ``neurons``, one per row) of layer ``layer``.

    The rounding scale is the sum, over every vector the model added up to form ``pre``, of its elementwise
    magnitude read by the neuron, ``Σ_k |x_k · read_k|``: the embedding, each earlier MLP's output, each
    attention layer's output as the model formed it from ``z`` (``Σ_k |through_k| (|z| @ |W_O|)_k``: the
    rounding of that product too) and the biases. Each fp32 addition, the norm and the neuron's own dot
    product round by at most a few ``u`` of it per operation, on any hardware (docs/quality.md, "Tolerances")."""
    stream = stream_read(arch, weights, values, layer, b, neurons, path)
    read, bias, scale = stream.read, stream.bias, stream.bias_scale
    embed_terms = values["embed"][b] * read
    embed = embed_terms.sum(-1)
    scale = scale + embed_terms.abs().sum(-1)
    head_parts = []
    for source in arch.heads_feeding(layer):
        heads = head_read(arch, weights, values, source, stream, b)
        bias, scale = bias + heads.bias, scale + heads.bias_scale
        z = values[f"z{source}"][b]
        per_unit = heads.read * (z - arch.layers[source].value_bias.to(z))
        head_parts.append(per_unit.view(len(b), arch.n_heads, arch.d_head).sum(-1))
        scale = scale + (z.abs() * (heads.through.abs() @ weights.magnitude(arch.layers[source].attn_out).T)).sum(-1)
    heads = torch.cat(head_parts, dim=1) if head_parts else torch.zeros(len(b), 0, dtype=torch.float64, device=read.device)
    mlps = torch.zeros_like(embed)
    for source in range(layer):
        terms = values[f"mlp{source}"][b] * read
        mlps, scale = mlps + terms.sum(-1), scale + terms.abs().sum(-1)
    return _Decomposition(heads, mlps, embed, bias, values[pre_key][b, neurons], scale)


def _attribute_layer(
    arch: Architecture, weights: Weights, values: dict, layer: int, rows: np.ndarray, row_b: np.ndarray, neurons_all: np.ndarray,
    settings: AttributionSettings,
):
    """Decompose the MLP input of ``layer`` for exemplar ``rows`` (at batch positions ``row_b``)."""
    spec = arch.layers[layer]
    b = torch.as_tensor(row_b, device=arch.device)
    neurons = torch.as_tensor(neurons_all[rows], device=arch.device)
    up = _decompose(arch, weights, values, layer, b, neurons, spec.mlp_in, f"pre_in{layer}")
    act = values[f"act{layer}"][b, neurons]
    if spec.mlp_gate:
        gate = _decompose(arch, weights, values, layer, b, neurons, spec.mlp_gate, f"pre_gate{layer}")
        f_gate, slope = activation_and_slope(arch.act_fn, gate.pre)
        scores = slope[:, None] * up.pre[:, None] * gate.heads + f_gate[:, None] * up.heads
        checked = [gate, up]
    else:
        gate = None
        scores = up.heads
        checked = [up]

    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.double().cpu().numpy()

    scores_np = numpy(scores)
    threshold = active_threshold(scores_np, settings.active_sigma)
    active = scores_np > threshold[:, None]
    n_cand = scores_np.shape[1]
    head_layers = np.repeat(np.asarray(arch.heads_feeding(layer)), arch.n_heads)
    head_frame = pd.DataFrame(
        {
            "row": np.repeat(rows, n_cand),
            "head_layer": np.tile(head_layers, len(rows)).astype(np.int32),
            "head": np.tile(np.arange(n_cand) % arch.n_heads, len(rows)).astype(np.int32),
            "gate_contribution": numpy(gate.heads).ravel() if gate else np.full(len(rows) * n_cand, np.nan),
            "in_contribution": numpy(up.heads).ravel(),
            "score": scores_np.ravel(),
            "active": active.ravel(),
        }
    )

    abs_err = np.zeros(len(rows))
    rel_err = np.zeros(len(rows))
    for part in checked:
        err = numpy((part.total - part.pre).abs())
        abs_err = np.maximum(abs_err, err)
        rel_err = np.maximum(rel_err, err / np.maximum(numpy(part.rounding_scale), 1e-300))

    def column(part: _Decomposition | None, value: Callable[[_Decomposition], torch.Tensor]) -> np.ndarray:
        return numpy(value(part)) if part is not None else np.full(len(rows), np.nan)

    groups = {
        "pre": lambda d: d.pre, "sum": lambda d: d.total, "heads": lambda d: d.heads.sum(1),
        "mlps": lambda d: d.mlps, "embed": lambda d: d.embed, "bias": lambda d: d.bias, "scale": lambda d: d.rounding_scale,
    }
    total_frame = pd.DataFrame(
        {
            "row": rows,
            **{f"{name}_gate": column(gate, value) for name, value in groups.items()},
            **{f"{name}_in": column(up, value) for name, value in groups.items()},
            "act": numpy(act),
            "identity_abs_error": abs_err,
            "identity_rel_error": rel_err,
            "active_threshold": threshold,
            "n_candidate_heads": n_cand,
            "n_active_heads": active.sum(axis=1),
        }
    )
    return head_frame, total_frame


def _assemble(parts: list[pd.DataFrame], keys: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    frame = pd.concat([keys.iloc[frame["row"].to_numpy()].reset_index(drop=True), frame.drop(columns="row")], axis=1)
    return frame[columns].sort_values([c for c in ("layer", "neuron", "doc_id", "head_layer", "head") if c in columns]).reset_index(drop=True)
