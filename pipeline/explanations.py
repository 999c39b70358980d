"""DESIGN steps 6-7 and the explanation part of 9: explain consistent pairs, score the explanations on held-out
prompts, compare with baselines.

- Which pairs: each neuron's strongest consistent heads (``pairs_per_neuron``), for the selected next-token
  neurons and for the random baseline neurons of the same layers (cohort 'random').
- Explanations: the primary backend (openai or local) and the contrastive reference, from the pair's explain
  prompts, active and inactive, each with the neuron's token appended.
- Scores: each explanation classifies the pair's held-out prompts (Yes/No, given only the explanation); the
  ground truth is whether the head was active on each (``head_attributions``). E = balanced accuracy; AUC
  where the backend gives probabilities. The shuffled baseline scores each explanation on another pair's
  held-out prompts.
- Every LLM call goes through ``CallLedger``: answered before (same cache key) means no call; a run-level
  budget on calls and tokens stops issuing calls, and what was done is kept.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import ExplanationSettings, ScoringSettings
from .explainers import (
    ANSWER_STATUSES,
    ContrastiveExplanation,
    LlmBackend,
    LlmRequest,
    LlmResponse,
    Template,
    contrastive_explanation,
    snippet,
)
from .store import Store, stable_hash

PAIR_KEYS = ["layer", "neuron", "head_layer", "head"]
CONTRASTIVE = "contrastive"
EXPLANATION_COLUMNS = [
    "explanation_id", "explainer", "backend", "llm_model", "template_version", "cohort", *PAIR_KEYS, "token",
    "status", "explanation", "features", "error", "n_active_shown", "n_inactive_shown", "prompt_tokens",
    "completion_tokens", "cached",
]
SCORE_COLUMNS = [
    "explanation_id", "scorer", "split", "baseline", "explainer", "cohort", *PAIR_KEYS,
    "target_layer", "target_neuron", "target_head_layer", "target_head", "status", "reason",
    "n_positive", "n_negative", "n_answered", "n_malformed", "n_errors", "tp", "fn", "tn", "fp", "e_score", "auc",
]


def cache_key(*parts) -> str:
    return stable_hash(*parts, length=32)


# ---------------------------------------------------------------- the call ledger: cache and budget


class BudgetExhausted(Exception):
    pass


class CallLedger:
    """LLM calls of one run: cache lookups in ``llm_calls``, budget accounting, and writing each new call
    (answers and failures) in small batches, so a stop or a crash loses at most a few calls' results.

    The budget is per run: calls already recorded under this ``run_id`` (by an earlier asset of the same
    run) count. Calls are reserved when issued, so concurrency cannot overshoot ``max_calls``; tokens are
    known only when a call returns, so ``max_tokens`` may be passed by the calls in flight.
    """

    FLUSH_EVERY = 16

    def __init__(self, store: Store, run_id: str, max_calls: int | None, max_tokens: int | None):
        self.store, self.run_id = store, run_id
        self.max_calls, self.max_tokens = max_calls, max_tokens
        used = store.query(
            "SELECT count(*) AS calls, coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens FROM llm_calls WHERE run_id = ?",
            [run_id],
            read_only=False,
        )
        self.calls = int(used["calls"][0])
        self.tokens = int(used["tokens"][0])
        self.new_calls = 0
        self.budget_hit = False
        self._buffer: list[dict] = []
        self._lock = threading.Lock()

    def cached(self, keys: list[str]) -> dict[str, LlmResponse]:
        if not keys:
            return {}
        rows = self.store.query(
            "SELECT cache_key, status, response, answer, p_yes, prompt_tokens, completion_tokens FROM llm_calls "
            "WHERE cache_key IN (SELECT unnest(?)) AND list_contains(?, status) "
            "QUALIFY row_number() OVER (PARTITION BY cache_key ORDER BY created_at DESC) = 1",
            [keys, list(ANSWER_STATUSES)],
            read_only=False,
        )
        return {
            r.cache_key: LlmResponse(
                r.status, r.response or "", None if pd.isna(r.answer) else bool(r.answer), None if pd.isna(r.p_yes) else float(r.p_yes),
                prompt_tokens=0, completion_tokens=0, cached=True,
            )
            for r in rows.itertuples()
        }

    def allow(self) -> bool:
        """Reserve one call, or say the budget is spent."""
        with self._lock:
            over = (self.max_calls is not None and self.calls >= self.max_calls) or (self.max_tokens is not None and self.tokens >= self.max_tokens)
            if over:
                self.budget_hit = True
                return False
            self.calls += 1
            self.new_calls += 1
            return True

    def record(self, backend: LlmBackend, template_version: str, request: LlmRequest, response: LlmResponse) -> None:
        with self._lock:
            self.tokens += response.tokens
            self._buffer.append(
                {
                    "cache_key": request.key, "run_id": self.run_id, "backend": backend.kind, "llm_model": backend.model,
                    "template_version": template_version, "purpose": request.purpose, "status": response.status,
                    "response": response.text, "answer": response.answer, "p_yes": response.p_yes, "error": response.error,
                    "prompt_tokens": response.prompt_tokens, "completion_tokens": response.completion_tokens,
                    "seconds": response.seconds,
                }
            )
            if len(self._buffer) >= self.FLUSH_EVERY:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buffer:
            self.store.append("llm_calls", pd.DataFrame(self._buffer))
            self._buffer = []


def ask(backend: LlmBackend, template_version: str, requests: list[LlmRequest], ledger: CallLedger, progress=None, phase: str = "") -> dict[str, LlmResponse]:
    """Answer every request: from the cache, else from the backend while the budget lasts. Requests not
    answered because the budget ran out get status 'budget_exhausted'."""
    unique = list({r.key: r for r in requests}.values())
    answers = ledger.cached([r.key for r in unique])
    todo = [r for r in unique if r.key not in answers]
    try:
        for i, (request, response) in enumerate(backend.run(todo, ledger.allow)):
            ledger.record(backend, template_version, request, response)
            answers[request.key] = response
            if progress:
                progress(phase, i + 1, len(todo))
    finally:
        ledger.flush()
    for request in todo:
        answers.setdefault(request.key, LlmResponse("budget_exhausted", error="run budget (max_calls / max_tokens) reached"))
    return answers


def new_run_id() -> str:
    return f"adhoc-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- which pairs, which prompts


@dataclass
class Pair:
    cohort: str
    layer: int
    neuron: int
    head_layer: int
    head: int
    token: str
    active: list[str] = field(default_factory=list)  # explain split, prompt texts
    inactive: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    heldout_truth: list[bool] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.layer, self.neuron, self.head_layer, self.head)


def choose_pairs(scores: pd.DataFrame, settings: ExplanationSettings) -> pd.DataFrame:
    """scores: consistent ``head_neuron_scores`` rows. Each neuron's strongest heads (by mean attribution), at
    most ``pairs_per_neuron``; then at most ``max_pairs`` per cohort, strongest first."""
    ranked = scores.sort_values(["cohort", "layer", "neuron", "mean_score"], ascending=[True, True, True, False])
    chosen = ranked.groupby(["cohort", "layer", "neuron"], sort=False).head(settings.pairs_per_neuron)
    if settings.max_pairs is not None:
        chosen = chosen.sort_values("mean_score", ascending=False).groupby("cohort", sort=False).head(settings.max_pairs)
    return chosen.sort_values(["cohort", *PAIR_KEYS]).reset_index(drop=True)


def build_pairs(chosen: pd.DataFrame, prompts: pd.DataFrame) -> list[Pair]:
    """chosen: pairs (cohort, layer, neuron, head_layer, head, token). prompts: per (pair, prompt) the split,
    the active flag, the prompt text and exemplar rank, for the chosen pairs' neurons."""
    by_pair = {k: g for k, g in prompts.groupby(PAIR_KEYS, sort=False)}
    out = []
    for row in chosen.itertuples():
        key = (row.layer, row.neuron, row.head_layer, row.head)
        pair = Pair(row.cohort, *map(int, key), token=row.token)
        rows = by_pair.get(key)
        if rows is not None:
            rows = rows.sort_values(["split", "rank"])
            explain = rows[rows["split"] == "explain"]
            heldout = rows[rows["split"] == "heldout"]
            pair.active = explain.loc[explain["active"], "prompt_text"].tolist()
            pair.inactive = explain.loc[~explain["active"], "prompt_text"].tolist()
            pair.heldout = heldout["prompt_text"].tolist()
            pair.heldout_truth = heldout["active"].astype(bool).tolist()
        out.append(pair)
    return out


def explanation_id(model_id: str, prompt_set_id: str, pair: Pair, explainer: str, template_version: str) -> str:
    return cache_key("explanation", model_id, prompt_set_id, pair.key, explainer, template_version)


# ---------------------------------------------------------------- step 6: explanations


def _numbered(texts: list[str], token: str, settings: ExplanationSettings) -> str:
    shown = texts[: settings.max_examples]
    return "\n".join(f"{i + 1}. {snippet(t, token, settings.max_prompt_chars)}" for i, t in enumerate(shown)) or "(none)"


def explain_pairs(
    pairs: list[Pair],
    model_id: str,
    prompt_set_id: str,
    settings: ExplanationSettings,
    template: Template,
    backend: LlmBackend | None,
    ledger: CallLedger | None,
    progress=None,
) -> pd.DataFrame:
    """The ``explanations`` rows: the contrastive reference for every pair, and the LLM backend's."""
    rows = []
    for pair in pairs:
        contrast = contrastive_explanation(pair.active[: settings.max_examples], pair.inactive[: settings.max_examples], settings.contrastive_features)
        rows.append(
            {
                "explanation_id": explanation_id(model_id, prompt_set_id, pair, CONTRASTIVE, "log-odds"),
                "explainer": CONTRASTIVE, "backend": CONTRASTIVE, "llm_model": None, "template_version": "log-odds",
                "status": "ok", "explanation": contrast.text, "features": json.dumps(contrast.features), "error": None,
                "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
                **_pair_columns(pair, settings),
            }
        )
    if backend is None:
        return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)
    requests = {}
    for pair in pairs:
        messages = template.messages(
            token=json.dumps(pair.token), active=_numbered(pair.active, pair.token, settings), inactive=_numbered(pair.inactive, pair.token, settings)
        )
        key = cache_key("explain", model_id, pair.key, messages, backend.kind, backend.model, template.version)
        requests[pair.key] = LlmRequest(key, "explain", messages, settings.max_new_tokens)
    answers = ask(backend, template.version, list(requests.values()), ledger, progress, "explanations")
    for pair in pairs:
        answer = answers[requests[pair.key].key]
        rows.append(
            {
                "explanation_id": explanation_id(model_id, prompt_set_id, pair, backend.explainer, template.version),
                "explainer": backend.explainer, "backend": backend.kind, "llm_model": backend.model, "template_version": template.version,
                "status": answer.status, "explanation": answer.text, "features": None, "error": answer.error,
                "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens, "cached": answer.cached,
                **_pair_columns(pair, settings),
            }
        )
    return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)


def _pair_columns(pair: Pair, settings: ExplanationSettings) -> dict:
    return {
        "cohort": pair.cohort, "layer": pair.layer, "neuron": pair.neuron, "head_layer": pair.head_layer, "head": pair.head,
        "token": pair.token, "n_active_shown": min(len(pair.active), settings.max_examples),
        "n_inactive_shown": min(len(pair.inactive), settings.max_examples),
    }


# ---------------------------------------------------------------- step 7: scores


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


def _score_row(explanation: pd.Series, target: Pair, baseline: str, scorer: str, answers: list[LlmResponse] | None, contrast_scores: list[float] | None) -> dict:
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
                messages = template.messages(
                    token=json.dumps(target.token), explanation=exp["explanation"], prompt=snippet(prompt, target.token, settings.max_prompt_chars)
                )
                key = cache_key("classify", model_id, target.key, messages, backend.kind, backend.model, template.version)
                requests[(exp["explanation_id"], target.key, prompt)] = LlmRequest(key, "classify", messages, 3)
    answers = ask(backend, template.version, list(requests.values()), ledger, progress, "scoring") if requests else {}

    rows = []
    for exp, target, baseline in targets:
        if exp["explainer"] == CONTRASTIVE:
            contrast = ContrastiveExplanation(features=json.loads(exp["features"]))
            rows.append(_score_row(exp, target, baseline, CONTRASTIVE, None, [contrast.score(p) for p in target.heldout]))
        elif backend is not None and exp["explainer"] == backend.explainer:
            got = [answers[requests[(exp["explanation_id"], target.key, p)].key] for p in target.heldout] if exp["status"] == "ok" else []
            rows.append(_score_row(exp, target, baseline, backend.explainer, got, None))
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


# ---------------------------------------------------------------- findings: E against the baselines


TEST_COLUMNS = [
    "explainer", "baseline", "n", "mean_e", "std_e", "skew", "skew_z", "skew_p", "n_baseline", "mean_baseline",
    "std_baseline", "mw_u", "mw_p", "mean_auc",
]


def explanation_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """Per explainer: the distribution of E over next-token pairs (mean, std, skew, skewtest) and a two-sided
    Mann-Whitney U test against each baseline: random neurons' pairs, and shuffled explanations."""
    from scipy import stats

    rows = []
    scored = scores[scores["status"] == "scored"]
    for explainer, group in scored.groupby("explainer"):
        own = group[(group["cohort"] == "next_token") & (group["baseline"] == "none")]
        e = own["e_score"].astype(float).to_numpy()
        baselines = {
            "random_neurons": group[(group["cohort"] == "random") & (group["baseline"] == "none")]["e_score"].astype(float).to_numpy(),
            "shuffled": group[group["baseline"] == "shuffled"]["e_score"].astype(float).to_numpy(),
        }
        skew = float(stats.skew(e)) if len(e) > 2 else None
        skew_z = skew_p = None
        if len(e) >= 8 and np.ptp(e) > 0:
            test = stats.skewtest(e)
            skew_z, skew_p = float(test.statistic), float(test.pvalue)
        for name, base in baselines.items():
            mw_u = mw_p = None
            if len(e) and len(base):
                test = stats.mannwhitneyu(e, base, alternative="two-sided")
                mw_u, mw_p = float(test.statistic), float(test.pvalue)
            rows.append(
                {
                    "explainer": explainer, "baseline": name, "n": len(e),
                    "mean_e": float(e.mean()) if len(e) else None, "std_e": float(e.std(ddof=1)) if len(e) > 1 else None,
                    "skew": skew, "skew_z": skew_z, "skew_p": skew_p,
                    "n_baseline": len(base), "mean_baseline": float(base.mean()) if len(base) else None,
                    "std_baseline": float(base.std(ddof=1)) if len(base) > 1 else None,
                    "mw_u": mw_u, "mw_p": mw_p, "mean_auc": float(own["auc"].dropna().mean()) if own["auc"].notna().any() else None,
                }
            )
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def e_histogram(scores: pd.DataFrame, title: str) -> bytes | None:
    """The paper's figure: per explainer, the histogram of E over next-token pairs with the random-neuron
    baseline (and the shuffled baseline) overlaid. PNG bytes, or None with nothing scored."""
    scored = scores[scores["status"] == "scored"]
    if not len(scored):
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    explainers = sorted(scored["explainer"].unique())
    fig, axes = plt.subplots(1, len(explainers), figsize=(5 * len(explainers), 3.4), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, explainer in zip(axes[0], explainers):
        group = scored[scored["explainer"] == explainer]
        series = {
            "next-token neurons": group[(group["cohort"] == "next_token") & (group["baseline"] == "none")]["e_score"],
            "random neurons (baseline)": group[(group["cohort"] == "random") & (group["baseline"] == "none")]["e_score"],
            "shuffled explanations": group[group["baseline"] == "shuffled"]["e_score"],
        }
        for (label, values), style in zip(series.items(), ({"alpha": 0.75}, {"alpha": 0.5}, {"histtype": "step", "linewidth": 1.5})):
            if len(values):
                ax.hist(values.astype(float), bins=bins, density=True, label=f"{label} (n={len(values)}, mean {values.mean():.3f})", **style)
        ax.axvline(0.5, color="#888", linestyle=":", linewidth=1)
        ax.set_title(explainer, fontsize=9)
        ax.set_xlabel("Head Explanation Score E (balanced accuracy, held-out)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
