"""Why a head looks where it does (QK attribution): each looked-up edge's pre-softmax attention score split into
(query-side component, key-side component) terms.

An edge is a (pair, prompt, key position j): head h of layer L attends from the prompt's last position t to j.
The head's score is ``s(t, j) = q_t · k_j · scaling`` (the family's scaling: 1/sqrt(d_head), Gemma's
query_pre_attn_scalar, OPT's pre-scaled q: ``Layer.scaling``). Gemma 2 soft-caps scores, ``cap·tanh(s / cap)``,
after this product: the decomposed ``s`` is the score *before* the cap (the cap is monotonic, so it does not
reorder keys). None of the supported families adds a score offset (no ALiBi).

Both q_t and k_j are read from the stream entering layer L's attention, which is the sum of the same
components on either side: ``embed`` (the token embedding, with any scale: Gemma's sqrt(d_model)),
``pos_embed`` (learned absolute positions: GPT-2, OPT), one per head of each earlier layer ``L{s}H{h}`` (its z
less its value bias, through its slice of W_O), ``MLP{s}`` (each earlier MLP's output, its output bias
included, as in attribution) and ``bias`` (everything constant: attention output biases, value biases through
W_O, post-norm biases, and on each side the attention norm's bias through W_Q / W_K, b_Q / b_K and any q/k norm
bias). Each component passes, with the scales cached on this prompt, the post-norm it joins the stream
through (Gemma 2/3, OLMo 2), the attention's input norm (none in OLMo 2; shared with the MLP in GPT-J and
Phi), W_Q or W_K, any q/k norm (Qwen3, Gemma 3 per head; OLMo 2 over the whole projection) and the rotary
embedding at its position (partial and interleaved included): all linear once the scales are frozen, so
``s = Σ_{a,b} q_a · k_b · scaling`` exactly, over query components a at t and key components b at j (grouped-
query attention: query head h reads key head h // (n_heads / n_kv_heads)). OLMo's ``clip_qkv`` clamp is not
linear: an edge whose q or k it actually clips is refused. Terms are float64, from values captured in one
forward pass per batch (eager attention, right padding, each distinct prompt once).

Two checks per edge, kept apart as in head_reads (docs/quality.md, "Tolerances"):

- the **identity**: the terms' sum against ``s`` formed in float64 from the q_t and k_j this pass computed
  (the q/k norm's output or the projection's, turned by the same rotary tables). What separates them is the
  fp32 rounding of the model's own sum of the stream, norm and projection; it is stored absolute and relative to
  ``|q_t|·|k_j|·scaling`` (the most the score could be, Cauchy-Schwarz), which does not depend on the hardware;
  ``QKSettings.identity_tolerance`` bounds it.
- the **agreement**: the softmax over every key position of the scores rebuilt from the decomposition (the
  query's components summed, each position's key from the components' sum; with the causal mask, sliding window
  and soft-capping) against the attention weight on j the model computed with eager attention. A difference
  above ``AGREEMENT_TOLERANCE`` means the description of the attention is wrong: the family is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import QKSettings
from lookups.pipeline.inputs import architecture as described
from lookups.pipeline.inputs.architecture import Architecture, Norm, UnsupportedModel
from lookups.pipeline.inputs.capture import capture, eager_attention
from lookups.pipeline.science.attribution import Weights, norm_wanted, with_norm_scales
from lookups.pipeline.science.batching import group_prompts, pad_right

#: What names an edge: its pair, its prompt and the key position it looks up.
EDGE_KEYS = ["cohort", "layer", "neuron", "head_layer", "head", "doc_id", "split", "active", "position", "lookup_rank"]
QK_COLUMNS = [
    *EDGE_KEYS, "token_id", "attention", "score", "margin", "side", "component", "key_component", "term", "share", "rank",
    "identity_abs_error", "identity_rel_error", "attention_abs_error",
]
#: How closely the softmax of the decomposed scores must give the model's attention weight (an absolute
#: difference of probabilities). fp32 scores round by ~1e-7 of |q||k|; a wrong norm, rotary, scaling or mask
#: moves weights by far more.
AGREEMENT_TOLERANCE = 1e-4
SIDES = ("query", "key", "pair")
#: Edges decomposed at once: their stream parts take rows x components x d_model float64 (64 x 370 x 1536 x 8 bytes,
#: 290 MB, for a 28-layer, 12-head model).
EDGE_CHUNK = 64


@dataclass
class QKResult:
    rows: pd.DataFrame  # QK_COLUMNS: per edge, its top query-side, key-side and (query, key) terms
    stats: dict


@dataclass
class EdgeTerms:
    """One forward pass's decomposition of the edges of one head layer: the full term matrix and the checks."""

    edges: np.ndarray  # [rows] indices into the edges frame
    components: list[str]  # the components of either side, in the term matrix's order
    terms: torch.Tensor  # [rows, query components, key components] float64, summing to score
    score: torch.Tensor  # [rows] s from this pass's q_t and k_j
    magnitude: torch.Tensor  # [rows] |q_t|·|k_j|·scaling
    attention: torch.Tensor  # [rows] the model's weight on j (eager)
    described_attention: torch.Tensor  # [rows] the softmax of the decomposed scores at j
    margin: torch.Tensor  # [rows] s minus the largest decomposed score over the other positions 1..t seen
    token_id: np.ndarray  # [rows] the token at j

    @property
    def identity_abs_error(self) -> torch.Tensor:
        return (self.terms.sum(dim=(1, 2)) - self.score).abs()

    @property
    def identity_rel_error(self) -> torch.Tensor:
        return self.identity_abs_error / self.magnitude.clamp_min(1e-300)

    @property
    def attention_abs_error(self) -> torch.Tensor:
        return (self.described_attention - self.attention).abs()


def _refuse(arch: Architecture, why: str) -> UnsupportedModel:
    return UnsupportedModel(f"QK attribution does not support this '{arch.model_type}' model: {why}.")


def component_names(arch: Architecture, layer: int) -> list[str]:
    """The components of the stream entering ``layer``'s attention, in the order ``_stream_parts`` stacks them."""
    names = ["embed"] + (["pos_embed"] if arch.pos_embed else [])
    for source in range(layer):
        names += [f"L{source}H{h}" for h in range(arch.n_heads)] + [f"MLP{source}"]
    return names + ["bias"]


def edge_terms(
    arch: Architecture, edges: pd.DataFrame, bos_id: int, batch_tokens: int, pad_id: int | None = None, progress: Progress | None = None,
) -> Iterator[EdgeTerms]:
    """The full decomposition of every edge (``edges``: ``layer``... ``head_layer``, ``head``, ``prompt_token_ids``
    without BOS, ``position`` into the BOS-prefixed prompt), one forward pass per batch of distinct prompts."""
    if arch.qk_refusal:
        raise UnsupportedModel(arch.qk_refusal)
    pad_id = bos_id if pad_id is None else pad_id
    head_layers = edges["head_layer"].to_numpy()
    # Batched by length alone (not by head layer first): a pass runs to its deepest head layer either way, and the
    # heads that look up sit in few, late layers, while grouping by layer first padded every group to its longest
    # prompt (2.4x the real tokens on the default run).
    grouped = group_prompts(edges["prompt_token_ids"].tolist(), np.zeros(len(edges), dtype=np.int64), bos_id, batch_tokens)
    reader = _Reader(arch)
    for done, batch in enumerate(grouped.batches, start=1):
        tokens, lengths = pad_right([grouped.prompts[p] for p in batch], pad_id)
        members, row_b = grouped.rows(batch)
        layers = sorted(set(head_layers[members].tolist()))
        got, recorded = _capture(arch, tokens, lengths, layers)
        for layer in layers:
            sel = np.nonzero(head_layers[members] == layer)[0]
            everywhere = reader.keys_everywhere(got, recorded, layer, np.unique(row_b[sel]), lengths)  # once per pass and layer
            for chunk in np.array_split(sel, max(1, -(-len(sel) // EDGE_CHUNK))):  # bounds the [rows, components, d_model] parts
                yield reader.terms(got, recorded, layer, members[chunk], row_b[chunk], edges.iloc[members[chunk]], tokens, lengths, everywhere)
        if progress:
            progress("qk attribution", done, len(grouped.batches))


def _capture(arch: Architecture, tokens: torch.Tensor, lengths: torch.Tensor, layers: list[int]) -> tuple[dict[str, torch.Tensor], dict]:
    """One eager forward pass of ``tokens`` ``[batch, pos]`` (row b has ``lengths[b]`` real tokens), stopped after the
    deepest head layer's attention. Keeps, at every position: the embedding (and learned positions), each earlier
    layer's z, post-attention norm 1/scale (``post_attn_scale{s}``) and added MLP output; per head layer the
    attention norm's 1/scale, the q and k projections, the q/k norms' outputs and 1/scales, and the last query's
    pattern ``[batch, heads, key]``. Returns (values, the rotary tables each head layer was handed)."""
    deepest = max(layers)
    last = (lengths - 1).to(device=arch.device, dtype=torch.long)
    at_last = torch.arange(tokens.shape[0], device=arch.device)
    wanted = {"embed": (arch.first_block, "input"), **norm_wanted(arch, [], range(deepest))}
    if arch.pos_embed:
        wanted["pos_embed"] = (arch.pos_embed, "output")
    for source in range(deepest):
        spec = arch.layers[source]
        wanted[f"z{source}"] = (spec.attn_out, "input")
        wanted[f"mlp{source}"] = (spec.post_mlp_norm.path if spec.post_mlp_norm else spec.mlp_out, "output")
    picks = {}
    for layer in layers:
        spec = arch.layers[layer]
        wanted[f"query{layer}"], wanted[f"key{layer}"] = (spec.query, "output"), (spec.key, "output")
        wanted[f"pattern{layer}"] = (spec.attention, "weights")
        picks[f"pattern{layer}"] = lambda value: value[at_last, :, last]  # [batch, heads, key]
        for kind, norm in _norms(spec):
            wanted[f"{kind}_in{layer}"], wanted[f"{kind}_out{layer}"] = (norm.path, "input"), (norm.path, "output")
    attention = {layer: arch.layers[layer].attention for layer in layers}
    with eager_attention(arch.model), described.recording_rotary(arch.model, attention) as recorded:
        got = capture(arch.model, tokens, wanted, stop_after=f"pattern{deepest}", picks=picks)
    got = with_norm_scales(arch, got)
    for layer in layers:
        spec = arch.layers[layer]
        for kind, norm in _norms(spec):
            x, y = got.pop(f"{kind}_in{layer}"), got[f"{kind}_out{layer}"]
            got[f"{kind}_scale{layer}"] = norm.inverse_scale(x, y) if kind == "attn_norm" else described.qk_norm_scale(spec, norm, x, y)
    return got, dict(recorded)


def _norms(spec: described.Layer) -> list[tuple[str, Norm]]:
    """The norms on a layer's query and key side that it has: (capture key prefix, norm)."""
    found = (("attn_norm", spec.attn_norm), ("q_norm", spec.q_norm), ("k_norm", spec.k_norm))
    return [(kind, norm) for kind, norm in found if norm is not None]


def _normed(norm: Norm, x: torch.Tensor, inverse_scale: torch.Tensor) -> torch.Tensor:
    """A component ``x`` ``[..., width]`` through ``norm`` frozen at ``inverse_scale`` (broadcast against ``x[..., 0]``):
    ``gain ⊙ center(x) / s``, linear in ``x`` (the norm's bias is a constant, counted with the biases)."""
    if norm.centered:
        x = x - x.mean(-1, keepdim=True)
    return x * norm.gain.to(x) * inverse_scale.to(x)[..., None]


class _Reader:
    """The decomposition of one head layer's edges in one pass: stream components, through the attention's input
    norm, projection, q/k norm and rotary, on each side; the projections converted to float64 once."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.weights = Weights(arch)
        self._projections: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def projection(self, layer: int, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W [d_model, heads, d_head], b [heads, d_head] or None)`` of ``layer``'s query or key side, float64."""
        if (layer, side) not in self._projections:
            weight, bias = self.arch.qk_projection(layer, side)
            self._projections[(layer, side)] = (weight.double(), bias.double() if bias is not None else None)
        return self._projections[(layer, side)]

    def stream_parts(self, got: dict, layer: int, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``[rows, components, d_model]``: the components (``component_names``) of the stream entering ``layer``'s
        attention on batch rows ``b`` at positions ``p``, each through its post-norm at its cached scale."""
        arch = self.arch
        embed = got["embed"][b, p].double()
        names = component_names(arch, layer)
        parts = embed.new_empty(len(b), len(names), embed.shape[-1])  # filled in place: no concatenation of ~300 slices
        if arch.pos_embed:
            positions = got["pos_embed"]
            positions = positions[b if positions.shape[0] > 1 else torch.zeros_like(b), p].double()  # GPT-2: [1, pos, d_model]
            parts[:, 0], parts[:, 1] = embed - positions, positions
        else:
            parts[:, 0] = embed
        at = 2 if arch.pos_embed else 1
        bias = torch.zeros_like(embed)
        for source in range(layer):
            heads, constant = self._heads(got, source, got[f"z{source}"][b, p].double(), b, p)
            parts[:, at: at + arch.n_heads], parts[:, at + arch.n_heads] = heads, got[f"mlp{source}"][b, p]
            at += arch.n_heads + 1
            bias = bias + constant
        parts[:, at] = bias
        return parts

    def _heads(self, got: dict, source: int, z: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``source``'s heads as added to the stream, ``[rows, n_heads, d_model]`` from ``z`` ``[rows, n_heads *
        d_head]`` at batch rows ``b``, positions ``p``, and the constant it adds ``[rows, d_model]`` (output bias,
        value bias through W_O, post-norm bias)."""
        arch = self.arch
        spec = arch.layers[source]
        w_o = self.weights.weight(spec.attn_out)  # [n_heads * d_head, d_model]
        value_bias = spec.value_bias.to(w_o)
        per_head = (z - value_bias).unflatten(-1, (arch.n_heads, arch.d_head))
        heads = torch.einsum("...hd,hdm->...hm", per_head, w_o.view(arch.n_heads, arch.d_head, -1))
        constant = (value_bias @ w_o).expand(*z.shape[:-1], w_o.shape[1])
        if self.weights.bias(spec.attn_out) is not None:
            constant = constant + self.weights.bias(spec.attn_out)
        post = spec.post_attn_norm
        if post:
            scale = got[f"post_attn_scale{source}"][b, p]
            heads, constant = _normed(post, heads, scale[..., None]), _normed(post, constant, scale)
            if post.bias is not None:
                constant = constant + post.bias.to(constant)
        return heads, constant

    def stream_total(self, got: dict, layer: int, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """``[rows, d_model]``: the components of the stream entering ``layer``'s attention summed, at batch rows
        ``b``, positions ``p`` (what the decomposed keys of the agreement check are read from). The heads of
        a layer are summed inside one product with W_O: ``Σ_h (z_h - b_v,h) W_O,h`` plus the constant is ``z W_O +
        b_O`` (and so through a post-norm, linear at its frozen scale)."""
        total = got["embed"][b, p].double()
        for source in range(layer):
            spec = self.arch.layers[source]
            added = got[f"z{source}"][b, p].double() @ self.weights.weight(spec.attn_out)
            if self.weights.bias(spec.attn_out) is not None:
                added = added + self.weights.bias(spec.attn_out)
            if spec.post_attn_norm:
                added = _normed(spec.post_attn_norm, added, got[f"post_attn_scale{source}"][b, p])
                if spec.post_attn_norm.bias is not None:
                    added = added + spec.post_attn_norm.bias.to(added)
            total = total + added + got[f"mlp{source}"][b, p].double()
        return total

    def side(self, got: dict, recorded: dict, layer: int, b: torch.Tensor, p: torch.Tensor, heads: torch.Tensor, side: str) -> torch.Tensor:
        """``[rows, n, d_head]``: the part of the query (``side`` 'query') or key ('key') of head ``heads`` ``[rows]``
        (key heads for keys) at batch rows ``b``, positions ``p`` that each stream component carries: through the
        attention norm, the projection, any q/k norm and the rotary embedding. The components are read once per
        distinct position and projected once per distinct (position, head): edges of one prompt share them."""
        spec = self.arch.layers[layer]
        positions, at = _distinct(b, p)
        ub, up = positions[:, 0], positions[:, 1]
        parts = self.stream_parts(got, layer, ub, up)  # [positions, n, d_model], the last one the constant
        if spec.attn_norm:
            parts = _normed(spec.attn_norm, parts, got[f"attn_norm_scale{layer}"][ub, up][:, None])
        pairs, of_row = _distinct(at, heads)
        where, head = pairs[:, 0], pairs[:, 1]
        weight, proj_bias = self.projection(layer, side)  # [d_model, heads, d_head]
        x = parts.new_empty(len(pairs), parts.shape[1], weight.shape[-1])
        for h in head.unique().tolist():
            sel = torch.nonzero(head == h)[:, 0]
            x[sel] = parts[where[sel]] @ weight[:, h]
        constant = torch.zeros(len(pairs), weight.shape[-1], dtype=torch.float64, device=parts.device)  # [pairs, d_head]
        if spec.attn_norm and spec.attn_norm.bias is not None:
            constant = constant + torch.einsum("m,rmd->rd", spec.attn_norm.bias.to(weight), weight[:, head].transpose(0, 1))
        if proj_bias is not None:
            constant = constant + proj_bias[head]
        pb, pp = ub[where], up[where]
        norm = spec.q_norm if side == "query" else spec.k_norm
        if norm:
            gain, norm_bias = described.qk_norm_gain(norm, self.arch.d_head)  # [heads or 1, d_head]
            scale = got[f"{side[0]}_norm_scale{layer}"][pb, pp]  # [pairs, heads or 1]
            rows = torch.arange(len(pairs), device=parts.device)
            factor = gain.to(x)[head if gain.shape[0] > 1 else 0 * head] * scale[rows, head if scale.shape[-1] > 1 else 0 * head][:, None]
            x, constant = x * factor[:, None], constant * factor
            if norm_bias is not None:
                constant = constant + norm_bias.to(x)[head if norm_bias.shape[0] > 1 else 0 * head]
        x = torch.cat([x[:, :-1], x[:, -1:] + constant[:, None]], dim=1)
        if spec.rotary_dim:
            cos, sin = described.rotary_tables(spec, recorded[layer])
            x = described.rotate(spec, x, cos[pp][:, None], sin[pp][:, None])
        return x[of_row]

    def keys_everywhere(self, got: dict, recorded: dict, layer: int, rows: np.ndarray, lengths: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """``(rows, [rows, pos, key heads, d_head])``: the keys of batch rows ``rows`` (sorted) rebuilt from the
        decomposition (the stream's components summed, through the same maps as ``side``), for the agreement check;
        once per pass and head layer, whatever the number of edge chunks. Only each row's real positions (``lengths``)
        are computed: the padding after them, which no query of the row sees, is left 0."""
        spec = self.arch.layers[layer]
        device = self.arch.device
        n = lengths[torch.as_tensor(rows)].to(device)
        b = torch.as_tensor(rows, device=device).repeat_interleave(n)
        p = torch.arange(int(n.sum()), device=device) - (n.cumsum(0) - n).repeat_interleave(n)  # 0..n-1 on each row
        x = self.stream_total(got, layer, b, p)  # [real positions, d_model]
        if spec.attn_norm:
            x = _normed(spec.attn_norm, x, got[f"attn_norm_scale{layer}"][b, p])
            if spec.attn_norm.bias is not None:
                x = x + spec.attn_norm.bias.to(x)
        weight, proj_bias = self.projection(layer, "key")
        keys = (x @ weight.flatten(1)).unflatten(-1, weight.shape[1:]) + (proj_bias if proj_bias is not None else 0.0)
        if spec.k_norm:
            gain, norm_bias = described.qk_norm_gain(spec.k_norm, self.arch.d_head)
            keys = keys * gain.to(keys) * got[f"k_norm_scale{layer}"][b, p][..., None].to(keys) + (norm_bias.to(keys) if norm_bias is not None else 0.0)
        if spec.rotary_dim:
            cos, sin = described.rotary_tables(spec, recorded[layer])
            keys = described.rotate(spec, keys, cos[p][:, None], sin[p][:, None])
        padded = keys.new_zeros(len(rows), int(n.max()), *keys.shape[1:])
        padded[torch.searchsorted(torch.as_tensor(rows, device=device), b), p] = keys
        return rows, padded

    def captured(self, got: dict, recorded: dict, layer: int, b: torch.Tensor, p: torch.Tensor, heads: torch.Tensor, side: str) -> torch.Tensor:
        """``[rows, d_head]``: the query or key this pass computed at batch rows ``b``, positions ``p``, head ``heads``
        (the q/k norm's output, or the projection's clamped), turned by the rotary tables, float64. Refuses an edge
        whose projection OLMo's ``clip_qkv`` clips (the clamp is not linear)."""
        arch = self.arch
        spec = arch.layers[layer]
        raw = arch.qk_heads(layer, got[f"{side}{layer}"], side)[b, p, heads].double()  # [rows, d_head]
        if arch.clip_qkv and bool((raw.abs() > arch.clip_qkv).any()):
            raise _refuse(arch, f"clip_qkv ({arch.clip_qkv:g}) clips a {side} of layer {layer}, so its score is not a sum of components")
        norm_out = got.get(f"{side[0]}_norm_out{layer}")
        x = raw if norm_out is None else described.qk_norm_heads(spec, norm_out, arch.d_head)[b, p, heads].double()
        if spec.rotary_dim:
            cos, sin = described.rotary_tables(spec, recorded[layer])
            x = described.rotate(spec, x, cos[p], sin[p])
        return x

    def terms(self, got: dict, recorded: dict, layer: int, index: np.ndarray, row_b: np.ndarray, rows: pd.DataFrame,
              tokens: torch.Tensor, lengths: torch.Tensor, everywhere: tuple[np.ndarray, torch.Tensor]) -> EdgeTerms:
        """The edges ``rows`` (indices ``index`` into the edges frame) of head layer ``layer``, on batch rows ``row_b``;
        ``everywhere``: ``keys_everywhere`` of this layer on (at least) those batch rows."""
        arch, spec = self.arch, self.arch.layers[layer]
        device = arch.device
        b = torch.as_tensor(row_b, device=device)
        t = (lengths.to(device)[b] - 1).long()
        j = torch.tensor(rows["position"].to_numpy(np.int64), device=device)
        heads = torch.tensor(rows["head"].to_numpy(np.int64), device=device)
        kv = torch.as_tensor([arch.kv_head(int(h)) for h in rows["head"]], dtype=torch.long, device=device)
        if bool((j < 1).any() or (j > t).any()):
            raise ValueError("QK attribution: an edge's position is outside 1..t of its BOS-prefixed prompt")
        queries = self.side(got, recorded, layer, b, t, heads, "query")  # [rows, n, d_head]
        keys = self.side(got, recorded, layer, b, j, kv, "key")
        terms = torch.bmm(queries, keys.transpose(1, 2)) * spec.scaling
        q, k = self.captured(got, recorded, layer, b, t, heads, "query"), self.captured(got, recorded, layer, b, j, kv, "key")
        # Agreement: the decomposed query against every position's decomposed key, softmaxed as the model does.
        known, keys_at = everywhere
        keys_at = keys_at[torch.as_tensor(np.searchsorted(known, row_b), device=device), :, kv]  # [rows, pos, d_head]
        scores = torch.einsum("rd,rpd->rp", queries.sum(1), keys_at) * spec.scaling
        weights = described.attention_weights(spec, scores, t)
        rows_index = torch.arange(len(b), device=device)
        return EdgeTerms(
            edges=index, components=component_names(arch, layer), terms=terms,
            score=(q * k).sum(-1) * spec.scaling, magnitude=q.norm(dim=-1) * k.norm(dim=-1) * abs(spec.scaling),
            attention=got[f"pattern{layer}"][b, heads, j].double(), described_attention=weights[rows_index, j],
            margin=score_margin(scores, described.seen(spec, t, scores.shape[1]), j, (q * k).sum(-1) * spec.scaling),
            token_id=tokens[torch.as_tensor(row_b), j.cpu()].numpy(),
        )


def _distinct(*columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows ``[distinct, columns]`` of the integer ``columns`` ``[rows]`` side by side, and each row's
    index among them ``[rows]``."""
    return torch.unique(torch.stack(columns, dim=1), dim=0, return_inverse=True)


def score_margin(scores: torch.Tensor, seen: torch.Tensor, position: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """``[rows]``: ``score`` minus the largest of ``scores`` ``[rows, pos]`` over the positions the query sees
    (``seen`` ``[rows, pos]``) other than BOS (0) and the edge's own ``position`` ``[rows]``; NaN where none is left."""
    others = seen.clone()
    others[:, 0] = False
    others[torch.arange(len(position), device=position.device), position] = False
    best = scores.masked_fill(~others, float("-inf")).max(dim=-1).values
    return torch.where(others.any(dim=-1), score - best, torch.full_like(score, float("nan")))


def top_terms(values: np.ndarray, k: int, always: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``values`` ``[rows, n]``, the entries of rank ≤ ``k`` by |value| (rank 1 = largest; ties by lower
    index), plus the entry ``always`` (a column kept whatever its rank). Returns (row, column, rank) arrays."""
    order = np.argsort(-np.abs(values), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, values.shape[1] + 1)[None].repeat(len(values), 0), axis=1)
    keep = rank <= k
    if always is not None:
        keep[:, always] = True
    row, column = np.nonzero(keep)
    by_rank = np.lexsort((rank[row, column], row))
    return row[by_rank], column[by_rank], rank[row, column][by_rank]


def shares(terms: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``terms / score`` per row (``score`` ``[rows]`` broadcast over the terms' rows); NaN where the score is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(score != 0, terms / score, np.nan)


def _frame(edges: pd.DataFrame, found: EdgeTerms, top: int) -> pd.DataFrame:
    """The stored rows of one ``EdgeTerms``: per edge its top query-side, key-side and (query, key) terms (the
    key side's ``embed`` always, for ``lexical_share``), with the edge's columns repeated."""
    terms = found.terms.cpu().numpy()  # [rows, n, n]
    n = terms.shape[1]
    names = np.asarray(found.components, dtype=object)
    per_edge = {
        "token_id": found.token_id.astype(np.int64), "attention": found.attention.cpu().numpy(), "score": found.score.cpu().numpy(),
        "margin": found.margin.cpu().numpy(), "identity_abs_error": found.identity_abs_error.cpu().numpy(),
        "identity_rel_error": found.identity_rel_error.cpu().numpy(), "attention_abs_error": found.attention_abs_error.cpu().numpy(),
    }
    marginals = {"query": terms.sum(axis=2), "key": terms.sum(axis=1), "pair": terms.reshape(len(terms), n * n)}
    parts = []
    for side in SIDES:
        row, column, rank = top_terms(marginals[side], top, always=0 if side == "key" else None)  # component 0 is embed
        frame = edges.iloc[found.edges[row]][EDGE_KEYS].reset_index(drop=True)
        for name, value in per_edge.items():
            frame[name] = value[row]
        frame["side"] = side
        frame["component"] = names[column // n] if side == "pair" else names[column]
        frame["key_component"] = names[column % n] if side == "pair" else None
        frame["term"] = marginals[side][row, column]
        frame["share"] = shares(frame["term"].to_numpy(), per_edge["score"][row])
        frame["rank"] = rank.astype(np.int32)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)[QK_COLUMNS]


def qk_attributions(
    arch: Architecture, edges: pd.DataFrame, settings: QKSettings, bos_id: int, pad_id: int | None = None, progress: Progress | None = None,
) -> QKResult:
    """edges: one row per looked-up edge: ``EDGE_KEYS`` (``position`` j ≥ 1 into the BOS-prefixed prompt) and
    ``prompt_token_ids`` (BOS not included). Returns per edge its top ``settings.top_components`` query-side terms
    (``q_c · k_total``), key-side terms (``q_total · k_c``) and (query, key) terms, each with its share of the
    score and rank by |term|, the identity and the agreement (module docstring). Refuses the model
    (``UnsupportedModel``) when any edge's decomposed attention misses the model's by more than
    ``AGREEMENT_TOLERANCE``."""
    started = time.perf_counter()
    edges = edges.reset_index(drop=True)
    parts = []
    for found in edge_terms(arch, edges, bos_id, settings.batch_tokens, pad_id, progress):
        worst = float(found.attention_abs_error.max())
        if worst > AGREEMENT_TOLERANCE:
            raise _refuse(arch, f"the softmax of the decomposed scores misses the model's attention weight by {worst:.2g} (the description is wrong)")
        parts.append(_frame(edges, found, settings.top_components))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=QK_COLUMNS)
    if len(rows):
        rows = rows.sort_values([*EDGE_KEYS[:9], "side", "rank"], kind="stable").reset_index(drop=True)
    per_edge = rows.drop_duplicates(EDGE_KEYS) if len(rows) else rows
    stats = {
        "edges": len(per_edge),
        "rows": len(rows),
        "identity_max_abs_error": float(per_edge["identity_abs_error"].max()) if len(rows) else 0.0,
        "identity_max_rel_error": float(per_edge["identity_rel_error"].max()) if len(rows) else 0.0,
        "attention_max_abs_error": float(per_edge["attention_abs_error"].max()) if len(rows) else 0.0,
        "qk_seconds": time.perf_counter() - started,
    }
    return QKResult(rows, stats)


def lexical_share(rows: pd.DataFrame) -> pd.DataFrame:
    """Per edge of ``qk_attributions``' rows, how much of the key side the looked-up token's own embedding carries:
    ``lexical_share`` = the key-side ``embed`` term over the score (1: the head finds j by what token it is alone),
    with that term and its rank among the key-side components."""
    embed = rows[(rows["side"] == "key") & (rows["component"] == "embed")]
    kept = embed[[*EDGE_KEYS, "token_id", "score", "term", "share", "rank"]]
    return kept.rename(columns={"term": "embed_term", "share": "lexical_share", "rank": "embed_rank"}).reset_index(drop=True)
