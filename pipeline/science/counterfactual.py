"""The counterfactual test of a look-up (docs/method.md, "Look-ups"): does the token a head reads drive the neuron?

For each pair's active prompts, the position the head reads most (its top look-up, BOS excluded: the first
token cannot be replaced by another one meaningfully) is replaced by ``k`` substitute tokens, and as a control
a random other position that is neither BOS, nor the last token, nor the looked-up one gets the same
treatment. Each variant runs through the model once: the neuron's activation, the head's attribution (the
sum of its look-up terms) and the probability of the neuron's token, averaged over the ``k`` substitutes,
against the clean prompt. Per pair, a one-sided paired Wilcoxon signed-rank test asks whether the
activation drops more at the looked-up position than at the control; over a cohort's pairs the p-values
are adjusted by Benjamini-Hochberg and a pair is *confirmed* at the chosen false discovery rate.

A substitution at position j changes nothing before j, at any layer: each substituted variant runs only positions
j..last (``_Substituted.cached``), the keys and values of 0..j-1 taken from the clean prompt's pass, which keeps its
whole key/value cache (``capture.prefix_cache``). The pass over every position (``_Substituted.full``) stays the
reference: ``settings.path`` 'auto' probes the first batch both ways and falls back to it where they differ
beyond fp32 rounding (``CachedPath``); both agree within 1e-5 on all 15 tiny families
(tests/integration/science/test_substitution_cache.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import InterventionSettings
from lookups.pipeline.inputs.architecture import Architecture
from lookups.pipeline.inputs.capture import prefix_cache
from lookups.pipeline.science.attribution import Weights
from lookups.pipeline.science.batching import group_prompts, pack_batches, pad_right
from lookups.pipeline.science.head_reads import run_batches, source_terms

PAIR = ["cohort", "layer", "neuron", "head_layer", "head"]
INTERVENTION_COLUMNS = [
    *PAIR, "doc_id", "split", "site", "position", "distance", "original_token_id", "n_substitutes",
    "clean_act", "substituted_act", "act_drop", "clean_score", "substituted_score", "score_drop", "score_drop_share",
    "clean_prob", "substituted_prob", "prob_drop",
]
TEST_COLUMNS = [
    *PAIR, "n_prompts", "mean_act_drop_lookup", "mean_act_drop_control", "mean_score_drop_share_lookup",
    "mean_score_drop_share_control", "mean_prob_drop_lookup", "mean_prob_drop_control", "wilcoxon_w", "p_value", "q_value", "confirmed",
]


@dataclass
class Substitutes:
    """Where substitute tokens come from: ``token_ids`` with probabilities ``weights``."""

    token_ids: np.ndarray
    weights: np.ndarray

    @classmethod
    def unigram(cls, counts: pd.DataFrame, special: set[int]) -> Substitutes:
        """From token counts (``token_id``, ``n``), special tokens left out."""
        counts = counts[~counts["token_id"].isin(special)]
        n = counts["n"].to_numpy(float)
        return cls(counts["token_id"].to_numpy(np.int64), n / n.sum())

    @classmethod
    def uniform(cls, vocab_size: int, special: set[int]) -> Substitutes:
        ids = np.array([i for i in range(vocab_size) if i not in special], dtype=np.int64)
        return cls(ids, np.full(len(ids), 1.0 / len(ids)))

    def draw(self, rng: np.random.Generator, k: int, original: int) -> np.ndarray:
        """``k`` distinct tokens, none the original (fewer if the distribution has fewer)."""
        keep = self.token_ids != original
        ids, weights = self.token_ids[keep], self.weights[keep]
        k = min(k, len(ids))
        return rng.choice(ids, size=k, replace=False, p=weights / weights.sum())


def plan_variants(prompts: pd.DataFrame, substitutes: Substitutes, k: int, seed: int) -> pd.DataFrame:
    """prompts: one per (pair, active prompt): ``PAIR``, ``doc_id``, ``split``, ``prompt_token_ids`` (BOS not
    included), ``next_token_id`` and ``lookup_position`` (BOS-prepended positions). Returns every sequence to
    run: the clean prompt (``site`` 'clean') and each substitute at the looked-up and control positions. Each
    (pair, prompt) draws from its own seeded stream, so adding pairs changes no other pair's draws."""
    rows = []
    for prompt in prompts.itertuples(index=False):
        ids = np.asarray(prompt.prompt_token_ids, dtype=np.int64)
        n = len(ids) + 1  # BOS at 0
        lookup = int(prompt.lookup_position)
        candidates = [p for p in range(1, n - 1) if p != lookup]
        if lookup < 1 or not candidates:
            continue  # nothing to replace, or no control position
        key = (seed, prompt.layer, prompt.neuron, prompt.head_layer, prompt.head, sum(map(ord, str(prompt.doc_id))))
        rng = np.random.default_rng(key)
        control = int(rng.choice(candidates))
        base = {c: getattr(prompt, c) for c in (*PAIR, "doc_id", "split", "next_token_id")}
        rows.append({**base, "site": "clean", "position": -1, "original_token_id": -1, "prompt_token_ids": ids})
        for site, position in (("lookup", lookup), ("control", control)):
            original = int(ids[position - 1])
            for token in substitutes.draw(rng, k, original):
                changed = ids.copy()
                changed[position - 1] = token
                rows.append({**base, "site": site, "position": position, "original_token_id": original, "prompt_token_ids": changed})
    return pd.DataFrame(rows)


def run_interventions(
    arch: Architecture, variants: pd.DataFrame, settings: InterventionSettings, bos_id: int, pad_id: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Every variant's activation, head score and token probability; one row per (pair, prompt, site), the
    substitutes averaged (``INTERVENTION_COLUMNS``). ``settings.path``: 'cached' (each substituted variant runs
    the positions from its substituted token on), 'full' (every position: the reference) or 'auto' (cached once
    a probe on the first batch finds it equal to full, else full); ``attrs['intervention_path']`` says which ran."""
    if not len(variants):
        return pd.DataFrame(columns=INTERVENTION_COLUMNS)
    variants = variants.reset_index(drop=True)
    state = CachedPath(settings.path)
    if state.mode == "full":
        act, score, prob = _every_position(arch, variants, settings.batch_tokens, bos_id, pad_id, progress)
    else:
        act, score, prob = _from_clean_passes(arch, variants, settings.batch_tokens, bos_id, pad_id, state, progress)
    result = _averaged(variants.assign(act=act, score=score, prob=prob))
    result.attrs["intervention_path"] = state.mode
    return result


def _every_position(
    arch: Architecture, variants: pd.DataFrame, batch_tokens: int, bos_id: int, pad_id: int | None, progress: Progress | None,
) -> np.ndarray:
    """``[3, variants]``: act, head score, probability, each distinct sequence run whole (the reference)."""
    out = np.empty((3, len(variants)))
    runs = run_batches(arch, variants, bos_id, batch_tokens, pad_id, with_prob=True, progress=progress, phase="interventions", by_position=False)
    for batch in runs:
        out[:, batch.members] = np.stack([t.cpu().numpy() for t in (batch.terms.act, batch.terms.head_score, batch.terms.prob)])
    return out


def _from_clean_passes(
    arch: Architecture, variants: pd.DataFrame, batch_tokens: int, bos_id: int, pad_id: int | None, state: CachedPath,
    progress: Progress | None,
) -> np.ndarray:
    """``[3, variants]`` as ``_every_position``: per group of distinct clean prompts (at most ``batch_tokens``
    padded), the clean passes give the clean rows' values and (unless the path is 'full') the key/value cache the
    group's substituted variants continue from."""
    pad_id = bos_id if pad_id is None else pad_id
    weights = Weights(arch)
    out = np.empty((3, len(variants)))
    clean_rows = np.flatnonzero((variants["site"] == "clean").to_numpy())
    clean = variants.iloc[clean_rows]
    keys = [*PAIR, "doc_id"]
    clean_of = pd.Series(np.arange(len(clean_rows)), index=pd.MultiIndex.from_frame(clean[keys]))
    changed_rows = np.flatnonzero((variants["site"] != "clean").to_numpy())
    changed_clean = clean_of.reindex(pd.MultiIndex.from_frame(variants.iloc[changed_rows][keys])).to_numpy()  # each one's clean row
    # Every pass runs to the logits, so no grouping by the deepest layer read (all 0).
    grouped = group_prompts(clean["prompt_token_ids"].tolist(), np.zeros(len(clean), dtype=np.int64), bos_id, batch_tokens)
    for done, batch in enumerate(grouped.batches, start=1):
        members, row_b = grouped.rows(batch)
        prompts = [grouped.prompts[p] for p in batch]
        lengths = torch.tensor([len(p) for p in prompts])
        caches = []
        # The clean prompts in passes of near-equal lengths (padding is computed like any position), their caches then
        # joined, so the group's variants pack together whatever their prompt's pass.
        for part in _passes(np.zeros(len(batch), dtype=np.int64), lengths.numpy(), batch_tokens):
            mine = np.flatnonzero(np.isin(row_b, part))
            at = np.empty(len(batch), dtype=np.int64)
            at[part] = np.arange(len(part))  # each prompt's row in this pass
            tokens, _ = pad_right([prompts[i] for i in part], pad_id)
            cache = DynamicCache() if state.mode != "full" else None  # no config: every layer keeps every position (no sliding-window trim)
            rows = clean.iloc[members[mine]]
            terms = source_terms(arch, tokens, lengths[part], rows, at[row_b[mine]], weights, np.array(rows["next_token_id"], dtype=np.int64),
                                 by_position=False, forward={"cache": cache} if cache is not None else None)
            out[:, clean_rows[members[mine]]] = np.stack([t.cpu().numpy() for t in (terms.act, terms.head_score, terms.prob)])
            caches.append((part, cache))
        b_of_clean = dict(zip(members.tolist(), row_b.tolist()))
        mine = np.flatnonzero(np.isin(changed_clean, members))
        if len(mine):
            cache = _joined(caches, len(batch), int(lengths.max())) if state.mode != "full" else None
            run = _Substituted(arch, weights, variants.iloc[changed_rows[mine]], np.array([b_of_clean[c] for c in changed_clean[mine]]),
                               lengths, cache, batch_tokens, bos_id, pad_id)
            state.decide(run, probe=np.unique(np.linspace(0, len(mine) - 1, PROBE_VARIANTS).round().astype(int)))
            out[:, changed_rows[mine]] = run.cached() if state.mode == "cached" else run.full()
        if progress:
            progress("interventions", done, len(grouped.batches))
    return out


def _joined(caches: list[tuple[np.ndarray, DynamicCache]], rows: int, width: int) -> DynamicCache:
    """One cache of ``rows`` x ``width`` positions from the caches of passes over parts of the rows (``part``: which
    rows, in the pass's order), each zero-padded to ``width`` (never read: a variant reads its own prompt's
    positions before its substituted one only)."""
    def join(states: list[torch.Tensor]) -> torch.Tensor:
        whole = states[0].new_zeros(rows, states[0].shape[1], width, states[0].shape[3])
        for (part, _), got in zip(caches, states):
            whole[torch.as_tensor(part), :, :got.shape[2]] = got
        return whole

    return DynamicCache([(join([cache.layers[i].keys for _, cache in caches]), join([cache.layers[i].values for _, cache in caches]))
                         for i in range(len(caches[0][1].layers))])


def _averaged(variants: pd.DataFrame) -> pd.DataFrame:
    """The substitutes of each (pair, prompt, site) averaged, against the clean prompt."""
    keys = [*PAIR, "doc_id"]
    clean = variants[variants["site"] == "clean"].set_index(keys)[["split", "act", "score", "prob"]]
    changed = variants[variants["site"] != "clean"]
    mean = changed.groupby([*keys, "site"], sort=False).agg(
        position=("position", "first"), original_token_id=("original_token_id", "first"), n_substitutes=("act", "size"),
        substituted_act=("act", "mean"), substituted_score=("score", "mean"), substituted_prob=("prob", "mean"),
    ).reset_index()
    mean = mean.join(clean.rename(columns={"act": "clean_act", "score": "clean_score", "prob": "clean_prob"}), on=keys)
    n_tokens = variants[variants["site"] == "clean"].set_index(keys)["prompt_token_ids"].map(len)
    mean["distance"] = mean.set_index(keys).index.map(n_tokens).to_numpy() - mean["position"].to_numpy()  # BOS-prepended length - 1 - position
    mean["act_drop"] = mean["clean_act"] - mean["substituted_act"]
    mean["score_drop"] = mean["clean_score"] - mean["substituted_score"]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean["score_drop_share"] = np.where(mean["clean_score"] != 0, mean["score_drop"] / mean["clean_score"], np.nan)
    mean["prob_drop"] = mean["clean_prob"] - mean["substituted_prob"]
    return mean[INTERVENTION_COLUMNS].sort_values([*keys, "site"], ascending=[True] * len(keys) + [False]).reset_index(drop=True)


class _Substituted:
    """The substituted variants of one batch of clean prompts (``b_of``: each one's row in that batch, of
    ``lengths``). ``full`` runs every position of each variant's own sequence (the reference); ``cached`` only
    the positions from the substituted one on, the earlier keys and values from the clean pass's ``cache``."""

    def __init__(self, arch: Architecture, weights: Weights, frame: pd.DataFrame, b_of: np.ndarray, lengths: torch.Tensor,
                 cache: DynamicCache | None, batch_tokens: int, bos_id: int, pad_id: int):
        self.arch, self.weights, self.frame, self.b_of, self.cache = arch, weights, frame.reset_index(drop=True), b_of, cache
        self.batch_tokens, self.pad_id = batch_tokens, pad_id
        self.sequences = [np.concatenate([[bos_id], np.asarray(ids, dtype=np.int64)]) for ids in self.frame["prompt_token_ids"]]
        self.start = self.frame["position"].to_numpy(np.int64)  # the substituted token's position (BOS-prepended)
        self.queries = lengths.numpy()[b_of] - self.start  # the positions from it to the last

    def full(self, variants: np.ndarray | None = None) -> np.ndarray:
        """``[3, variants]``: act, head score, probability, every position of each variant run."""
        variants = np.arange(len(self.frame)) if variants is None else variants
        out = np.empty((3, len(variants)))
        for part in pack_batches([len(self.sequences[v]) for v in variants], self.batch_tokens):
            tokens, lengths = pad_right([self.sequences[v] for v in variants[part]], self.pad_id)
            out[:, part] = self._read(variants[part], tokens, lengths)
        return out

    def cached(self, variants: np.ndarray | None = None) -> np.ndarray:
        """``[3, variants]`` as ``full``, each variant running its positions j..last only (right-padded to the pass's
        most), after the clean keys and values of 0..j-1 (left-padded to its longest prefix)."""
        variants = np.arange(len(self.frame)) if variants is None else variants
        out = np.empty((3, len(variants)))
        for part in _passes(self.start[variants], self.queries[variants], self.batch_tokens):
            v = variants[part]
            tokens, lengths = pad_right([self.sequences[i][self.start[i]:] for i in v], self.pad_id)
            start, b = torch.as_tensor(self.start[v]), torch.as_tensor(self.b_of[v])
            out[:, part] = self._read(v, tokens, lengths, prefix_cache(self.cache, b, start, lengths))
        return out

    def _read(self, chunk: np.ndarray, tokens: torch.Tensor, lengths: torch.Tensor, forward: dict | None = None) -> np.ndarray:
        """``[3, chunk]`` of one pass over ``tokens`` ``[rows, pos]`` (each row its own variant)."""
        rows = self.frame.iloc[chunk]
        terms = source_terms(self.arch, tokens, lengths, rows, np.arange(len(chunk)), self.weights, np.array(rows["next_token_id"], dtype=np.int64),
                             by_position=False, forward=forward)
        return np.stack([t.cpu().numpy() for t in (terms.act, terms.head_score, terms.prob)])


#: A pass is cut rather than padding its rows by more than this many positions in all: about what one more pass
#: costs (SmolLM2, 1,143 variants of 8 default pairs, one thread: 0 and 64 took 6-9% longer, no cut 50% longer).
PASS_PADDING = 16


def _passes(start: np.ndarray, queries: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Rows that run ``queries`` positions after ``start`` cached ones, in passes: sorted by queries, then start; at
    most ``batch_tokens`` slots (rows x (longest prefix + most queries)) a pass, so the gathered cache stays as
    large as a full pass's (a longer row forms a pass of its own), and cut where the next row would add more than
    ``PASS_PADDING`` padding positions (every padded position is computed)."""
    order = np.lexsort((start, queries))
    passes, current, width, most = [], [], 0, 0
    for i in order:
        w, q = max(width, int(start[i])), max(most, int(queries[i]))
        if current and ((len(current) + 1) * (w + q) > batch_tokens or len(current) * (q - most) > PASS_PADDING):
            passes.append(np.asarray(current))
            current, w, q = [], int(start[i]), int(queries[i])
        current.append(i)
        width, most = w, q
    return passes + [np.asarray(current)] if current else passes


#: The probe of a cached path ('auto'): its first variants, run both ways, must agree within fp32 rounding of
#: two passes: activation and head score within this share of max(1, |value|), probability within it absolutely.
PROBE_VARIANTS = 8
PROBE_TOLERANCE = 1e-4


class CachedPath:
    """Which way the variants of an intervention run (the substitution test, the knockout): 'cached' (only the
    positions the intervention changes, the others' keys and values from the clean pass), 'full' (every position:
    the reference), or 'auto' until the first batch's probe decides."""

    def __init__(self, mode: str):
        if mode not in ("auto", "cached", "full"):
            raise ValueError(f"intervention path {mode!r}: expected 'auto', 'cached' or 'full'")
        self.mode = mode

    def decide(self, run, probe: np.ndarray | None = None) -> None:
        """In 'auto', run ``probe`` (default: the first variants) of ``run`` (its ``frame``, ``full`` and ``cached``)
        both ways: 'cached' where they agree, else 'full' from here on (a family whose forward does not take the
        cache this way, or masks it otherwise)."""
        if self.mode != "auto":
            return
        probe = np.arange(min(len(run.frame), PROBE_VARIANTS)) if probe is None else probe
        full = run.full(probe)  # [3, variants]: act, score, prob
        try:
            cached = run.cached(probe)
        except (TypeError, ValueError, RuntimeError, IndexError, AttributeError):
            self.mode = "full"
            return
        scale = np.maximum(1.0, np.abs(full))
        scale[2] = 1.0
        self.mode = "cached" if bool(np.all(np.abs(cached - full) <= PROBE_TOLERANCE * scale)) else "full"


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted q-values; an untestable pair (NaN) counts as p = 1, so it is never confirmed and still
    counts in the number of tests."""
    from scipy.stats import false_discovery_control

    p = np.where(np.isnan(p_values), 1.0, p_values)
    return false_discovery_control(p, method="bh") if len(p) else p


def paired_one_sided(lookup: np.ndarray, control: np.ndarray) -> tuple[float, float]:
    """(W, p) of the one-sided paired Wilcoxon signed-rank test lookup > control over the prompts where both exist;
    (NaN, NaN) when untestable (fewer than 2 prompts, or no difference)."""
    from scipy.stats import wilcoxon

    keep = ~(np.isnan(lookup) | np.isnan(control))
    lookup, control = lookup[keep], control[keep]
    if len(lookup) < 2 or not np.any(lookup != control):
        return float("nan"), float("nan")
    test = wilcoxon(lookup, control, alternative="greater")
    return float(test.statistic), float(test.pvalue)


def adjusted_within(tests: pd.DataFrame, groups: list[str], p_column: str) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p_column``, adjusted within each group of ``groups`` (a cohort, a prompt kind)."""
    q = np.full(len(tests), np.nan)
    for _, index in tests.groupby(groups).indices.items():
        q[index] = benjamini_hochberg(tests[p_column].to_numpy(float)[index])
    return q


def pair_tests(interventions: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """Per pair: the drops at the looked-up position and the control, the one-sided paired Wilcoxon test of the
    activation drop (looked-up > control), BH q-values within each cohort, and whether it is confirmed."""
    if not len(interventions):
        return pd.DataFrame(columns=TEST_COLUMNS)
    wide = interventions.pivot_table(
        index=[*PAIR, "doc_id"], columns="site", values=["act_drop", "score_drop_share", "prob_drop"], aggfunc="first"
    ).dropna(subset=[("act_drop", "lookup"), ("act_drop", "control")])
    rows = []
    for pair, group in wide.groupby(level=list(range(len(PAIR))), sort=True):
        lookup, control = group[("act_drop", "lookup")].to_numpy(float), group[("act_drop", "control")].to_numpy(float)
        w, p = paired_one_sided(lookup, control)
        rows.append(
            {
                **dict(zip(PAIR, pair)), "n_prompts": len(group),
                "mean_act_drop_lookup": lookup.mean(), "mean_act_drop_control": control.mean(),
                "mean_score_drop_share_lookup": group[("score_drop_share", "lookup")].mean(),
                "mean_score_drop_share_control": group[("score_drop_share", "control")].mean(),
                "mean_prob_drop_lookup": group[("prob_drop", "lookup")].mean(), "mean_prob_drop_control": group[("prob_drop", "control")].mean(),
                "wilcoxon_w": w, "p_value": p,
            }
        )
    tests = pd.DataFrame(rows)
    tests["q_value"] = adjusted_within(tests, ["cohort"], "p_value")
    tests["confirmed"] = tests["q_value"] <= fdr
    return tests[TEST_COLUMNS]


def summary(tests: pd.DataFrame, interventions: pd.DataFrame, seconds: float) -> dict:
    """The stats: per cohort the pairs tested and the share confirmed, the cost per pair, and which way the variants
    ran (``intervention_path``: 'cached', or 'full' where the probe found the cached path apart)."""
    stats = {"intervention_rows": len(interventions), "tested_pairs": len(tests), "intervention_seconds": round(seconds, 3),
             "intervention_path": interventions.attrs.get("intervention_path")}
    for cohort, name in (("next_token", "next_token"), ("random", "random_baseline")):
        part = tests[tests["cohort"] == cohort]
        stats[f"{name}_pairs_tested"] = len(part)
        stats[f"{name}_pairs_confirmed"] = int(part["confirmed"].sum())
        stats[f"{name}_share_confirmed"] = float(part["confirmed"].mean()) if len(part) else None
    stats["seconds_per_pair"] = round(seconds / max(1, len(tests)), 3)
    return stats
