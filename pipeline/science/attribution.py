"""Steps 4-5 of docs/method.md: each head's direct contribution to a neuron on its exemplar prompts, and active heads.

For an exemplar of neuron n in layer L, at the prompt's last position, the residual stream entering layer L's
MLP is decomposed with TransformerLens (``ActivationCache.get_full_resid_decomposition(layer=L,
mlp_input=True, apply_ln=True, expand_neurons=False)``): every head of layers 0..L, every earlier MLP, the
embeddings and the accumulated biases, each passed through ``ln2`` of layer L with the cached scale and
projected on the neuron's input weights. The components sum exactly to the neuron's pre-activation; the
difference is recorded per exemplar (``identity_abs_error``, ``identity_rel_error``) and checked.

Scores:

- ungated MLP (GPT-2): ``score_h = in_h``, the head's contribution to the pre-activation (the paper's);
- gated MLP (SwiGLU: act = f(g)·u, with g = x·W_gate[:, n] and u = x·W_in[:, n]): ``gate_h`` and ``in_h``
  are the head's contributions to g and u (each decomposition sums to its own pre-activation), and the
  score is the head's first-order contribution to the activation at the actual operating point,
  ``score_h = f'(g)·u·gate_h + f(g)·in_h``.

A head is *active* on a prompt when its score exceeds the mean + ``active_sigma`` standard deviations
(sample std, ddof=1) of the scores of all candidate heads (layers 0..L) on that prompt.

Cost: prompts are batched by length with right padding (causal: real positions never see the padding); the
cache is filtered to the hooks the decomposition reads and sliced to each row's last real position before any
per-head product is formed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.config import AttributionSettings
from lookups.pipeline.science.batching import capture_last_positions, pack_batches, pad_right

PhaseProgress = Callable[[str, int, int], None]

HEAD_COLUMNS = ["layer", "neuron", "doc_id", "split", "head_layer", "head", "gate_contribution", "in_contribution", "score", "active"]
TOTAL_COLUMNS = [
    "layer", "neuron", "doc_id", "split", "n_tokens", "pre_gate", "pre_in", "act", "sum_gate", "sum_in",
    "heads_gate", "heads_in", "mlps_gate", "mlps_in", "embed_gate", "embed_in", "bias_gate", "bias_in",
    "identity_abs_error", "identity_rel_error", "active_threshold", "n_candidate_heads", "n_active_heads",
]


@dataclass
class AttributionResult:
    heads: pd.DataFrame  # one row per (exemplar, candidate head): HEAD_COLUMNS
    totals: pd.DataFrame  # one row per exemplar: TOTAL_COLUMNS
    stats: dict


def activation_and_slope(act_fn: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and f'(x) for the MLP's activation function (by TransformerLens ``cfg.act_fn`` name)."""
    fns = {
        "silu": torch.nn.functional.silu,
        "swish": torch.nn.functional.silu,
        "gelu": torch.nn.functional.gelu,
        "gelu_new": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "gelu_fast": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "gelu_pytorch_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "relu": torch.relu,
    }
    if act_fn not in fns:
        raise ValueError(f"No slope for activation '{act_fn}': add it to attribution.activation_and_slope.")
    with torch.enable_grad():
        leaf = x.detach().double().requires_grad_(True)
        y = fns[act_fn](leaf)
        (slope,) = torch.autograd.grad(y.sum(), leaf)
    return y.detach().to(x.dtype), slope.to(x.dtype)


def active_threshold(scores: np.ndarray, sigma: float) -> np.ndarray:
    """scores ``[rows, heads]`` -> per-row threshold mean + sigma·std (ddof=1) ``[rows]``."""
    return scores.mean(axis=1) + sigma * scores.std(axis=1, ddof=1)


def _hook_names(cfg, layers: set[int]) -> set[str]:
    """What the decomposition of the MLP input at each of ``layers`` reads from the cache."""
    names = {f"blocks.{layer}.attn.hook_z" for layer in range(cfg.n_layers)}  # head results are formed from z and W_O
    names |= {f"blocks.{layer}.hook_mlp_out" for layer in range(max(layers))}
    names.add("hook_embed")
    if cfg.positional_embedding_type in ("standard", "shortformer"):
        names.add("hook_pos_embed")  # additive position embeddings; rotary ones are not a residual component
    for layer in layers:
        names |= {f"blocks.{layer}.ln2.hook_scale", f"blocks.{layer}.mlp.hook_pre", f"blocks.{layer}.mlp.hook_post"}
        if getattr(cfg, "gated_mlp", False):
            names.add(f"blocks.{layer}.mlp.hook_pre_linear")
    return names


def last_position_cache(bridge, tokens: torch.Tensor, lengths: torch.Tensor, layers: set[int]):
    """Run ``tokens`` ``[batch, pos]`` (right-padded; row b has ``lengths[b]`` real tokens) and keep, for the
    hooks the decomposition reads, only each row's last real position: an ``ActivationCache`` of
    ``[batch, 1, ...]`` tensors. The forward stops after the MLP of the deepest layer in ``layers``."""
    from transformer_lens.ActivationCache import ActivationCache

    deepest = max(layers)
    cache = capture_last_positions(
        bridge, tokens, lengths, _hook_names(bridge.cfg, layers), f"blocks.{deepest}.mlp.hook_post",
        pick=lambda value, rows, last: value[rows, last][:, None],
    )
    # TransformerLens forms head results for every layer when asked for any; layers after the deepest one
    # were not run and are never read (a layer-L decomposition uses heads of layers 0..L only).
    z = cache["blocks.0.attn.hook_z"]
    for layer in range(deepest + 1, bridge.cfg.n_layers):
        cache[f"blocks.{layer}.attn.hook_z"] = torch.zeros_like(z)
    return ActivationCache(cache, bridge)


def _component_groups(labels: list[str]) -> dict[str, np.ndarray]:
    kinds = np.array(
        [
            "head" if label.startswith("L") and "H" in label else "mlp" if label.endswith("_mlp_out") else "bias" if label == "bias" else "embed"
            for label in labels
        ]
    )
    return {k: np.nonzero(kinds == k)[0] for k in ("head", "mlp", "embed", "bias")}


def attribute_exemplars(
    bridge,
    exemplars: pd.DataFrame,
    bos_id: int,
    settings: AttributionSettings,
    progress: PhaseProgress | None = None,
    pad_id: int | None = None,
) -> AttributionResult:
    """exemplars: rows with layer, neuron, doc_id, split, prompt_token_ids (BOS not included; it is prepended
    here, as in truncation). Returns per-head rows, per-exemplar totals and statistics. Prompts are batched
    by length (right padding, ``batch_tokens`` padded tokens per forward pass)."""
    pad_id = bos_id if pad_id is None else pad_id
    cfg = bridge.cfg
    gated = bool(getattr(cfg, "gated_mlp", False))
    exemplars = exemplars.reset_index(drop=True)
    started = time.perf_counter()
    # Identical prompts (e.g. the same passage for two neurons) run once.
    prompt_index: dict[tuple, int] = {}
    prompt_of_row = np.empty(len(exemplars), dtype=np.int64)
    for i, ids in enumerate(exemplars["prompt_token_ids"]):
        prompt_of_row[i] = prompt_index.setdefault(tuple(int(t) for t in ids), len(prompt_index))
    prompts = [np.asarray((bos_id,) + key, dtype=np.int64) for key in prompt_index]
    rows_of_prompt = defaultdict(list)
    for row, p in enumerate(prompt_of_row):
        rows_of_prompt[p].append(row)
    layers_all = exemplars["layer"].to_numpy()
    neurons_all = exemplars["neuron"].to_numpy()

    head_parts, total_parts = [], []
    # Prompts are grouped by the deepest layer they serve, so each forward pass stops as early as it can.
    deepest = np.array([layers_all[rows_of_prompt[p]].max() for p in range(len(prompts))])
    batches = []
    for layer in np.unique(deepest):
        members = np.nonzero(deepest == layer)[0]
        batches += [members[b] for b in pack_batches([len(prompts[p]) for p in members], settings.batch_tokens)]
    done = 0
    for batch in batches:
        tokens, lengths = pad_right([prompts[p] for p in batch], pad_id)
        rows = np.array([r for p in batch for r in rows_of_prompt[p]], dtype=np.int64)
        batch_pos = {p: b for b, p in enumerate(batch)}
        row_b = np.array([batch_pos[prompt_of_row[r]] for r in rows], dtype=np.int64)
        cache = last_position_cache(bridge, tokens.to(cfg.device), lengths, set(layers_all[rows].tolist()))
        for layer in sorted(set(layers_all[rows].tolist())):
            sel = layers_all[rows] == layer
            head_part, total_part = _attribute_layer(bridge, cache, layer, rows[sel], row_b[sel], neurons_all, gated, settings)
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


def _attribute_layer(bridge, cache, layer: int, rows: np.ndarray, row_b: np.ndarray, neurons_all: np.ndarray, gated: bool, settings: AttributionSettings):
    """Decompose the MLP input of ``layer`` for exemplar ``rows`` (at batch positions ``row_b``)."""
    mlp = bridge.blocks[layer].mlp
    neurons = np.unique(neurons_all[rows])
    column = {n: j for j, n in enumerate(neurons)}
    cols = torch.as_tensor([column[n] for n in neurons_all[rows]])
    idx = torch.as_tensor(neurons)
    projections = [mlp.W_gate[:, idx], mlp.W_in[:, idx]] if gated else [mlp.W_in[:, idx]]
    with torch.no_grad():
        stack, labels = cache.get_full_resid_decomposition(
            layer=layer, mlp_input=True, apply_ln=True, expand_neurons=False, return_labels=True,
            project_output_onto=torch.cat(projections, dim=1),
        )  # [components, batch, 1, n_projections]
    b = torch.as_tensor(row_b)
    parts = stack[:, b, 0, :]  # [components, rows, n_projections]
    contributions_in = parts[:, torch.arange(len(rows)), cols + (len(neurons) if gated else 0)].T  # [rows, components]
    neuron_idx = torch.as_tensor(neurons_all[rows])
    pre_in = cache[f"blocks.{layer}.mlp.hook_pre_linear" if gated else f"blocks.{layer}.mlp.hook_pre"][b, 0, neuron_idx]
    # The neuron's own input bias is part of its pre-activation but not of the residual stream.
    own_bias_in = _neuron_bias(mlp, "b_in", neuron_idx, len(rows))
    act = cache[f"blocks.{layer}.mlp.hook_post"][b, 0, neuron_idx]
    groups = _component_groups(labels)
    heads_idx = groups["head"]
    if gated:
        contributions_gate = parts[:, torch.arange(len(rows)), cols].T
        pre_gate = cache[f"blocks.{layer}.mlp.hook_pre"][b, 0, neuron_idx]
        own_bias_gate = _neuron_bias(mlp, "b_gate", neuron_idx, len(rows))
        f_gate, slope = activation_and_slope(bridge.cfg.act_fn, pre_gate)
        scores = slope[:, None] * pre_in[:, None] * contributions_gate[:, heads_idx] + f_gate[:, None] * contributions_in[:, heads_idx]
        checked = [(contributions_gate, pre_gate - own_bias_gate), (contributions_in, pre_in - own_bias_in)]
    else:
        contributions_gate = None
        pre_gate = own_bias_gate = None
        scores = contributions_in[:, heads_idx]
        checked = [(contributions_in, pre_in - own_bias_in)]

    scores_np = scores.double().numpy()
    threshold = active_threshold(scores_np, settings.active_sigma)
    active = scores_np > threshold[:, None]
    n_heads = bridge.cfg.n_heads
    n_cand = len(heads_idx)
    head_frame = pd.DataFrame(
        {
            "row": np.repeat(rows, n_cand),
            "head_layer": np.tile(np.arange(n_cand) // n_heads, len(rows)).astype(np.int32),
            "head": np.tile(np.arange(n_cand) % n_heads, len(rows)).astype(np.int32),
            "gate_contribution": contributions_gate[:, heads_idx].double().numpy().ravel() if gated else np.full(len(rows) * n_cand, np.nan),
            "in_contribution": contributions_in[:, heads_idx].double().numpy().ravel(),
            "score": scores_np.ravel(),
            "active": active.ravel(),
        }
    )

    abs_err = np.zeros(len(rows))
    rel_err = np.zeros(len(rows))
    for contributions, pre in checked:
        err = (contributions.double().sum(dim=1) - pre.double()).abs().numpy()
        scale = contributions.double().abs().sum(dim=1).numpy()
        abs_err = np.maximum(abs_err, err)
        rel_err = np.maximum(rel_err, err / np.maximum(scale, 1e-12))

    def group_sum(contributions, kind, own_bias):
        if contributions is None:
            return np.full(len(rows), np.nan)
        total = contributions[:, groups[kind]].double().sum(dim=1)
        return (total + own_bias.double() if kind == "bias" else total).numpy()

    total_frame = pd.DataFrame(
        {
            "row": rows,
            "pre_gate": pre_gate.double().numpy() if gated else np.full(len(rows), np.nan),
            "pre_in": pre_in.double().numpy(),
            "act": act.double().numpy(),
            "sum_gate": (contributions_gate.double().sum(dim=1) + own_bias_gate.double()).numpy() if gated else np.full(len(rows), np.nan),
            "sum_in": (contributions_in.double().sum(dim=1) + own_bias_in.double()).numpy(),
            **{
                f"{kind}s_gate" if kind in ("head", "mlp") else f"{kind}_gate": group_sum(contributions_gate, kind, own_bias_gate)
                for kind in ("head", "mlp", "embed", "bias")
            },
            **{
                f"{kind}s_in" if kind in ("head", "mlp") else f"{kind}_in": group_sum(contributions_in, kind, own_bias_in)
                for kind in ("head", "mlp", "embed", "bias")
            },
            "identity_abs_error": abs_err,
            "identity_rel_error": rel_err,
            "active_threshold": threshold,
            "n_candidate_heads": n_cand,
            "n_active_heads": active.sum(axis=1),
        }
    )
    return head_frame, total_frame


def _neuron_bias(mlp, name: str, neurons: torch.Tensor, n_rows: int) -> torch.Tensor:
    bias = getattr(mlp, name, None)
    return bias.detach()[neurons] if isinstance(bias, torch.Tensor) else torch.zeros(n_rows)


def _assemble(parts: list[pd.DataFrame], keys: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    frame = pd.concat([keys.iloc[frame["row"].to_numpy()].reset_index(drop=True), frame.drop(columns="row")], axis=1)
    return frame[columns].sort_values([c for c in ("layer", "neuron", "doc_id", "head_layer", "head") if c in columns]).reset_index(drop=True)
