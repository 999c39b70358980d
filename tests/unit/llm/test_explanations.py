"""Unit tests of pipeline/llm on a real store: metrics, pair choice, the call cache and the run budget, unscored
reasons, the three scorers, the baselines' tests. The LLM here is a counting fake and the sentence encoder a bag of
words; the real backends (local model, llama_cpp.server) run the same path in tests/acceptance/test_llm_backends.py,
the real encoder in tests/integration/llm/test_embedding_scorer.py."""

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
from lookups.pipeline.llm import significance
from lookups.pipeline.llm.backends import LlmBackend, LlmResponse
from lookups.pipeline.llm.templates import load_template
from lookups.pipeline.report import figures
from lookups.pipeline.store.store import Store


class CountingBackend(LlmBackend):
    """Answers 'Yes' (and rates 9) when the snippet mentions 'wizard', and explains with a fixed sentence; counts calls."""

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
                yield request, LlmResponse("ok", f"The head is active when the word wizard appears ({self.calls}).", prompt_tokens=100, completion_tokens=10)
                continue
            yes = "wizard" in request.messages[1]["content"].split("<<<SNIPPET")[1]
            if request.purpose == "simulate":
                yield request, LlmResponse("ok", "9" if yes else "0", rating=9.0 if yes else 0.0, prompt_tokens=50, completion_tokens=1)
            else:
                yield request, LlmResponse("ok", "Yes" if yes else "No", yes, 0.9 if yes else 0.1, prompt_tokens=50, completion_tokens=1)


def bag_of_words(texts: list[str]) -> dict:
    """A stand-in sentence encoder: unit vectors of hashed word counts (the real one is tested on its own)."""
    out = {}
    for text in texts:
        v = np.zeros(64)
        for word in text.lower().replace(".", " ").split():
            v[hash(word) % 64] += 1.0
        out[text] = v / max(np.linalg.norm(v), 1e-9)
    return out


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
        pair.heldout_scores = [2.0, 0.1, 1.5, -0.2]
        pairs.append(pair)
    return pairs


#: Calls per run of run_both on n pairs: explanations, then per pair detection on its own and a shuffled pair's 4
#: held-out prompts and on its 8 explain prompts (calibration), simulation on the same 4 + 4 held-out prompts.
def expected_calls(n: int) -> int:
    return n + n * (4 + 4 + 8) + n * (4 + 4)


def run_both(store, pairs, backend, settings, run_id="run-1", scoring=None):
    explain = load_template(settings.explain_template)
    ledger = llm_ledger.CallLedger(store, run_id, settings.max_calls, settings.max_tokens)
    explained = llm_explain.explain_pairs(pairs, "m@1", "ps-1", settings, explain, backend, ledger)
    ledger = llm_ledger.CallLedger(store, run_id, settings.max_calls, settings.max_tokens)
    judge = llm_score.Judge(backend, load_template(settings.classify_template), load_template(settings.simulate_template), ledger, settings, "m@1")
    scored = llm_score.score_explanations(explained, {p.key: p for p in pairs}, scoring or ScoringSettings(), judge, bag_of_words)
    return explained, scored, ledger


def test_every_call_is_cached_and_a_second_run_makes_none():
    store, backend, settings = Store(), CountingBackend(), ExplanationSettings()
    explained, scored, _ = run_both(store, make_pairs(), backend, settings)
    first_calls = backend.calls
    assert first_calls == expected_calls(3)
    own = scored[scored["baseline"] == "none"].set_index(["explainer", "scorer"]).sort_index()
    llm = own.loc[("fake:counting", "detection")]
    assert (llm["e_score"] == 1.0).all() and (llm["auc"] == 1.0).all() and (llm["calibrated_e"] == 1.0).all()
    assert (own.loc[("fake:counting", "simulation"), "correlation"] > 0.5).all()  # ratings 9, 0, 9, 0 against scores 2, 0.1, 1.5, -0.2
    assert (own.loc[("contrastive", "detection"), "e_score"] == 1.0).all()
    assert set(scored["scorer"]) == {"detection", "embedding", "simulation"}
    assert set(scored["baseline"]) == {"none", "shuffled"}
    assert not (scored["explainer"].isin(["contrastive", "lookup"]) & (scored["scorer"] == "simulation")).any()  # 'llm' by default
    again, rescored, _ = run_both(store, make_pairs(), backend, settings, run_id="run-2")
    assert backend.calls == first_calls, "nothing changed: every answer comes from the cache"
    assert again["cached"][again["explainer"] == "fake:counting"].all()
    pd.testing.assert_frame_equal(rescored.reset_index(drop=True), scored.reset_index(drop=True))
    logged = store.query("SELECT count(*) AS n, count(DISTINCT cache_key) AS k, count(rating) AS ratings FROM llm_calls")
    assert logged.values.tolist() == [[first_calls, first_calls, 3 * 8]]


def test_scorers_and_calibration_are_settings():
    store, backend = Store(), CountingBackend()
    _, scored, _ = run_both(store, make_pairs(), backend, ExplanationSettings(), scoring=ScoringSettings(scorers=["embedding"], calibrate=False))
    assert backend.calls == 3  # the explanations only: the embedding scorer asks no LLM
    assert set(scored["scorer"]) == {"embedding"} and scored["calibrated_e"].isna().all()
    _, everyone, _ = run_both(Store(), make_pairs(), CountingBackend(), ExplanationSettings(),
                              scoring=ScoringSettings(scorers=["simulation"], simulation_explainers="all"))
    assert set(everyone["explainer"]) == {"fake:counting", "contrastive", "lookup"}


def test_a_flagged_or_empty_explanation_is_kept_and_scored_as_such():
    store, backend = Store(), CountingBackend()
    settings = ExplanationSettings()
    pairs = make_pairs(2)
    explain = load_template(settings.explain_template)
    ledger = llm_ledger.CallLedger(store, "run-1", None, None)
    explained = llm_explain.explain_pairs(pairs, "m@1", "ps-1", settings, explain, backend, ledger)
    llm = explained["explainer"] == "fake:counting"
    explained.loc[llm, "status"] = ["comparison", "empty"]
    judge = llm_score.Judge(backend, load_template(settings.classify_template), load_template(settings.simulate_template), ledger, settings, "m@1")
    scored = llm_score.score_explanations(explained, {p.key: p for p in pairs}, ScoringSettings(), judge, bag_of_words)
    mine = scored[scored["explainer"] == "fake:counting"]
    assert set(mine["scorer"]) == {"detection", "embedding", "simulation"}  # kept by every scorer, never dropped
    assert (mine["status"] == "not_scored").all()
    assert set(mine["reason"]) == {"explanation comparison", "explanation empty"}
    assert mine[["e_score", "auc", "correlation"]].isna().all().all()  # never counted as a success
    tests = significance.explanation_tests(scored)
    assert "fake:counting" not in set(tests["explainer"])


def test_a_changed_template_asks_again(tmp_path):
    store, backend = Store(), CountingBackend()
    run_both(store, make_pairs(1), backend, ExplanationSettings())
    before = backend.calls
    own = tmp_path / "explain.v9.txt"
    own.write_text("--- user ---\nWhen does the head fire before $token?\n$active\nvs\n$inactive\n")
    explained, _, _ = run_both(store, make_pairs(1), backend, ExplanationSettings(explain_template=str(own)))
    assert backend.calls > before
    assert explained["template_version"].str.startswith("explain.v9@").any()


def test_the_run_budget_stops_cleanly_and_keeps_what_was_done():
    store, backend = Store(), CountingBackend()
    settings = ExplanationSettings(max_calls=5)
    explained, scored, ledger = run_both(store, make_pairs(), backend, settings)
    assert backend.calls == 5 and ledger.budget_hit
    assert (explained[explained["explainer"] == "fake:counting"]["status"] == "ok").all()  # 3 explanations, then 2 answers
    llm = scored[(scored["explainer"] == "fake:counting") & (scored["scorer"] != "embedding")]
    assert (llm["status"] == "not_scored").all() and llm["reason"].str.contains("run budget").all()
    assert store.query("SELECT count(*) AS n FROM llm_calls")["n"][0] == 5  # saved as made
    # A later run with a larger budget reuses the 5 answers and makes only the rest.
    _, rescored, _ = run_both(store, make_pairs(), backend, ExplanationSettings(max_calls=1000), run_id="run-2")
    assert backend.calls == expected_calls(3)
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
        [(f"e{i}", "x", "next_token", "none", v) for i, v in enumerate(e)] + [(f"r{i}", "x", "random", "none", v) for i, v in enumerate(random_e)]
        + [(f"e{i}", "x", "next_token", "shuffled", v) for i, v in enumerate(shuffled_e)]
    )
    frame = pd.DataFrame(rows, columns=["explanation_id", "explainer", "cohort", "baseline", "e_score"])
    frame["status"], frame["scorer"], frame["auc"], frame["calibrated_e"], frame["correlation"] = "scored", "detection", None, None, None
    tests = significance.explanation_tests(frame)
    assert set(tests["measure"]) == {"e_score"}  # the measures with values
    tests = tests.set_index("baseline")
    assert tests.loc["random_neurons", "mean"] == pytest.approx(e.mean())
    assert tests.loc["random_neurons", "skew"] == pytest.approx(stats.skew(e))
    assert tests.loc["random_neurons", "skew_p"] == pytest.approx(stats.skewtest(e).pvalue)
    assert tests.loc["random_neurons", "mw_p"] == pytest.approx(stats.mannwhitneyu(e, random_e, alternative="two-sided").pvalue)
    assert tests.loc["random_neurons", "difference"] == pytest.approx(e.mean() - random_e.mean())
    assert tests.loc["shuffled", "n_baseline"] == 30 and tests.loc["shuffled", "mean_baseline"] == pytest.approx(shuffled_e.mean())
    assert tests.loc["shuffled", "difference"] == pytest.approx((e - shuffled_e).mean())
    png = figures.score_histograms(frame, "test")
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
