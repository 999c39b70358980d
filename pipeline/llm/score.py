"""Scoring explanations on held-out prompts (docs/method.md, "Scoring explanations"), by three scorers, each on
the pair's own prompts ('none') and, for next-token explanations, another pair's ('shuffled'):

- ``detection``: given only the explanation, a judge says whether the head is active on each prompt. The judge
  is the LLM that explained (Yes/No and P(Yes)) or, for the no-LLM references, their own feature weights. E is
  balanced accuracy at P(Yes) 0.5 (the paper's); AUC is threshold-free; calibrated E applies the threshold that
  best separates the explainer's own examples (the pair's explain split) to the held-out prompts.
- ``embedding``: no judge. AUROC of cos(explanation, prompt) under all-MiniLM-L6-v2 (``embeddings.py``), and a
  calibrated E the same way.
- ``simulation``: the LLM rates 0-9 how strongly the head is active on each prompt, given only the explanation
  (the expected value over the digits' probabilities where the backend gives them); the score is the Spearman
  (and Pearson) correlation with the head's real attribution score over the pair's held-out prompts.

The tests of each measure against the baselines are in ``significance.py``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
    "n_positive", "n_negative", "n_answered", "n_malformed", "n_errors", "tp", "fn", "tn", "fp",
    "e_score", "calibrated_e", "threshold", "auc", "correlation", "pearson",
]


@dataclass(frozen=True)
class Target:
    """One explanation scored on one pair's held-out prompts: its own (baseline 'none') or another's ('shuffled')."""

    explanation: pd.Series
    own: Pair
    target: Pair
    baseline: str

    @property
    def id(self) -> str:
        return self.explanation["explanation_id"]


@dataclass(frozen=True)
class Judge:
    """What asks the LLM: the backend (None: no LLM), the templates, the call ledger, the settings."""

    backend: LlmBackend | None
    classify: Template
    simulate: Template
    ledger: CallLedger | None
    settings: ExplanationSettings
    model_id: str
    progress: Callable | None = None

    def requests(self, purpose: str, template: Template, explanation: str, pair: Pair, prompts: list[str], max_tokens: int) -> list[LlmRequest]:
        """One request per prompt: the explanation (an LLM's answer about corpus text: untrusted too) and the prompt."""
        out = []
        for prompt in prompts:
            messages = template.messages(
                token=quoted(pair.token), explanation=untrusted(explanation), prompt=snippet(prompt, pair.token, self.settings.max_prompt_chars)
            )
            key = cache_key(purpose, self.model_id, pair.key, messages, self.backend.kind, self.backend.model, template.version)
            out.append(LlmRequest(key, purpose, messages, max_tokens))
        return out

    def answer(self, template: Template, requests: list[LlmRequest], phase: str) -> dict[str, LlmResponse]:
        return ask(self.backend, template.version, requests, self.ledger, self.progress, phase) if requests else {}


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


def targets_of(explanations: pd.DataFrame, pairs: dict[tuple, Pair], scoring: ScoringSettings) -> list[Target]:
    shuffled = shuffled_targets(explanations, scoring.seed) if scoring.shuffled_baseline else {}
    out = []
    for _, exp in explanations.iterrows():
        own = pairs[tuple(int(exp[k]) for k in PAIR_KEYS)]
        out.append(Target(exp, own, own, "none"))
        if exp["explanation_id"] in shuffled:
            out.append(Target(exp, own, pairs[shuffled[exp["explanation_id"]]], "shuffled"))
    return out


# ---------------------------------------------------------------- measures


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


def calibrated_threshold(truth: list[bool], scores: list[float]) -> float | None:
    """The threshold (predict active when score > it) with the best balanced accuracy on these prompts: the
    middle one of the best, among the midpoints between consecutive distinct scores. None unless both classes."""
    if not any(truth) or all(truth) or not scores:
        return None
    values = np.unique(np.asarray(scores, dtype=float))
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2])
    accuracy = np.asarray([balanced_accuracy(truth, [s > c for s in scores])[0] for c in candidates])
    best = candidates[np.isclose(accuracy, accuracy.max(), rtol=0, atol=1e-12)]
    return float(best[len(best) // 2])


def correlations(ratings: list[float], actual: list[float]) -> tuple[float | None, float | None]:
    """(Spearman, Pearson) between the ratings and the head's real scores; 0 where the ratings are all equal
    (a simulation that tells the prompts nothing), None where the real scores are."""
    from scipy import stats

    r, a = np.asarray(ratings, dtype=float), np.asarray(actual, dtype=float)
    if len(r) < 3 or np.ptp(a) == 0:
        return None, None
    if np.ptp(r) == 0:
        return 0.0, 0.0
    return float(stats.spearmanr(r, a).statistic), float(stats.pearsonr(r, a).statistic)


# ---------------------------------------------------------------- rows


def _base_row(t: Target, scorer: str) -> dict:
    exp, target = t.explanation, t.target
    return {
        "explanation_id": exp["explanation_id"], "scorer": scorer, "split": "heldout", "baseline": t.baseline,
        "explainer": exp["explainer"], "cohort": exp["cohort"], **{k: int(exp[k]) for k in PAIR_KEYS},
        "target_layer": target.layer, "target_neuron": target.neuron, "target_head_layer": target.head_layer, "target_head": target.head,
        "n_positive": int(sum(target.heldout_truth)), "n_negative": int(len(target.heldout_truth) - sum(target.heldout_truth)),
        "n_answered": 0, "n_malformed": 0, "n_errors": 0, "tp": None, "fn": None, "tn": None, "fp": None,
        "e_score": None, "calibrated_e": None, "threshold": None, "auc": None, "correlation": None, "pearson": None,
        "status": "not_scored", "reason": None,
    }


def _unscorable(row: dict, t: Target) -> str | None:
    """Why this explanation cannot be scored on this target at all (an explanation that is not ok is scored as
    such: its row stays, with the status as the reason)."""
    if t.explanation["status"] != "ok":
        return f"explanation {t.explanation['status']}"
    if row["n_positive"] == 0:
        return "no held-out prompt where the head is active"
    if row["n_negative"] == 0:
        return "no held-out prompt where the head is inactive"
    return None


def _rows_to_score(targets: list[Target], scorer: str, rows: list[dict]) -> Iterator[tuple[Target, dict]]:
    """Each target's ``scorer`` row: the ones that cannot be scored go to ``rows`` with their reason (kept, never
    dropped); the others are yielded to be scored."""
    for t in targets:
        row = _base_row(t, scorer)
        row["reason"] = _unscorable(row, t)
        if row["reason"]:
            rows.append(row)
        else:
            yield t, row


def _answers_usable(row: dict, answers: list[LlmResponse]) -> list[bool] | None:
    """Counts the answers' statuses into ``row``; the mask of usable ones, or None (with the reason) when none is."""
    row["n_malformed"] = sum(a.status in ("malformed", "refused", "empty") for a in answers)
    row["n_errors"] = sum(a.status == "error" for a in answers)
    budget = sum(a.status == "budget_exhausted" for a in answers)
    if budget:
        row["reason"] = f"run budget reached before {budget} of {len(answers)} prompts"
        return None
    usable = [a.status == "ok" for a in answers]
    row["n_answered"] = sum(usable)
    return usable


def _classification(row: dict, truth: list[bool], scores: list[float], predicted: list[bool] | None, threshold: float | None) -> dict:
    """Fill E (``predicted``, if given), AUC and calibrated E of ``scores`` against ``truth``."""
    if not any(truth) or all(truth):
        row["reason"] = "the answered prompts are all of one class"
        return row
    if predicted is not None:
        row["e_score"], counts = balanced_accuracy(truth, predicted)
        row.update(counts)
    row["auc"] = auc(truth, scores)
    if threshold is not None:
        row["threshold"] = threshold
        row["calibrated_e"] = balanced_accuracy(truth, [s > threshold for s in scores])[0]
    row["status"] = "scored"
    return row


def _explain_truth(pair: Pair) -> tuple[list[str], list[bool]]:
    """The pair's explain-split prompts (the explainer's own examples) and whether the head is active on each."""
    return [*pair.active, *pair.inactive], [True] * len(pair.active) + [False] * len(pair.inactive)


def detection_rows(targets: list[Target], judge: Judge, calibrate: bool = True) -> list[dict]:
    """The detection scorer's rows: the LLM's own explanations judged by it, the references by their features.
    ``calibrate``: also judge the explain prompts, for calibrated E's threshold."""
    backend = judge.backend
    llm = [t for t in targets if backend is not None and t.explanation["explainer"] == backend.explainer and t.explanation["status"] == "ok"]
    asked: dict[tuple, list[LlmRequest]] = {}
    for t in llm:
        asked[(t.id, t.target.key)] = judge.requests("classify", judge.classify, t.explanation["explanation"], t.target, t.target.heldout, 3)
        if calibrate:
            asked[(t.id, "calibration")] = judge.requests("classify", judge.classify, t.explanation["explanation"], t.own, _explain_truth(t.own)[0], 3)
    answers = judge.answer(judge.classify, [r for group in asked.values() for r in group], "scoring: detection")
    rows = []
    # Another LLM's explanations (of an earlier run) are not judged by this one.
    judged = [t for t in targets if t.explanation["explainer"] in REFERENCES or (backend is not None and t.explanation["explainer"] == backend.explainer)]
    for t, row in _rows_to_score(judged, "detection", rows):
        prompts, truth = t.target.heldout, t.target.heldout_truth
        if t.explanation["explainer"] in REFERENCES:  # a no-LLM reference classifies by its features' weights
            reference = ContrastiveExplanation(features=json.loads(t.explanation["features"]))
            scores = [reference.score(p) for p in prompts]
            explain_prompts, explain_truth = _explain_truth(t.own)
            threshold = calibrated_threshold(explain_truth, [reference.score(p) for p in explain_prompts]) if calibrate else None
            row["n_answered"] = len(prompts)
            rows.append(_classification(row, truth, scores, [s > 0 for s in scores], threshold))
            continue
        got = [answers[r.key] for r in asked[(t.id, t.target.key)]]
        usable = _answers_usable(row, got)
        if usable is None or not any(usable):
            row["reason"] = row["reason"] or "no usable answers"
            rows.append(row)
            continue
        kept = [(a, y) for a, y, ok in zip(got, truth, usable) if ok]
        probs = [a.p_yes for a, _ in kept]
        calibration = [answers[r.key] for r in asked.get((t.id, "calibration"), [])]
        explain_truth = _explain_truth(t.own)[1]
        known = [(a.p_yes, y) for a, y in zip(calibration, explain_truth) if a.status == "ok" and a.p_yes is not None]
        threshold = calibrated_threshold([y for _, y in known], [p for p, _ in known]) if None not in probs else None
        scores = probs if None not in probs else [float(a.answer) for a, _ in kept]
        rows.append(_classification(row, [y for _, y in kept], scores, [a.answer for a, _ in kept], threshold))
    return rows


def embedding_rows(targets: list[Target], embed: Callable[[list[str]], dict[str, np.ndarray]], calibrate: bool = True) -> list[dict]:
    """The embedding scorer's rows, for every explanation. ``embed``: texts -> unit vector per text."""
    wanted = set()
    for t in targets:
        if t.explanation["status"] == "ok":
            wanted |= {t.explanation["explanation"], *t.target.heldout, *_explain_truth(t.own)[0]}
    vectors = embed(sorted(wanted)) if wanted else {}
    rows = []
    for t, row in _rows_to_score(targets, "embedding", rows):
        e = vectors[t.explanation["explanation"]]
        scores = [float(e @ vectors[p]) for p in t.target.heldout]
        explain_prompts, explain_truth = _explain_truth(t.own)
        threshold = calibrated_threshold(explain_truth, [float(e @ vectors[p]) for p in explain_prompts]) if calibrate else None
        row["n_answered"] = len(scores)
        rows.append(_classification(row, t.target.heldout_truth, scores, None, threshold))
    return rows


def simulation_rows(targets: list[Target], judge: Judge, explainers: str) -> list[dict]:
    """The simulation scorer's rows: the LLM's ratings of the explanations of ``explainers`` ('llm': its own; 'all')."""
    backend = judge.backend
    if backend is None:
        return []
    chosen = [t for t in targets if explainers == "all" or t.explanation["explainer"] == backend.explainer]
    asked = {
        (t.id, t.target.key): judge.requests("simulate", judge.simulate, t.explanation["explanation"], t.target, t.target.heldout, 3)
        for t in chosen if t.explanation["status"] == "ok"
    }
    answers = judge.answer(judge.simulate, [r for group in asked.values() for r in group], "scoring: simulation")
    rows = []
    for t, row in _rows_to_score(chosen, "simulation", rows):
        got = [answers[r.key] for r in asked[(t.id, t.target.key)]]
        usable = _answers_usable(row, got)
        if usable is None or sum(usable) < 3:
            row["reason"] = row["reason"] or "fewer than three usable ratings"
            rows.append(row)
            continue
        kept = [(a.rating, y, s) for a, y, s, ok in zip(got, t.target.heldout_truth, t.target.heldout_scores, usable) if ok]
        ratings = [r for r, _, _ in kept]
        row["correlation"], row["pearson"] = correlations(ratings, [s for _, _, s in kept])
        if row["correlation"] is None:
            row["reason"] = "the head's score is the same on every answered prompt"
            rows.append(row)
            continue
        row["auc"] = auc([y for _, y, _ in kept], ratings)
        row["status"] = "scored"
        rows.append(row)
    return rows


def score_explanations(
    explanations: pd.DataFrame, pairs: dict[tuple, Pair], scoring: ScoringSettings, judge: Judge, embed: Callable | None = None,
) -> pd.DataFrame:
    """The ``explanation_scores`` rows: every explanation on its own pair's held-out prompts ('none'), and the
    next-token explanations on another pair's ('shuffled'), by each scorer of ``scoring.scorers``."""
    targets = targets_of(explanations, pairs, scoring)
    rows = []
    if "detection" in scoring.scorers:
        rows += detection_rows(targets, judge, scoring.calibrate)
    if "embedding" in scoring.scorers and embed is not None:
        rows += embedding_rows(targets, embed, scoring.calibrate)
    if "simulation" in scoring.scorers:
        rows += simulation_rows(targets, judge, scoring.simulation_explainers)
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
