"""Attention knockout of a look-up (docs/method.md, "Why the head looks there"): does the neuron depend on *this
head reading that position*?

For each pair's active prompts, the edge from the last position t to the looked-up position j (the head's top
look-up, BOS excluded) is blocked in the pair's head only, the head's other weights renormalised (Geva et al.
2023's attention knockout): at t the head's output becomes ``Σ_{i≠j} A_i v_i / Σ_{i≠j} A_i`` (``A`` its attention
weights at t, ``v`` its value vectors, value bias included), which is exactly the softmax with the edge masked
out. Two controls on the same prompt: the same knockout at a *control position* of the same head (not BOS, not
the last token, not j: the one whose weight is closest to ``A_j``) and the knockout of j in a *control head* of
the same layer that is not a consistent head for this neuron (the one whose weight on j is closest to the pair
head's). Only the last position's output of one head changes, so nothing below the head's layer changes: each
variant resumes at that layer from the stream a clean pass cached there (``capture.Resume``), and the clean
reference is the same resumed pass without the edit, so a drop measures the knockout and nothing else.

Weights and values come from one eager pass per prompt; the resumed passes use the model's own attention kernel
and replace only the knocked-out head's output at t. Since only position t changes, every earlier position of
every layer from the head's up equals the clean pass's: each variant runs position t alone (``_Run.cached``),
the earlier positions' keys and values taken from the clean pass's key/value cache (``transformers``'
``DynamicCache`` kept whole, without sliding-window trimming), left-padded to a pass's longest prefix under an
attention mask (left padding keeps each key's distance to the query, so sliding windows stay exact). The pass
over every position (``_Run.full``) stays the reference: in 'auto' a probe on the first batch runs its first
variants both ways and falls back to it where they differ beyond fp32 rounding (``counterfactual.CachedPath``) or the
forward refuses the cache. Both agree within 1e-5 on all 15 tiny families
(tests/integration/science/test_knockout.py): none falls back.

Per pair, one-sided paired Wilcoxon signed-rank tests ask whether the activation drops more at the looked-up
edge than at each control; p-values are adjusted by Benjamini-Hochberg within each (cohort, prompt kind); a pair
is *confirmed* when both controls are beaten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import KnockoutSettings
from lookups.pipeline.inputs.architecture import Architecture
from lookups.pipeline.inputs.capture import Resume, block_input, capture, eager_attention, prefix_cache
from lookups.pipeline.science.attribution import Weights
from lookups.pipeline.science.batching import pack_batches, pad_right
from lookups.pipeline.science.counterfactual import PAIR, CachedPath, adjusted_within, paired_one_sided
from lookups.pipeline.science.head_reads import source_terms

#: The variants of each (pair, prompt): the clean resumed pass and the three knockouts.
SITES = ("clean", "lookup", "control_position", "control_head")
PROMPT_KINDS = ("truncated", "untruncated")
KNOCKOUT_COLUMNS = [
    *PAIR, "doc_id", "split", "prompt_kind", "site", "knocked_head", "position", "distance", "attention",
    "clean_act", "knocked_act", "act_drop", "clean_score", "knocked_score", "score_drop", "score_drop_share",
    "clean_prob", "knocked_prob", "prob_drop",
]
KNOCKOUT_TEST_COLUMNS = [
    *PAIR, "prompt_kind", "n_prompts", "mean_act_drop_lookup", "mean_act_drop_control_position", "mean_act_drop_control_head",
    "mean_score_drop_share_lookup", "mean_score_drop_share_control_position", "mean_score_drop_share_control_head",
    "mean_prob_drop_lookup", "p_value_position", "p_value_head", "q_value_position", "q_value_head", "confirmed",
]


@dataclass
class Edge:
    """What one (pair, prompt) knocks out, from the clean eager pass: per site the head and position, the weight
    there, and the head's output at the last position with that edge removed (``[d_head]``, None: clean)."""

    head: int
    position: int
    attention: float
    z: torch.Tensor | None


def _knocked_z(pattern: torch.Tensor, values: torch.Tensor, position: int) -> torch.Tensor | None:
    """``Σ_{i≠p} A_i v_i / Σ_{i≠p} A_i`` from one head's weights at the last query ``[pos]`` and values ``[pos,
    d_head]`` (float64); None when the head put all its weight on ``position`` (nothing left to renormalise)."""
    keep = pattern.clone()
    keep[position] = 0.0
    mass = float(keep.sum())
    return None if mass <= 0.0 else (keep @ values) / mass


def _closest(weights: np.ndarray, target: float, candidates: list[int]) -> int | None:
    """The candidate whose weight is closest to ``target`` (ties: the earlier one); None without candidates."""
    if not candidates:
        return None
    return min(candidates, key=lambda c: (abs(float(weights[c]) - target), c))


def plan_edges(pattern: torch.Tensor, values: torch.Tensor, length: int, head: int, position: int, excluded_heads: set[int]) -> dict[str, Edge]:
    """The three knockouts of one (pair, prompt) from its clean pass: ``pattern`` ``[heads, pos]`` at the last
    query, ``values`` ``[pos, heads, d_head]`` (float64), the prompt's ``length`` (BOS included). Sites left out
    when they cannot be formed (no control position or head, all weight on the edge)."""
    weights = pattern[head].cpu().numpy()
    target = float(weights[position])
    edges = {"clean": Edge(head, -1, float("nan"), None)}
    control_position = _closest(weights, target, [p for p in range(1, length - 1) if p != position])
    control_heads = [h for h in range(pattern.shape[0]) if h != head and h not in excluded_heads]
    control_head = _closest(pattern[:, position].cpu().numpy(), target, control_heads)
    for site, (h, p) in (("lookup", (head, position)), ("control_position", (head, control_position)), ("control_head", (control_head, position))):
        if h is None or p is None:
            continue
        z = _knocked_z(pattern[h, :length], values[:length, h], p)
        if z is not None:
            edges[site] = Edge(h, p, float(pattern[h, p]), z)
    return edges


def with_untruncated(prompts: pd.DataFrame, doc_tokens: dict[str, np.ndarray], max_window_tokens: int) -> pd.DataFrame:
    """``prompts`` (prompt kind 'truncated') and, for each, the untruncated window its exemplar came from: the document's
    tokens from its harvest window's start (at most ``max_window_tokens`` back) to the exemplar's last token, the
    looked-up position moved to the same token there. A prompt whose document does not end in its tokens there
    (another tokenizer) gets no window."""
    windows = []
    for row in prompts.itertuples(index=False):
        tokens = doc_tokens.get(row.doc_id)
        end = int(row.doc_max_pos) + 1
        start = max(int(row.window_start), end - max_window_tokens)
        prompt = np.asarray(row.prompt_token_ids, dtype=np.int64)
        if tokens is None or int(row.prompt_start) < start or not np.array_equal(tokens[int(row.prompt_start):end], prompt):
            continue
        windows.append({**row._asdict(), "prompt_kind": "untruncated", "prompt_token_ids": tokens[start:end],
                        "lookup_position": int(row.lookup_position) + int(row.prompt_start) - start})
    truncated = prompts.assign(prompt_kind="truncated")
    return pd.concat([truncated, pd.DataFrame(windows)], ignore_index=True) if windows else truncated


def _clean_pass(arch: Architecture, tokens: torch.Tensor, lengths: torch.Tensor, layers: list[int], cached: bool) -> dict:
    """One eager pass: per head layer its weights at each row's last query ``pattern{l}`` ``[batch, heads, pos]``,
    its value vectors ``values{l}`` ``[batch, pos, heads, d_head]`` (float64) and the stream entering it ``stream{l}``.
    With ``cached`` the pass runs every layer and keeps the model's key/value cache ``cache`` (every position;
    the layers below the lowest head layer cut to one row: they are never run again, see ``capture.prefix_cache``)."""
    blocks = Resume.blocks_of(arch.first_block)
    last = (lengths - 1).to(arch.device)
    at = torch.arange(tokens.shape[0], device=arch.device)
    wanted, picks = {}, {}
    for layer in layers:
        wanted[f"stream{layer}"] = block_input(blocks, layer)
        wanted[f"v{layer}"] = (arch.layers[layer].value, "output")
        wanted[f"pattern{layer}"] = (arch.layers[layer].attention, "weights")
        picks[f"pattern{layer}"] = lambda value: value[at, :, last]
    cache = DynamicCache() if cached else None  # no config: every layer keeps every position (no sliding-window trim)
    with eager_attention(arch.model):
        got: dict = capture(arch.model, tokens, wanted, stop_after=None if cached else f"pattern{max(layers)}", picks=picks,
                           forward={"cache": cache} if cached else None)
    for layer in layers:
        got[f"values{layer}"] = arch.head_values(layer, got.pop(f"v{layer}").double())
        got[f"pattern{layer}"] = got[f"pattern{layer}"].double()
    if cached:
        for below in cache.layers[:min(layers)]:
            below.keys, below.values = below.keys[:1], below.values[:1]
        got["cache"] = cache
    return got


def _edit(arch: Architecture, last: torch.Tensor, edges: list[Edge]):
    """The edit of the head layer's concatenated head outputs ``z`` ``[rows, pos, n_heads * d_head]``: on row r, the
    knocked-out head's output at the last position replaced by ``edges[r].z`` (clean rows untouched)."""
    rows = [r for r, edge in enumerate(edges) if edge.z is not None]

    def edit(z: torch.Tensor) -> torch.Tensor:
        z = z.clone()
        for r in rows:
            h = edges[r].head
            z[r, last[r], h * arch.d_head:(h + 1) * arch.d_head] = edges[r].z.to(z)
        return z

    return edit


def knock_out(
    arch: Architecture, prompts: pd.DataFrame, settings: KnockoutSettings, bos_id: int, pad_id: int, progress: Progress | None = None,
    path: str = "auto",
) -> pd.DataFrame:
    """prompts: one per (pair, active prompt, prompt kind): ``PAIR``, doc_id, split, prompt_kind, prompt_token_ids (BOS not
    included), next_token_id, lookup_position (BOS-prepended), consistent_heads (this neuron's consistent heads
    of the pair's layer). Returns ``KNOCKOUT_COLUMNS``, one row per (pair, prompt, prompt kind, knocked-out site).
    ``path``: 'cached' (each variant runs its last position only), 'full' (every position: the reference) or
    'auto' (cached once a probe on the first batch finds it equal to full, else full)."""
    if not len(prompts):
        return pd.DataFrame(columns=KNOCKOUT_COLUMNS)
    prompts = prompts.reset_index(drop=True)
    sequences = [np.concatenate([[bos_id], np.asarray(ids, dtype=np.int64)]) for ids in prompts["prompt_token_ids"]]
    weights = Weights(arch)
    state = CachedPath(path)
    out, batches = [], pack_batches([len(s) for s in sequences], settings.batch_tokens)
    for done, batch in enumerate(batches, start=1):
        tokens, lengths = pad_right([sequences[i] for i in batch], pad_id)
        members = prompts.iloc[batch].reset_index(drop=True)
        clean = _clean_pass(arch, tokens, lengths, sorted(set(members["head_layer"].tolist())), cached=state.mode != "full")
        for layer, group in members.groupby("head_layer", sort=True):
            frame, edges, b_of = _plan_variants(layer, group, lengths, clean)
            run = _Run(arch, weights, int(layer), frame, edges, b_of, tokens, lengths, clean, settings.batch_tokens)
            state.decide(run)
            act, score, prob = run.cached() if state.mode == "cached" else run.full()
            out.append(frame.assign(act=act, score=score, prob=prob))
        if progress:
            progress("knockouts", done, len(batches))
    result = _drops(pd.concat(out, ignore_index=True))
    result.attrs["knockout_path"] = state.mode  # which way the variants ran ('auto' decided by its probe)
    return result


def _plan_variants(layer: int, group: pd.DataFrame, lengths: torch.Tensor, clean: dict) -> tuple[pd.DataFrame, list[Edge], np.ndarray]:
    """The variants (``SITES``) of one batch's rows whose head sits in ``layer``: their frame, their edges and
    each one's row in the batch."""
    variants, edges, b_of = [], [], []
    for b, row in zip(group.index, group.itertuples(index=False)):
        length = int(lengths[b])
        planned = plan_edges(
            clean[f"pattern{layer}"][b], clean[f"values{layer}"][b], length, int(row.head), int(row.lookup_position), set(row.consistent_heads)
        )
        for site, edge in planned.items():
            variants.append({**{c: getattr(row, c) for c in (*PAIR, "doc_id", "split", "prompt_kind", "next_token_id")},
                             "site": site, "knocked_head": edge.head, "position": edge.position, "attention": edge.attention,
                             "distance": length - 1 - edge.position if edge.position >= 0 else -1})
            edges.append(edge)
            b_of.append(b)
    return pd.DataFrame(variants), edges, np.asarray(b_of)


class _Run:
    """The variants of one batch's rows whose head sits in ``layer``, each resumed at that layer with the head's
    output at the last position edited. ``full`` runs every position of each prompt (the reference); ``cached``
    runs only the last one, the earlier positions' keys and values taken from the clean pass (they do not
    change: only the last position is edited)."""

    def __init__(self, arch: Architecture, weights: Weights, layer: int, frame: pd.DataFrame, edges: list[Edge], b_of: np.ndarray,
                 tokens: torch.Tensor, lengths: torch.Tensor, clean: dict, batch_tokens: int):
        self.arch, self.weights, self.layer, self.frame, self.edges, self.b_of = arch, weights, layer, frame, edges, b_of
        self.tokens, self.lengths, self.clean, self.batch_tokens = tokens, lengths, clean, batch_tokens
        self.blocks = Resume.blocks_of(arch.first_block)

    def full(self, variants: np.ndarray | None = None) -> np.ndarray:
        """``[3, variants]``: act, head score, probability, every position run from the head's layer."""
        variants = np.arange(len(self.frame)) if variants is None else variants
        out = np.empty((3, len(variants)))
        for part in np.array_split(np.arange(len(variants)), -(-len(variants) * self.tokens.shape[1] // self.batch_tokens)):
            b = torch.as_tensor(self.b_of[variants[part]])
            out[:, part] = self._read(variants[part], self.tokens[b], self.lengths[b], self.clean[f"stream{self.layer}"][b])
        return out

    def cached(self, variants: np.ndarray | None = None) -> np.ndarray:
        """``[3, variants]`` as ``full``, each variant running its last position t only (the keys and values of
        0..t-1 from the clean pass's cache, ``capture.prefix_cache``); rows of any lengths together, sorted by length,
        at most ``batch_tokens`` cached slots a pass (one pass reads every weight from the head's layer up and
        the unembedding, so fewer, larger passes are faster)."""
        variants = np.arange(len(self.frame)) if variants is None else variants
        out = np.empty((3, len(variants)))
        t_of = self.lengths.numpy()[self.b_of[variants]] - 1
        for part in pack_batches(np.maximum(t_of, 1).tolist(), self.batch_tokens):
            b, t = torch.as_tensor(self.b_of[variants[part]]), torch.as_tensor(t_of[part])
            stream = self.clean[f"stream{self.layer}"][b, t][:, None]  # [rows, 1, d_model]
            out[:, part] = self._read(variants[part], self.tokens[b, t][:, None], torch.ones(len(part), dtype=torch.long), stream,
                                      prefix_cache(self.clean["cache"], b, t, layer=self.layer))
        return out

    def _read(self, chunk: np.ndarray, tokens: torch.Tensor, lengths: torch.Tensor, stream: torch.Tensor, forward: dict | None = None) -> np.ndarray:
        """``[3, chunk]`` of one pass resumed at the head's layer from ``stream`` over ``tokens`` ``[rows, pos]``."""
        last = (lengths - 1).to(self.arch.device)
        edits = {self.arch.layers[self.layer].attn_out: _edit(self.arch, last, [self.edges[i] for i in chunk])}
        rows = self.frame.iloc[chunk]
        terms = source_terms(
            self.arch, tokens, lengths, rows, np.arange(len(chunk)), self.weights, np.array(rows["next_token_id"], dtype=np.int64),
            by_position=False, resume=Resume(self.blocks, self.layer, stream), edits=edits, forward=forward,
        )
        return np.stack([t.cpu().numpy() for t in (terms.act, terms.head_score, terms.prob)])


def _drops(variants: pd.DataFrame) -> pd.DataFrame:
    """Each knockout against the clean resumed pass of the same (pair, prompt, prompt kind)."""
    keys = [*PAIR, "doc_id", "prompt_kind"]
    clean = variants[variants["site"] == "clean"].set_index(keys)[["act", "score", "prob"]]
    knocked = variants[variants["site"] != "clean"].join(clean.add_prefix("clean_"), on=keys)
    knocked = knocked.rename(columns={"act": "knocked_act", "score": "knocked_score", "prob": "knocked_prob"})
    knocked["act_drop"] = knocked["clean_act"] - knocked["knocked_act"]
    knocked["score_drop"] = knocked["clean_score"] - knocked["knocked_score"]
    with np.errstate(divide="ignore", invalid="ignore"):
        knocked["score_drop_share"] = np.where(knocked["clean_score"] != 0, knocked["score_drop"] / knocked["clean_score"], np.nan)
    knocked["prob_drop"] = knocked["clean_prob"] - knocked["knocked_prob"]
    order = {site: i for i, site in enumerate(SITES)}
    knocked = knocked.assign(_order=knocked["site"].map(order)).sort_values([*keys, "_order"]).drop(columns="_order")
    return knocked[KNOCKOUT_COLUMNS].reset_index(drop=True)


def _column(group: pd.DataFrame, metric: str, site: str) -> np.ndarray:
    """One (metric, site) column of a pair's wide frame; NaN where that site was never formed."""
    return group[(metric, site)].to_numpy(float) if (metric, site) in group else np.full(len(group), np.nan)


def _mean(values: np.ndarray) -> float:
    """The mean over the prompts where the value exists; NaN where it never does (no warning)."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def pair_tests(knockouts: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """Per (pair, prompt kind): the mean drops per site, the one-sided paired Wilcoxon tests of the activation drop at
    the looked-up edge against each control, BH q-values within each (cohort, prompt kind), confirmed when both are."""
    if not len(knockouts):
        return pd.DataFrame(columns=KNOCKOUT_TEST_COLUMNS)
    wide = knockouts.pivot_table(index=[*PAIR, "prompt_kind", "doc_id"], columns="site", values=["act_drop", "score_drop_share", "prob_drop"], aggfunc="first")
    wide = wide.dropna(subset=[("act_drop", "lookup")])
    rows = []
    for pair, group in wide.groupby(level=list(range(len(PAIR) + 1)), sort=True):
        lookup = _column(group, "act_drop", "lookup")
        rows.append({
            **dict(zip([*PAIR, "prompt_kind"], pair)), "n_prompts": len(group),
            **{f"mean_act_drop_{site}": _mean(_column(group, "act_drop", site)) for site in SITES[1:]},
            **{f"mean_score_drop_share_{site}": _mean(_column(group, "score_drop_share", site)) for site in SITES[1:]},
            "mean_prob_drop_lookup": _mean(_column(group, "prob_drop", "lookup")),
            "p_value_position": paired_one_sided(lookup, _column(group, "act_drop", "control_position"))[1],
            "p_value_head": paired_one_sided(lookup, _column(group, "act_drop", "control_head"))[1],
        })
    tests = pd.DataFrame(rows)
    for control in ("position", "head"):
        tests[f"q_value_{control}"] = adjusted_within(tests, ["cohort", "prompt_kind"], f"p_value_{control}")
    tests["confirmed"] = (tests["q_value_position"] <= fdr) & (tests["q_value_head"] <= fdr)
    return tests[KNOCKOUT_TEST_COLUMNS]


def summary(tests: pd.DataFrame, knockouts: pd.DataFrame, started: float) -> dict:
    """The stats: per cohort and prompt kind the pairs tested and the share confirmed, the cost per pair, and which
    way the variants ran (``knockout_path``: 'cached', or 'full' where the probe found the cached path apart)."""
    seconds = time.perf_counter() - started
    stats = {"knockout_rows": len(knockouts), "tested_pairs": int(tests[[*PAIR]].drop_duplicates().shape[0]) if len(tests) else 0,
             "knockout_seconds": round(seconds, 3), "knockout_path": knockouts.attrs.get("knockout_path")}
    for cohort, name in (("next_token", "next_token"), ("random", "random_baseline")):
        for kind in PROMPT_KINDS:
            part = tests[(tests["cohort"] == cohort) & (tests["prompt_kind"] == kind)] if len(tests) else tests
            stats[f"{name}_{kind}_pairs_tested"] = len(part)
            stats[f"{name}_{kind}_pairs_confirmed"] = int(part["confirmed"].sum()) if len(part) else 0
            stats[f"{name}_{kind}_share_confirmed"] = float(part["confirmed"].mean()) if len(part) else None
    stats["seconds_per_pair"] = round(seconds / max(1, stats["tested_pairs"]), 3)
    return stats
