"""Scoring explanations on held-out prompts: each explanation, given only itself, says whether the head is
active on each prompt (Yes/No); E is balanced accuracy, AUC where the backend gives P(Yes); the shuffled
baseline scores each explanation on another pair's prompts; the tests of E against the baselines."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd

from lookups.pipeline.config import ExplanationSettings, ScoringSettings
from lookups.pipeline.llm.backends import LlmBackend, LlmRequest, LlmResponse
from lookups.pipeline.llm.contrastive import ContrastiveExplanation
from lookups.pipeline.llm.explain import REFERENCES
from lookups.pipeline.llm.ledger import CallLedger, ask, cache_key
from lookups.pipeline.llm.pairs import PAIR_KEYS, Pair
from lookups.pipeline.llm.templates import Template, quoted, snippet, untrusted

SCORE_COLUMNS = [
    "explanation_id", "scorer", "split", "baseline", "explainer", "cohort", *PAIR_KEYS,
    "target_layer", "target_neuron", "target_head_layer", "target_head", "status", "reason",
    "n_positive", "n_negative", "n_answered", "n_malformed", "n_errors", "tp", "fn", "tn", "fp", "e_score", "auc",
]


def shuffled_targets(explanations: pd.DataFrame, seed: int) -> dict[str, tuple]:
    """For each next-token explanation, another pair (of another neuron where there is one) whose held-out
    prompts it is scored on: a derangement within each explainer, seeded."""
    out = {}
    rng = random.Random(seed)
    for _, group in explanations[explanations["cohort"] == "next_token"].groupby("explainer"):
        keys = [tuple(int(v) for v in r) for r in group[PAIR_KEYS].itertuples(index=False)]
        ids = group["explanation_id"].tolist()
        if len(keys) < 2:
            continue
        for eid, key in zip(ids, keys):
            others = [k for k in keys if k[:2] != key[:2]] or [k for k in keys if k != key]
            out[eid] = rng.choice(others)
    return out


def balanced_accuracy(truth: list[bool], predicted: list[bool]) -> tuple[float, dict]:
    t = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    counts = {"tp": int((t & p).sum()), "fn": int((t & ~p).sum()), "tn": int((~t & ~p).sum()), "fp": int((~t & p).sum())}
    e = 0.5 * (counts["tp"] / max(1, counts["tp"] + counts["fn"]) + counts["tn"] / max(1, counts["tn"] + counts["fp"]))
    return float(e), counts


def auc(truth: list[bool], scores: list[float]) -> float | None:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    if not pos or not neg:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def _score_row(
    explanation: pd.Series, target: Pair, baseline: str, scorer: str, answers: list[LlmResponse] | None, contrast_scores: list[float] | None
) -> dict:
    row = {
        "explanation_id": explanation["explanation_id"], "scorer": scorer, "split": "heldout", "baseline": baseline,
        "explainer": explanation["explainer"], "cohort": explanation["cohort"],
        **{k: int(explanation[k]) for k in PAIR_KEYS},
        "target_layer": target.layer, "target_neuron": target.neuron, "target_head_layer": target.head_layer, "target_head": target.head,
        "n_positive": int(sum(target.heldout_truth)), "n_negative": int(len(target.heldout_truth) - sum(target.heldout_truth)),
        "n_answered": 0, "n_malformed": 0, "n_errors": 0, "tp": None, "fn": None, "tn": None, "fp": None, "e_score": None, "auc": None,
        "status": "not_scored", "reason": None,
    }
    if explanation["status"] != "ok":
        row["reason"] = f"explanation {explanation['status']}"
        return row
    if row["n_positive"] == 0:
        row["reason"] = "no held-out prompt where the head is active"
        return row
    if row["n_negative"] == 0:
        row["reason"] = "no held-out prompt where the head is inactive"
        return row
    if contrast_scores is not None:
        predicted, probs, truth = [s > 0 for s in contrast_scores], contrast_scores, target.heldout_truth
        row["n_answered"] = len(truth)
    else:
        usable = [(a, t) for a, t in zip(answers, target.heldout_truth) if a.status == "ok"]
        row["n_answered"] = len(usable)
        row["n_malformed"] = sum(a.status in ("malformed", "refused", "empty") for a in answers)
        row["n_errors"] = sum(a.status == "error" for a in answers)
        budget = sum(a.status == "budget_exhausted" for a in answers)
        if budget:
            row["reason"] = f"run budget reached before {budget} of {len(answers)} prompts"
            return row
        truth = [t for _, t in usable]
        predicted = [a.answer for a, _ in usable]
        probs = [a.p_yes for a, _ in usable]
        if not usable or not any(truth) or all(truth):
            row["reason"] = "no usable answers" if not usable else "the answered prompts are all of one class"
            return row
        if any(p is None for p in probs):
            probs = None
    row["e_score"], counts = balanced_accuracy(truth, predicted)
    row.update(counts)
    row["auc"] = auc(truth, probs) if probs is not None else None
    row["status"] = "scored"
    return row


def score_explanations(
    explanations: pd.DataFrame,
    pairs: dict[tuple, Pair],
    model_id: str,
    settings: ExplanationSettings,
    scoring: ScoringSettings,
    template: Template,
    backend: LlmBackend | None,
    ledger: CallLedger | None,
    progress=None,
) -> pd.DataFrame:
    """The ``explanation_scores`` rows: every explanation on its own pair's held-out prompts ('none'), and the
    next-token explanations on another pair's ('shuffled')."""
    targets = []  # (explanation row, target pair, baseline)
    shuffled = shuffled_targets(explanations, scoring.seed) if scoring.shuffled_baseline else {}
    for _, exp in explanations.iterrows():
        own = pairs[tuple(int(exp[k]) for k in PAIR_KEYS)]
        targets.append((exp, own, "none"))
        if exp["explanation_id"] in shuffled:
            targets.append((exp, pairs[shuffled[exp["explanation_id"]]], "shuffled"))

    requests: dict[tuple, LlmRequest] = {}
    if backend is not None:
        for exp, target, _ in targets:
            if exp["explainer"] != backend.explainer or exp["status"] != "ok":
                continue
            for prompt in target.heldout:
                messages = template.messages(  # the explanation is an LLM's answer about corpus text: untrusted too
                    token=quoted(target.token), explanation=untrusted(exp["explanation"]), prompt=snippet(prompt, target.token, settings.max_prompt_chars)
                )
                key = cache_key("classify", model_id, target.key, messages, backend.kind, backend.model, template.version)
                requests[(exp["explanation_id"], target.key, prompt)] = LlmRequest(key, "classify", messages, 3)
    answers = ask(backend, template.version, list(requests.values()), ledger, progress, "scoring") if requests else {}

    rows = []
    for exp, target, baseline in targets:
        if exp["explainer"] in REFERENCES:  # a no-LLM reference classifies by its features' weights
            reference = ContrastiveExplanation(features=json.loads(exp["features"]))
            rows.append(_score_row(exp, target, baseline, exp["explainer"], None, [reference.score(p) for p in target.heldout]))
        elif backend is not None and exp["explainer"] == backend.explainer:
            got = [answers[requests[(exp["explanation_id"], target.key, p)].key] for p in target.heldout] if exp["status"] == "ok" else []
            rows.append(_score_row(exp, target, baseline, backend.explainer, got, None))
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


TEST_COLUMNS = [
    "explainer", "baseline", "n", "mean_e", "mean_e_ci_low", "mean_e_ci_high", "std_e", "skew", "skew_z", "skew_p",
    "n_baseline", "mean_baseline", "baseline_ci_low", "baseline_ci_high", "std_baseline", "mw_u", "mw_p",
    "n_paired", "paired_mean_diff", "wilcoxon_w", "wilcoxon_p", "mean_auc",
]

#: Bootstrap resamples per confidence interval, and their seed (fixed, so a rerun writes the same interval).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def bootstrap_mean_ci(
    values, level: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of the mean of ``values``: the (1 - level)/2 and (1 + level)/2
    quantiles of the means of ``n_resamples`` resamples with replacement, seeded. (None, None) with fewer than
    two values, whose resamples would show no spread at all."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return None, None
    if np.ptp(x) == 0:  # every resample is the sample itself
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    # Chunks of resamples keep the index matrix under ~4M entries whatever n is.
    chunk = max(1, min(n_resamples, (1 << 22) // n))
    means = np.concatenate(
        [x[rng.integers(0, n, size=(min(chunk, n_resamples - done), n))].mean(axis=1) for done in range(0, n_resamples, chunk)]
    )
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_wilcoxon(own: pd.DataFrame, shuffled: pd.DataFrame) -> dict:
    """Each next-token explanation's own E against its shuffled E (pairs by ``explanation_id``): their number,
    the mean of own - shuffled, and the two-sided Wilcoxon signed-rank test (None with fewer than two pairs or
    no non-zero difference, where the test is undefined)."""
    from scipy import stats

    if "explanation_id" not in own.columns:  # a frame without ids cannot be paired
        return {"n_paired": None, "paired_mean_diff": None, "wilcoxon_w": None, "wilcoxon_p": None}
    pairs = own[["explanation_id", "e_score"]].merge(shuffled[["explanation_id", "e_score"]], on="explanation_id", suffixes=("_own", "_shuffled"))
    # E is a ratio of small counts: rounding lets equal differences tie (and equal scores give 0) exactly.
    diff = np.round(pairs["e_score_own"].astype(float).to_numpy() - pairs["e_score_shuffled"].astype(float).to_numpy(), 12)
    out = {"n_paired": len(diff), "paired_mean_diff": float(diff.mean()) if len(diff) else None, "wilcoxon_w": None, "wilcoxon_p": None}
    if len(diff) >= 2 and np.any(diff != 0):
        test = stats.wilcoxon(diff, alternative="two-sided")
        out["wilcoxon_w"], out["wilcoxon_p"] = float(test.statistic), float(test.pvalue)
    return out


def explanation_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """Per explainer: the distribution of E over next-token pairs (mean with its bootstrap 95% CI, std, skew,
    skewtest) and, against each baseline (random neurons' pairs; shuffled explanations), the baseline's mean with
    its CI and a two-sided Mann-Whitney U test; against the shuffled one also the paired Wilcoxon signed-rank
    test of each explanation's own E against its shuffled E."""
    from scipy import stats

    rows = []
    scored = scores[scores["status"] == "scored"]
    for explainer, group in scored.groupby("explainer"):
        own = group[(group["cohort"] == "next_token") & (group["baseline"] == "none")]
        e = own["e_score"].astype(float).to_numpy()
        shuffled = group[group["baseline"] == "shuffled"]
        baselines = {
            "random_neurons": group[(group["cohort"] == "random") & (group["baseline"] == "none")]["e_score"].astype(float).to_numpy(),
            "shuffled": shuffled["e_score"].astype(float).to_numpy(),
        }
        skew = float(stats.skew(e)) if len(e) > 2 and np.ptp(e) > 0 else None  # undefined (and a warning) when every E is equal
        skew_z = skew_p = None
        if len(e) >= 8 and np.ptp(e) > 0:
            test = stats.skewtest(e)
            skew_z, skew_p = float(test.statistic), float(test.pvalue)
        e_low, e_high = bootstrap_mean_ci(e)
        unpaired = {"n_paired": None, "paired_mean_diff": None, "wilcoxon_w": None, "wilcoxon_p": None}
        for name, base in baselines.items():
            mw_u = mw_p = None
            if len(e) and len(base):
                test = stats.mannwhitneyu(e, base, alternative="two-sided")
                mw_u, mw_p = float(test.statistic), float(test.pvalue)
            base_low, base_high = bootstrap_mean_ci(base)
            rows.append(
                {
                    "explainer": explainer, "baseline": name, "n": len(e),
                    "mean_e": float(e.mean()) if len(e) else None, "mean_e_ci_low": e_low, "mean_e_ci_high": e_high,
                    "std_e": float(e.std(ddof=1)) if len(e) > 1 else None,
                    "skew": skew, "skew_z": skew_z, "skew_p": skew_p,
                    "n_baseline": len(base), "mean_baseline": float(base.mean()) if len(base) else None,
                    "baseline_ci_low": base_low, "baseline_ci_high": base_high,
                    "std_baseline": float(base.std(ddof=1)) if len(base) > 1 else None,
                    "mw_u": mw_u, "mw_p": mw_p,
                    **(paired_wilcoxon(own, shuffled) if name == "shuffled" else unpaired),
                    "mean_auc": float(own["auc"].dropna().mean()) if own["auc"].notna().any() else None,
                }
            )
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
