"""Unit tests of pipeline/explanations.py on a real DuckDB file: metrics, pair choice, the call cache and the
run budget, unscored reasons, the baselines' tests. The LLM here is a counting fake; the real backends
(local model, llama_cpp.server) run the same path in test_llm_backends.py."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lookups.pipeline.config import ExplanationSettings, ScoringSettings
from lookups.pipeline.llm import explain as llm_explain
from lookups.pipeline.llm import ledger as llm_ledger
from lookups.pipeline.llm import pairs as llm_pairs
from lookups.pipeline.llm import score as llm_score
from lookups.pipeline.llm.backends import LlmBackend, LlmResponse
from lookups.pipeline.llm.templates import load_template
from lookups.pipeline.report import figures
from lookups.pipeline.store.store import Store


class CountingBackend(LlmBackend):
    """Answers 'Yes' when the snippet mentions 'wizard', and explains with a fixed sentence; counts calls."""

    kind = "fake"
    model = "counting"

    def __init__(self):
        self.calls = 0

    def run(self, requests, allow):
        for request in requests:
            if not allow():
                return
            self.calls += 1
            if request.purpose == "explain":
                yield request, LlmResponse("ok", f"Active after the word wizard (explanation {self.calls}).", prompt_tokens=100, completion_tokens=10)
            else:
                yes = "wizard" in request.messages[1]["content"].split("<<<SNIPPET")[1]
                yield request, LlmResponse("ok", "Yes" if yes else "No", yes, 0.9 if yes else 0.1, prompt_tokens=50, completion_tokens=1)


def test_balanced_accuracy_and_auc():
    e, counts = llm_score.balanced_accuracy([True, True, False, False, False], [True, False, False, False, True])
    assert counts == {"tp": 1, "fn": 1, "tn": 2, "fp": 1}
    assert e == pytest.approx(0.5 * (1 / 2 + 2 / 3))
    assert llm_score.auc([True, False, True, False], [0.9, 0.1, 0.8, 0.8]) == pytest.approx(0.875)  # one tie counts half
    assert llm_score.auc([True, True], [0.1, 0.2]) is None


def test_choose_pairs_takes_each_neurons_strongest_consistent_heads():
    scores = pd.DataFrame(
        [
            ("next_token", 5, 1, 2, 0, 0.9, " a"), ("next_token", 5, 1, 3, 1, 0.5, " a"), ("next_token", 5, 2, 1, 0, 0.7, " b"),
            ("random", 5, 9, 0, 0, 0.1, " c"),
        ],
        columns=["cohort", "layer", "neuron", "head_layer", "head", "mean_score", "token"],
    )
    chosen = llm_pairs.choose_pairs(scores, ExplanationSettings(pairs_per_neuron=1))
    assert chosen[["cohort", "neuron", "head_layer"]].values.tolist() == [["next_token", 1, 2], ["next_token", 2, 1], ["random", 9, 0]]
    capped = llm_pairs.choose_pairs(scores, ExplanationSettings(pairs_per_neuron=2, max_pairs=1))
    assert capped[["cohort", "neuron", "head_layer"]].values.tolist() == [["next_token", 1, 2], ["random", 9, 0]]


def make_pairs(n: int = 3) -> list[llm_pairs.Pair]:
    pairs = []
    for i in range(n):
        pair = llm_pairs.Pair("next_token", 5, i, 2, i, " magic")
        pair.active = [f"the wizard spoke {j}" for j in range(4)]
        pair.inactive = [f"the farmer spoke {j}" for j in range(4)]
        pair.heldout = [f"a wizard came {i}", f"a farmer came {i}", f"old wizard {i}", f"plain text {i}"]
        pair.heldout_truth = [True, False, True, False]
        pairs.append(pair)
    return pairs


def run_both(store, pairs, backend, settings, run_id="run-1"):
    explain, classify = load_template(settings.explain_template), load_template(settings.classify_template)
    ledger = llm_ledger.CallLedger(store, run_id, settings.max_calls, settings.max_tokens)
    explained = llm_explain.explain_pairs(pairs, "m@1", "ps-1", settings, explain, backend, ledger)
    ledger = llm_ledger.CallLedger(store, run_id, settings.max_calls, settings.max_tokens)
    scored = llm_score.score_explanations(explained, {p.key: p for p in pairs}, "m@1", settings, ScoringSettings(), classify, backend, ledger)
    return explained, scored, ledger


def test_every_call_is_cached_and_a_second_run_makes_none():
    store, backend, settings = Store(), CountingBackend(), ExplanationSettings()
    explained, scored, _ = run_both(store, make_pairs(), backend, settings)
    first_calls = backend.calls
    assert first_calls == 3 + 3 * 4 + 3 * 4  # explanations, own held-out prompts, shuffled pairs' prompts
    llm = scored[scored["explainer"] == "fake:counting"]
    assert (llm[llm["baseline"] == "none"]["e_score"] == 1.0).all()
    contrast = scored[(scored["explainer"] == "contrastive") & (scored["baseline"] == "none")]
    assert (contrast["e_score"] == 1.0).all()
    assert set(scored["baseline"]) == {"none", "shuffled"}
    again, rescored, _ = run_both(store, make_pairs(), backend, settings, run_id="run-2")
    assert backend.calls == first_calls, "nothing changed: every answer comes from the cache"
    assert again["cached"][again["explainer"] == "fake:counting"].all()
    pd.testing.assert_frame_equal(rescored.reset_index(drop=True), scored.reset_index(drop=True))
    logged = store.query("SELECT count(*) AS n, count(DISTINCT cache_key) AS k FROM llm_calls")
    assert logged.values.tolist() == [[first_calls, first_calls]]


def test_a_changed_template_asks_again(tmp_path):
    store, backend = Store(), CountingBackend()
    run_both(store, make_pairs(1), backend, ExplanationSettings())
    before = backend.calls
    own = tmp_path / "explain.v2.txt"
    own.write_text("--- user ---\nWhen does the head fire before $token?\n$active\nvs\n$inactive\n")
    explained, _, _ = run_both(store, make_pairs(1), backend, ExplanationSettings(explain_template=str(own)))
    assert backend.calls > before
    assert explained["template_version"].str.startswith("explain.v2@").any()


def test_the_run_budget_stops_cleanly_and_keeps_what_was_done():
    store, backend = Store(), CountingBackend()
    settings = ExplanationSettings(max_calls=5)
    explained, scored, ledger = run_both(store, make_pairs(), backend, settings)
    assert backend.calls == 5 and ledger.budget_hit
    assert (explained[explained["explainer"] == "fake:counting"]["status"] == "ok").all()  # 3 explanations, then 2 answers
    llm = scored[scored["explainer"] == "fake:counting"]
    assert (llm["status"] == "not_scored").all() and llm["reason"].str.contains("run budget").all()
    assert store.query("SELECT count(*) AS n FROM llm_calls")["n"][0] == 5  # saved as made
    # A later run with a larger budget reuses the 5 answers and makes only the rest.
    _, rescored, _ = run_both(store, make_pairs(), backend, ExplanationSettings(max_calls=100), run_id="run-2")
    assert backend.calls == 3 + 3 * 4 + 3 * 4
    assert (rescored["status"] == "scored").all()


def test_the_budget_counts_the_whole_run_across_steps():
    store, backend = Store(), CountingBackend()
    settings = ExplanationSettings(max_tokens=150)
    explain = load_template(settings.explain_template)
    llm_explain.explain_pairs(make_pairs(1), "m@1", "ps-1", settings, explain, backend, llm_ledger.CallLedger(store, "run-1", None, 150))
    later = llm_ledger.CallLedger(store, "run-1", None, 150)  # the scoring step of the same run
    assert later.tokens == 110 and later.allow()
    assert not llm_ledger.CallLedger(store, "run-1", None, 100).allow()
    assert llm_ledger.CallLedger(store, "run-2", None, 100).allow()


def test_unscorable_pairs_are_kept_with_a_reason():
    store, backend = Store(), CountingBackend()
    pairs = make_pairs(2)
    pairs[0].heldout_truth = [False] * 4
    pairs[1].heldout, pairs[1].heldout_truth = [], []
    _, scored, _ = run_both(store, pairs, backend, ExplanationSettings())
    own = scored[scored["baseline"] == "none"]
    assert (own["status"] == "not_scored").all()
    assert set(own["reason"]) == {"no held-out prompt where the head is active"}


def test_explanation_tests_match_scipy():
    rng = np.random.default_rng(0)
    e = rng.uniform(0.4, 0.9, 30)
    random_e = rng.uniform(0.3, 0.7, 12)
    shuffled_e = rng.uniform(0.3, 0.6, 30)
    rows = (
        [("x", "next_token", "none", v) for v in e] + [("x", "random", "none", v) for v in random_e]
        + [("x", "next_token", "shuffled", v) for v in shuffled_e]
    )
    frame = pd.DataFrame(rows, columns=["explainer", "cohort", "baseline", "e_score"])
    frame["status"], frame["auc"] = "scored", None
    tests = llm_score.explanation_tests(frame).set_index("baseline")
    assert tests.loc["random_neurons", "mean_e"] == pytest.approx(e.mean())
    assert tests.loc["random_neurons", "skew"] == pytest.approx(stats.skew(e))
    assert tests.loc["random_neurons", "skew_p"] == pytest.approx(stats.skewtest(e).pvalue)
    assert tests.loc["random_neurons", "mw_p"] == pytest.approx(stats.mannwhitneyu(e, random_e, alternative="two-sided").pvalue)
    assert tests.loc["shuffled", "n_baseline"] == 30 and tests.loc["shuffled", "mean_baseline"] == pytest.approx(shuffled_e.mean())
    png = figures.e_histogram(frame, "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_shuffled_targets_are_other_neurons_pairs():
    frame = pd.DataFrame(
        [(f"e{i}", "x", "next_token", 5, i, 1, 0) for i in range(6)], columns=["explanation_id", "explainer", "cohort", "layer", "neuron", "head_layer", "head"]
    )
    targets = llm_score.shuffled_targets(frame, seed=0)
    assert set(targets) == {f"e{i}" for i in range(6)}
    assert all(targets[f"e{i}"][1] != i for i in range(6))
    assert llm_score.shuffled_targets(frame, seed=0) == targets  # seeded


def test_explanation_ids_are_stable_and_differ_by_explainer():
    pair = make_pairs(1)[0]
    a = llm_pairs.explanation_id("m@1", "ps-1", pair, "contrastive", "log-odds")
    assert a == llm_pairs.explanation_id("m@1", "ps-1", pair, "contrastive", "log-odds")
    assert a != llm_pairs.explanation_id("m@1", "ps-1", pair, "local:x", "explain.v1@1")
    assert json.loads(json.dumps(a)) == a
