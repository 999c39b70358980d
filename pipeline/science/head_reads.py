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
q|k|v, NeoX's per-head q|k|v; repeated for grouped-query attention), the weights from eager attention.

Two checks, kept apart because they measure different things (docs/quality.md, "Tolerances"):

- the **identity**: the terms against the head's total formed in the same pass from the ``z`` the model
  computed (``read_z_h · (z_h - value_bias_h)``). Both come from the same captured values; what separates them is
  only the rounding of the model's own ``z = A·V`` product, which IEEE arithmetic bounds on any CPU or GPU by
  about ``n·u`` times ``Σ_k |read_k| (Σ_j A_j |v_jk| + |b_k|)`` (``rounding_scale``: ``n`` source positions, ``u``
  the unit roundoff). The error is stored relative to that scale, so its tolerance does not depend on the
  hardware. Each batch also checks that ``Σ_j A v_j`` rebuilds every captured ``z`` on the same scale (the
  look-up decomposition holds for this family).
- the **agreement** with the stored attribution, which came from another forward pass (other batch shapes, the
  model's default attention kernel): two fp32 passes differ by forward rounding, bounded by nothing better
  than the size of what is read, so the difference is stored relative to ``‖read_z_h‖·‖z_h - value_bias_h‖``
  (``magnitude``, Cauchy-Schwarz: the most the head could contribute) and checked with a tolerance measured
  across CPU kernel paths. It catches a wrong prompt or head, not rounding.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import LookupSettings
from lookups.pipeline.inputs.architecture import Architecture, activation_and_slope
from lookups.pipeline.inputs.capture import Resume, capture, eager_attention
from lookups.pipeline.science.attribution import Weights, head_read, norm_wanted, stream_read, with_norm_scales
from lookups.pipeline.science.batching import group_prompts, pad_right

#: What one pair's row on one prompt names (the pair, the prompt) before its positions' columns.
ROW_KEYS = ["cohort", "layer", "neuron", "head_layer", "head", "doc_id", "split", "active"]
LOOKUP_COLUMNS = [
    *ROW_KEYS, "position", "distance", "token_id", "attention", "gate_contribution", "in_contribution", "contribution",
    "share", "rank", "head_score", "identity_abs_error", "identity_rel_error", "attribution_abs_error", "attribution_rel_error",
]
ERROR_COLUMNS = LOOKUP_COLUMNS[-4:]
#: How closely ``Σ_j A v_j`` must rebuild the captured z, relative to ``Σ_j A_j |v_j|`` per element: the
#: rounding of the model's product is at most about n·u of it (6e-6 for 100 fp32 positions), so a larger
#: error means the attention output is not that product.
REBUILD_TOLERANCE = 1e-4
#: The parts of a head's attribution: the gate and up pre-activations' (gated MLPs) and the score.
PARTS = ("gate", "up", "score")


class LookupDecompositionError(LookupsError, RuntimeError):
    """A model's attention output is not the weighted sum of the values its description names."""


@dataclass
class Part:
    """One part of a head's attribution on a set of (pair, prompt) rows: its terms per source position
    ``[rows, pos]`` (zero past a row's length) and per row ``[rows]``: the total formed from this pass's ``z``,
    the scale that bounds the rounding between the two, and the largest value the head could have given."""

    terms: torch.Tensor
    total: torch.Tensor
    rounding_scale: torch.Tensor
    magnitude: torch.Tensor

    def combine(self, weight: torch.Tensor, other: Part, other_weight: torch.Tensor) -> Part:
        """``weight·self + other_weight·other`` (per row weights): the score from the gate and up parts."""
        w, o = weight[:, None], other_weight[:, None]
        return Part(
            w * self.terms + o * other.terms, weight * self.total + other_weight * other.total,
            weight.abs() * self.rounding_scale + other_weight.abs() * other.rounding_scale,
            weight.abs() * self.magnitude + other_weight.abs() * other.magnitude,
        )


@dataclass
class SourceTerms:
    """One pass's look-up terms for a set of (pair, prompt) rows, and what the neuron read on each row."""

    attention: torch.Tensor  # [rows, pos]
    parts: dict[str, Part]  # PARTS ('gate' only for gated MLPs)
    act: torch.Tensor  # [rows] the neuron's activation
    prob: torch.Tensor | None  # [rows] the probability of the row's token after the prompt, when asked for

    @property
    def head_score(self) -> torch.Tensor:
        """``[rows]`` the head's score on each row, from this pass's ``z``."""
        return self.parts["score"].total


def source_terms(
    arch: Architecture,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    rows: pd.DataFrame,
    row_b: np.ndarray,
    weights: Weights | None = None,
    next_token_ids: np.ndarray | None = None,
    by_position: bool = True,
    resume: Resume | None = None,
    edits: dict | None = None,
    forward: dict | None = None,
) -> SourceTerms:
    """Run the batch ``tokens`` ``[batch, pos]`` (right-padded) once and split, for each row (``layer``,
    ``neuron``, ``head_layer``, ``head``; on batch row ``row_b``), the head's direct contribution to the neuron
    at the last position by source position. With ``next_token_ids`` the forward runs to the logits and the
    probability of each row's token is returned too. Without ``by_position`` only the head's total is formed
    (one "position": its z), with the model's own attention kernel: what the counterfactual test needs.
    ``resume`` and ``edits`` are ``capture``'s: the pass starts at a cached stream, with a module's input
    rewritten (the knockout; the head's total then reads the rewritten z); ``forward`` is ``capture``'s too (a
    key/value cache of earlier positions: ``tokens`` are then the positions after them)."""
    weights = weights or Weights(arch)
    values, got = _capture(arch, tokens, lengths, rows, next_token_ids is not None, by_position, resume, edits, forward)
    n = len(rows)
    n_pos = tokens.shape[1] if by_position else 1
    attention = torch.zeros(n, n_pos, dtype=torch.float64, device=arch.device)
    act = torch.zeros(n, dtype=torch.float64, device=arch.device)
    parts: dict[str, list] = {}
    layer_of, source_of = rows["layer"].to_numpy(), rows["head_layer"].to_numpy()
    for layer in sorted(set(layer_of.tolist())):
        spec = arch.layers[layer]
        for source in sorted(set(source_of[layer_of == layer].tolist())):
            sel = np.nonzero((layer_of == layer) & (source_of == source))[0]
            b = torch.as_tensor(row_b[sel], device=arch.device)
            neurons = torch.as_tensor(rows["neuron"].to_numpy()[sel], device=arch.device)
            heads = torch.as_tensor(rows["head"].to_numpy()[sel], device=arch.device)
            index = torch.as_tensor(sel, device=arch.device)
            reading = _HeadReading(arch, weights, values, source, b, heads)
            up = reading.part(layer, neurons, spec.mlp_in)
            attention[index] = reading.pattern
            act[index] = values[f"act{layer}"][b, neurons]
            found = {"up": up, "score": up}
            if spec.mlp_gate:
                gate = reading.part(layer, neurons, spec.mlp_gate)
                f_gate, slope = activation_and_slope(arch.act_fn, values[f"pre_gate{layer}"][b, neurons])
                found.update(gate=gate, score=gate.combine(slope * values[f"pre_in{layer}"][b, neurons], up, f_gate))
            for name, part in found.items():
                parts.setdefault(name, []).append((index, part))
    prob = None
    if next_token_ids is not None:
        logits = arch.logits(got["final"].to(arch.model.dtype)).double()
        b = torch.as_tensor(row_b, device=arch.device)
        prob = torch.softmax(logits, dim=-1)[b, torch.as_tensor(next_token_ids, device=arch.device)]
    return SourceTerms(attention, {name: _gather(pieces, n, n_pos, arch.device) for name, pieces in parts.items()}, act, prob)


def _capture(
    arch: Architecture, tokens: torch.Tensor, lengths: torch.Tensor, rows: pd.DataFrame, to_logits: bool, by_position: bool,
    resume: Resume | None = None, edits: dict | None = None, forward: dict | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward pass: at each row's last position, what the terms read (float64: the norms' 1/scales, the
    MLPs' pre-activations and activations, each source layer's ``z``), and per source layer the attention
    pattern of the last query ``pattern{s}`` ``[batch, heads, pos]`` and every position's value vectors
    ``values{s}`` ``[batch, pos, heads, d_head]`` (eager attention). Without ``by_position`` (the model's own
    kernel) the one "position" is the head's z itself, with weight 1. Returns (values, what was captured)."""
    layers = sorted(set(rows["layer"].tolist()))
    sources = sorted(set(rows["head_layer"].tolist()))
    batch = tokens.shape[0]
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
    if to_logits:
        wanted["final"] = (arch.final_norm.path, "output")
    stop = None if to_logits else f"act{max(layers)}"
    with eager_attention(arch.model) if by_position else contextlib.nullcontext():
        got = capture(arch.model, tokens, wanted, stop_after=stop, pick=lambda value: value[at_last, last], picks=picks, resume=resume, edits=edits,
                      forward=forward)
    values = with_norm_scales(arch, {k: v.double() for k, v in got.items() if not k.startswith(("v", "final"))})
    for source in sources:
        if by_position:
            heads = arch.head_values(source, got[f"v{source}"].double())  # [batch, pos, heads, d_head]
            _check_rebuild(arch, source, values[f"pattern{source}"], heads, values[f"z{source}"])
            values[f"values{source}"] = heads
        else:
            values[f"values{source}"] = values[f"z{source}"].view(batch, 1, arch.n_heads, arch.d_head)
            values[f"pattern{source}"] = torch.ones(batch, arch.n_heads, 1, dtype=torch.float64, device=arch.device)
    return values, got


def _check_rebuild(arch: Architecture, source: int, pattern: torch.Tensor, heads: torch.Tensor, z: torch.Tensor) -> None:
    """Refuse the family when ``Σ_j A_j v_j`` does not rebuild the captured z, element by element, within the
    rounding of that product (``REBUILD_TOLERANCE`` of ``Σ_j A_j |v_j|``)."""
    rebuilt = torch.einsum("bhp,bphd->bhd", pattern, heads)
    scale = torch.einsum("bhp,bphd->bhd", pattern, heads.abs())
    error = float(((rebuilt - z.view_as(rebuilt)).abs() / scale.clamp_min(1e-30)).max())
    if error > REBUILD_TOLERANCE:
        raise LookupDecompositionError(
            f"Layer {source}'s attention output is not the attention-weighted sum of the values of {arch.layers[source].value} "
            f"(relative error {error:.2g}): look-ups are not supported for this {arch.model_type} model."
        )


class _HeadReading:
    """The rows' heads of one source layer, as read by a neuron: the last query's pattern, the value vectors and
    the head's ``z``, each row's own head picked out."""

    def __init__(self, arch: Architecture, weights: Weights, values: dict, source: int, b: torch.Tensor, heads: torch.Tensor):
        self.arch, self.weights, self.values, self.source, self.b = arch, weights, values, source, b
        n_pos = values[f"pattern{source}"].shape[-1]
        bias = arch.layers[source].value_bias.double().to(arch.device).view(arch.n_heads, arch.d_head)[heads]  # [rows, d_head]
        self.bias = bias
        self.pattern = values[f"pattern{source}"][b, heads]  # [rows, pos]
        self.raw = values[f"values{source}"][b[:, None], torch.arange(n_pos, device=arch.device)[None], heads[:, None]]  # [rows, pos, d_head]
        self.z = values[f"z{source}"].view(-1, arch.n_heads, arch.d_head)[b, heads] - bias  # [rows, d_head]
        self.heads = heads

    def part(self, layer: int, neurons: torch.Tensor, path: str) -> Part:
        """The part read by projection ``path`` (columns ``neurons``) of ``layer``'s MLP."""
        stream = stream_read(self.arch, self.weights, self.values, layer, self.b, neurons, path)
        read_z = head_read(self.arch, self.weights, self.values, self.source, stream, self.b).read
        read_h = read_z.view(len(self.b), self.arch.n_heads, self.arch.d_head)[torch.arange(len(self.b)), self.heads]  # [rows, d_head]
        terms = self.pattern * torch.einsum("npd,nd->np", self.raw - self.bias[:, None], read_h)
        # The rounding bound of the model's own z = A·V, read through read_h (the value bias enters through ΣA = 1).
        spread = torch.einsum("np,npd->nd", self.pattern, self.raw.abs()) + self.bias.abs()
        return Part(terms, (read_h * self.z).sum(-1), (read_h.abs() * spread).sum(-1), read_h.norm(dim=-1) * self.z.norm(dim=-1))


def _gather(pieces: list[tuple[torch.Tensor, Part]], n: int, n_pos: int, device) -> Part:
    """One ``Part`` over all rows from the pieces computed per (layer, source layer)."""
    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, dtype=torch.float64, device=device)

    out = Part(zeros(n, n_pos), zeros(n), zeros(n), zeros(n))
    for index, part in pieces:
        out.terms[index], out.total[index] = part.terms, part.total
        out.rounding_scale[index], out.magnitude[index] = part.rounding_scale, part.magnitude
    return out


@dataclass
class LookupResult:
    rows: pd.DataFrame  # LOOKUP_COLUMNS, one per (pair, prompt, source position)
    stats: dict


def relative(error: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``error / scale``; where the scale is 0 (nothing read) an error can only be 0, else it is infinite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, error / scale, np.where(error > 0, np.inf, 0.0))


#: The stored attribution column each part is compared with.
STORED = {"gate": "gate_contribution", "up": "in_contribution", "score": "score"}


def errors(rows: pd.DataFrame, parts: dict[str, Part]) -> dict[str, np.ndarray]:
    """Per row, the largest over the parts of: the identity error (the terms' sum against this pass's total;
    absolute and relative to the rounding scale) and the agreement with the stored attribution (absolute and
    relative to the head's magnitude)."""
    out = {column: np.zeros(len(rows)) for column in ERROR_COLUMNS}
    for name, part in parts.items():
        terms, total = part.terms.cpu().numpy(), part.total.cpu().numpy()
        identity = np.abs(terms.sum(-1) - total)
        agreement = np.abs(total - rows[STORED[name]].to_numpy(float))
        found = {
            "identity_abs_error": identity, "identity_rel_error": relative(identity, part.rounding_scale.cpu().numpy()),
            "attribution_abs_error": agreement, "attribution_rel_error": relative(agreement, part.magnitude.cpu().numpy()),
        }
        for column, value in found.items():
            out[column] = np.maximum(out[column], value)
    return out


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
    progress: Progress | None = None, phase: str = "look-ups", by_position: bool = True,
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
    arch: Architecture, rows: pd.DataFrame, settings: LookupSettings, bos_id: int, pad_id: int | None = None, progress: Progress | None = None,
) -> LookupResult:
    """rows: one per (pair, prompt): ``ROW_KEYS``, ``prompt_token_ids`` (BOS not included) and the stored
    attribution ``score``, ``in_contribution``, ``gate_contribution``. Returns every source position of every
    row with its attention, contributions, share of the head's score and rank, the identity (the terms against
    the head's output from the same pass) and the agreement with the stored attribution (``errors``)."""
    batch_tokens = settings.batch_tokens
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
        # identity_max_abs_error, identity_max_rel_error, attribution_max_abs_error, attribution_max_rel_error
        **{column.replace("_", "_max_", 1): float(per_prompt[column].max()) if len(frame) else 0.0 for column in ERROR_COLUMNS},
    }
    return LookupResult(frame, stats)


def _frame(rows: pd.DataFrame, got: SourceTerms, tokens: np.ndarray, lengths: np.ndarray, row_b: np.ndarray) -> pd.DataFrame:
    """The rows' positions, each row cut to its prompt's length."""
    def numpy(name: str) -> np.ndarray | None:
        return got.parts[name].terms.cpu().numpy() if name in got.parts else None

    score, up, gate, attention = numpy("score"), numpy("up"), numpy("gate"), got.attention.cpu().numpy()
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
    for column, value in errors(rows, got.parts).items():
        frame[column] = value[r]
    return frame
