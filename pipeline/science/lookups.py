"""What each head looks up (docs/method.md, "Look-ups"): a head's direct contribution to a neuron split by the
source position it reads.

At the prompt's last position t, head h of layer s writes ``z_h = Σ_j A[h, t, j] · v_j,h`` (its attention
weights over source positions j times its value vectors; the weights sum to 1, so the value bias is the same
on every prompt and stays out of the look-up, as in attribution). Attribution reads the head through the
neuron's input direction(s) as ``read_z_h · (z_h - value_bias_h)`` (``attribution.head_read``), so the term of
source position j is

    term_j = A[h, t, j] · read_z_h · (v_j,h - value_bias_h),

and the terms sum exactly to the head's attribution. For gated MLPs the gate and up terms are formed the same
way and the score term by the head score's own first-order formula, ``f'(g)·u·gate_j + f(g)·in_j``, which is
linear in them. Values come from the value projection the ``Architecture`` names (separate, GPT-2's fused
q|k|v, NeoX's per-head q|k|v; repeated for grouped-query attention), the weights from eager attention. Each
batch first checks that ``Σ_j A v_j`` rebuilds every captured ``z`` (the look-up decomposition holds for
this family), then the step checks the terms against the stored attribution.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.inputs.architecture import Architecture, activation_and_slope, capture, eager_attention
from lookups.pipeline.science.attribution import Weights, head_read, norm_wanted, stream_read, with_norm_scales
from lookups.pipeline.science.batching import group_prompts, pad_right

PhaseProgress = Callable[[str, int, int], None]

#: What one pair's row on one prompt names (the pair, the prompt) before its positions' columns.
ROW_KEYS = ["cohort", "layer", "neuron", "head_layer", "head", "doc_id", "split", "active"]
LOOKUP_COLUMNS = [
    *ROW_KEYS, "position", "distance", "token_id", "attention", "gate_contribution", "in_contribution", "contribution",
    "share", "rank", "head_score", "identity_abs_error", "identity_rel_error",
]
#: How closely ``Σ_j A v_j`` must rebuild the captured z (fp32 rounding is ~1e-6).
REBUILD_TOLERANCE = 1e-4


class LookupDecompositionError(LookupsError, RuntimeError):
    """A model's attention output is not the weighted sum of the values its description names."""


@dataclass
class SourceTerms:
    """One pass's look-up terms for a set of (pair, prompt) rows, ``[rows, pos]`` (positions past a row's
    length are zero), and what the neuron read on each row."""

    attention: torch.Tensor
    gate: torch.Tensor | None
    up: torch.Tensor
    score: torch.Tensor
    act: torch.Tensor  # [rows] the neuron's activation
    prob: torch.Tensor | None  # [rows] the probability of the row's token after the prompt, when asked for

    @property
    def head_score(self) -> torch.Tensor:
        return self.score.sum(-1)


def source_terms(
    arch: Architecture,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    rows: pd.DataFrame,
    row_b: np.ndarray,
    weights: Weights | None = None,
    next_token_ids: np.ndarray | None = None,
    by_position: bool = True,
) -> SourceTerms:
    """Run the batch ``tokens`` ``[batch, pos]`` (right-padded) once and split, for each row (``layer``,
    ``neuron``, ``head_layer``, ``head``; on batch row ``row_b``), the head's direct contribution to the neuron
    at the last position by source position. With ``next_token_ids`` the forward runs to the logits and the
    probability of each row's token is returned too. Without ``by_position`` only the head's total is formed
    (one "position": its z), with the model's own attention kernel: what the counterfactual test needs."""
    weights = weights or Weights(arch)
    layers = sorted(set(rows["layer"].tolist()))
    sources = sorted(set(rows["head_layer"].tolist()))
    batch, n_pos = tokens.shape
    last = (lengths - 1).to(device=arch.device, dtype=torch.long)
    at_last = torch.arange(batch, device=arch.device)
    wanted = norm_wanted(arch, layers, sources)
    picks = {}
    for layer in layers:
        spec = arch.layers[layer]
        wanted[f"pre_in{layer}"] = (spec.mlp_in, "output")
        if spec.mlp_gate:
            wanted[f"pre_gate{layer}"] = (spec.mlp_gate, "output")
        wanted[f"act{layer}"] = (spec.mlp_out, "input")
    for source in sources:
        spec = arch.layers[source]
        wanted[f"z{source}"] = (spec.attn_out, "input")
        if by_position:
            wanted[f"pattern{source}"] = (spec.attention, "weights")
            wanted[f"v{source}"] = (spec.value, "output")
            picks[f"pattern{source}"] = lambda value: value[at_last, :, last]  # [batch, heads, key]
            picks[f"v{source}"] = lambda value: value  # every position
    if next_token_ids is not None:
        wanted["final"] = (arch.final_norm.path, "output")
        stop = None
    else:
        stop = f"act{max(layers)}"
    with eager_attention(arch.model) if by_position else contextlib.nullcontext():
        got = capture(arch.model, tokens, wanted, stop_after=stop, pick=lambda value: value[at_last, last], picks=picks)
    values = with_norm_scales(arch, {k: v.double() for k, v in got.items() if not k.startswith(("v", "final"))})
    if not by_position:
        n_pos = 1
        for source in sources:
            z = values[f"z{source}"].view(batch, 1, arch.n_heads, arch.d_head)
            values[f"values{source}"] = z - arch.layers[source].value_bias.double().view(arch.n_heads, arch.d_head).to(z)
            values[f"pattern{source}"] = torch.ones(batch, arch.n_heads, 1, dtype=torch.float64, device=arch.device)
    for source in sources if by_position else ():
        heads = arch.head_values(source, got[f"v{source}"].double())  # [batch, pos, heads, d_head]
        rebuilt = torch.einsum("bhp,bphd->bhd", values[f"pattern{source}"], heads).reshape(batch, -1)
        z = values[f"z{source}"]
        error = float((rebuilt - z).norm() / z.norm().clamp_min(1e-30))
        if error > REBUILD_TOLERANCE:
            raise LookupDecompositionError(
                f"Layer {source}'s attention output is not the attention-weighted sum of the values of {arch.layers[source].value} "
                f"(relative error {error:.2g}): look-ups are not supported for this {arch.model_type} model."
            )
        values[f"values{source}"] = heads - arch.layers[source].value_bias.double().view(arch.n_heads, arch.d_head).to(heads)

    n = len(rows)
    out = {name: torch.zeros(n, n_pos, dtype=torch.float64, device=arch.device) for name in ("attention", "gate", "up")}
    act = torch.zeros(n, dtype=torch.float64, device=arch.device)
    score = torch.zeros(n, n_pos, dtype=torch.float64, device=arch.device)
    layer_of, source_of = rows["layer"].to_numpy(), rows["head_layer"].to_numpy()
    for layer in layers:
        spec = arch.layers[layer]
        for source in sorted(set(source_of[layer_of == layer].tolist())):
            sel = np.nonzero((layer_of == layer) & (source_of == source))[0]
            b = torch.as_tensor(row_b[sel], device=arch.device)
            neurons = torch.as_tensor(rows["neuron"].to_numpy()[sel], device=arch.device)
            heads = torch.as_tensor(rows["head"].to_numpy()[sel], device=arch.device)
            pattern = values[f"pattern{source}"][b, heads]  # [rows, pos]
            head_values = values[f"values{source}"][b[:, None], torch.arange(n_pos, device=arch.device)[None], heads[:, None]]  # [rows, pos, d_head]
            where = (arch, weights, values, layer, source, b, neurons, heads, pattern, head_values)
            index = torch.as_tensor(sel, device=arch.device)
            up = _terms(*where, spec.mlp_in)
            out["attention"][index] = pattern
            out["up"][index] = up
            act[index] = values[f"act{layer}"][b, neurons]
            if spec.mlp_gate:
                gate = _terms(*where, spec.mlp_gate)
                g, u = values[f"pre_gate{layer}"][b, neurons], values[f"pre_in{layer}"][b, neurons]
                f_gate, slope = activation_and_slope(arch.act_fn, g)
                out["gate"][index] = gate
                score[index] = (slope * u)[:, None] * gate + f_gate[:, None] * up
            else:
                score[index] = up
    prob = None
    if next_token_ids is not None:
        logits = arch.logits(got["final"].to(arch.model.dtype)).double()
        b = torch.as_tensor(row_b, device=arch.device)
        prob = torch.softmax(logits, dim=-1)[b, torch.as_tensor(next_token_ids, device=arch.device)]
    return SourceTerms(out["attention"], out["gate"] if arch.gated else None, out["up"], score, act, prob)


def _terms(
    arch: Architecture, weights: Weights, values: dict, layer: int, source: int, b: torch.Tensor, neurons: torch.Tensor,
    heads: torch.Tensor, pattern: torch.Tensor, head_values: torch.Tensor, path: str,
) -> torch.Tensor:
    """``[rows, pos]``: each source position's term of the pre-activation read by projection ``path``."""
    read, _ = stream_read(arch, weights, values, layer, b, neurons, path)
    read_z, _ = head_read(arch, weights, values, source, read, b)
    read_h = read_z.view(len(b), arch.n_heads, arch.d_head)[torch.arange(len(b)), heads]  # [rows, d_head]
    return pattern * torch.einsum("npd,nd->np", head_values, read_h)


@dataclass
class LookupResult:
    rows: pd.DataFrame  # LOOKUP_COLUMNS, one per (pair, prompt, source position)
    stats: dict


def relative_error(terms: np.ndarray, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(|Σ terms - stored|, that over the terms' total magnitude)`` per row; ``terms`` ``[rows, pos]``."""
    error = np.abs(terms.sum(-1) - stored)
    return error, error / np.maximum(np.maximum(np.abs(terms).sum(-1), np.abs(stored)), 1e-12)


@dataclass
class Batch:
    """One forward pass's rows (indices into the frame run) and their terms."""

    members: np.ndarray
    terms: SourceTerms
    tokens: np.ndarray
    lengths: np.ndarray
    row_b: np.ndarray
    n_prompts: int


def run_batches(
    arch: Architecture, rows: pd.DataFrame, bos_id: int, batch_tokens: int, pad_id: int | None = None, with_prob: bool = False,
    progress: PhaseProgress | None = None, phase: str = "look-ups", by_position: bool = True,
) -> Iterator[Batch]:
    """``source_terms`` over ``rows`` (``layer``, ``neuron``, ``head_layer``, ``head``, ``prompt_token_ids``
    without BOS; ``next_token_id`` with ``with_prob``), each distinct prompt run once, batched by length."""
    pad_id = bos_id if pad_id is None else pad_id
    weights = Weights(arch)
    grouped = group_prompts(rows["prompt_token_ids"].tolist(), rows["layer"].to_numpy(), bos_id, batch_tokens)
    for done, batch in enumerate(grouped.batches, start=1):
        tokens, lengths = pad_right([grouped.prompts[p] for p in batch], pad_id)
        members, row_b = grouped.rows(batch)
        next_ids = rows["next_token_id"].to_numpy()[members] if with_prob else None
        terms = source_terms(arch, tokens, lengths, rows.iloc[members], row_b, weights, next_ids, by_position)
        yield Batch(members, terms, tokens.numpy(), lengths.numpy(), row_b, len(batch))
        if progress:
            progress(phase, done, len(grouped.batches))


def head_lookups(
    arch: Architecture,
    rows: pd.DataFrame,
    bos_id: int,
    batch_tokens: int,
    pad_id: int | None = None,
    progress: PhaseProgress | None = None,
) -> LookupResult:
    """rows: one per (pair, prompt): ``ROW_KEYS``, ``prompt_token_ids`` (BOS not included) and the stored
    attribution ``score``, ``in_contribution``, ``gate_contribution``. Returns every source position of every
    row with its attention, contributions, share of the head's score and rank, and the identity against the
    stored attribution (the largest of the score's, the up part's and the gate part's relative errors)."""
    started = time.perf_counter()
    rows = rows.reset_index(drop=True)
    parts, n_prompts, n_batches = [], 0, 0
    for batch in run_batches(arch, rows, bos_id, batch_tokens, pad_id, progress=progress):
        parts.append(_frame(rows.iloc[batch.members], batch.terms, batch.tokens, batch.lengths, batch.row_b))
        n_prompts, n_batches = n_prompts + batch.n_prompts, n_batches + 1
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=LOOKUP_COLUMNS)
    frame = frame[LOOKUP_COLUMNS].sort_values([*ROW_KEYS[:6], "position"]).reset_index(drop=True) if len(frame) else frame
    per_prompt = frame.drop_duplicates(ROW_KEYS[:6]) if len(frame) else frame
    seconds = time.perf_counter() - started
    stats = {
        "lookup_rows": len(frame),
        "pair_prompts": len(per_prompt),
        "pairs": int(per_prompt.groupby(ROW_KEYS[:5]).ngroups) if len(frame) else 0,
        "prompts": n_prompts,
        "forward_batches": n_batches,
        "lookup_seconds": seconds,
        "identity_max_abs_error": float(per_prompt["identity_abs_error"].max()) if len(frame) else 0.0,
        "identity_max_rel_error": float(per_prompt["identity_rel_error"].max()) if len(frame) else 0.0,
    }
    return LookupResult(frame, stats)


def _frame(rows: pd.DataFrame, got: SourceTerms, tokens: np.ndarray, lengths: np.ndarray, row_b: np.ndarray) -> pd.DataFrame:
    """The rows' positions, each row cut to its prompt's length."""
    def numpy(t: torch.Tensor | None) -> np.ndarray | None:
        return None if t is None else t.double().cpu().numpy()

    score, up, gate, attention = numpy(got.score), numpy(got.up), numpy(got.gate), numpy(got.attention)
    errors = [relative_error(score, rows["score"].to_numpy(float)), relative_error(up, rows["in_contribution"].to_numpy(float))]
    if gate is not None:
        errors.append(relative_error(gate, rows["gate_contribution"].to_numpy(float)))
    abs_error = np.max([e[0] for e in errors], axis=0)
    rel_error = np.max([e[1] for e in errors], axis=0)
    n_pos = lengths[row_b]
    keep = np.arange(tokens.shape[1])[None, :] < n_pos[:, None]  # [rows, pos]
    r, j = np.nonzero(keep)
    head_score = score.sum(-1)
    # Rank 1 = the position that adds most to the neuron (ties by earlier position).
    order = np.argsort(-np.where(keep, score, -np.inf), axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, score.shape[1] + 1)[None].repeat(len(rows), 0), axis=-1)
    frame = rows[ROW_KEYS].iloc[r].reset_index(drop=True)
    frame["position"] = j.astype(np.int32)
    frame["distance"] = (n_pos[r] - 1 - j).astype(np.int32)
    frame["token_id"] = tokens[row_b[r], j].astype(np.int64)
    frame["attention"] = attention[r, j]
    frame["gate_contribution"] = gate[r, j] if gate is not None else np.nan
    frame["in_contribution"] = up[r, j]
    frame["contribution"] = score[r, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["share"] = np.where(head_score[r] != 0, score[r, j] / head_score[r], np.nan)
    frame["rank"] = rank[r, j].astype(np.int32)
    frame["head_score"] = rows["score"].to_numpy(float)[r]
    frame["identity_abs_error"] = abs_error[r]
    frame["identity_rel_error"] = rel_error[r]
    return frame
