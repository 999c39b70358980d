"""Consistent pairs from per-prompt active flags, and the statistics of explanation scores: bootstrap CIs of mean
E and the paired test against the shuffled baseline (no model)."""

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lookups.pipeline.config import HeadScoreSettings
from lookups.pipeline.llm import significance
from lookups.pipeline.science.head_scores import SCORE_COLUMNS, head_neuron_scores
from lookups.pipeline.store import explanation_suites, quality
from lookups.pipeline.store.store import Store


def frame(active_by_head: dict, split="explain", layer=5, neuron=7):
    rows = []
    for (head_layer, head), flags in active_by_head.items():
        for i, flag in enumerate(flags):
            rows.append(
                {"layer": layer, "neuron": neuron, "split": split, "doc_id": f"{split}{i}", "head_layer": head_layer, "head": head,
                 "gate_contribution": None, "in_contribution": 2.0 * flag + 0.01 * head, "score": 2.0 * flag + 0.01 * head, "active": flag}
            )
    return pd.DataFrame(rows)


def test_consistent_means_active_on_a_quarter_to_three_quarters_of_explain_prompts():
    explain = frame(
        {
            (0, 0): [True] * 8,  # always on: not context-dependent
            (0, 1): [True] * 4 + [False] * 4,  # half: consistent
            (1, 0): [True] * 2 + [False] * 6,  # exactly a quarter: consistent (bounds inclusive)
            (1, 1): [True] + [False] * 7,  # one in eight: not
        }
    )
    heldout = frame({(0, 1): [True, False, False], (1, 1): [False, False, False]}, split="heldout")
    raw = head_neuron_scores(pd.concat([explain, heldout]), HeadScoreSettings())
    assert list(raw.columns) == SCORE_COLUMNS
    out = raw.set_index(["head_layer", "head"])
    assert out["consistent"].to_dict() == {(0, 0): False, (0, 1): True, (1, 0): True, (1, 1): False}
    assert out.loc[(0, 1), "active_fraction"] == 0.5 and out.loc[(0, 1), "n_prompts"] == 8
    assert out["rank"].to_dict() == {(0, 0): 1, (0, 1): 2, (1, 0): 3, (1, 1): 4}  # by mean score
    assert out.loc[(0, 1), "heldout_active_count"] == 1 and out.loc[(0, 1), "heldout_n_prompts"] == 3
    assert out.loc[(0, 0), "heldout_n_prompts"] == 0 and pd.isna(out.loc[(0, 0), "heldout_active_fraction"])


def test_thresholds_and_minimum_prompts_are_configuration():
    explain = frame({(0, 0): [True] * 3 + [False]})  # 4 prompts, 75% active
    assert bool(head_neuron_scores(explain, HeadScoreSettings(min_prompts=4))["consistent"][0])
    assert not head_neuron_scores(explain, HeadScoreSettings(min_prompts=5))["consistent"][0]
    assert not head_neuron_scores(explain, HeadScoreSettings(min_prompts=1, consistent_max=0.7))["consistent"][0]


# ---------------------------------------------------------------- explanation statistics


def scores_frame(own: list, random: list = (), shuffled: list = (), explainer: str = "x") -> pd.DataFrame:
    """explanation_scores rows: next-token E (ids e0, e1, ...), random-neuron E, and shuffled E given as
    (explanation id, E) so a shuffled row pairs with its explanation's own row."""
    rows = [(f"e{i}", explainer, "next_token", "none", v) for i, v in enumerate(own)]
    rows += [(f"r{i}", explainer, "random", "none", v) for i, v in enumerate(random)]
    rows += [(eid, explainer, "next_token", "shuffled", v) for eid, v in shuffled]
    frame = pd.DataFrame(rows, columns=["explanation_id", "explainer", "cohort", "baseline", "e_score"])
    frame["status"], frame["scorer"], frame["auc"], frame["calibrated_e"], frame["correlation"] = "scored", "detection", None, None, None
    return frame


def test_bootstrap_ci_contains_the_mean_narrows_with_more_samples_and_is_seeded():
    rng = np.random.default_rng(3)
    few, many = rng.uniform(0.3, 0.9, 12), rng.uniform(0.3, 0.9, 400)
    for x in (few, many):
        low, high = significance.bootstrap_mean_ci(x)
        assert low < x.mean() < high
    width = lambda x: np.subtract(*significance.bootstrap_mean_ci(x)[::-1])  # noqa: E731
    assert width(many) < width(few) / 3  # ~ 1/sqrt(n): sqrt(400/12) is about 5.8
    assert significance.bootstrap_mean_ci(few, seed=7) == significance.bootstrap_mean_ci(few, seed=7)
    assert significance.bootstrap_mean_ci(few, seed=7) != significance.bootstrap_mean_ci(few, seed=8)
    wider = significance.bootstrap_mean_ci(few, level=0.99)
    assert wider[0] < significance.bootstrap_mean_ci(few)[0] and wider[1] > significance.bootstrap_mean_ci(few)[1]


def test_the_ci_of_a_small_frame_matches_the_exact_bootstrap_distribution():
    """Recomputation: with five or six values, every resample (6^6 of them) can be enumerated, so the bootstrap
    distribution of the mean is known exactly; the Monte Carlo percentiles must lie close to its quantiles, and to
    scipy's percentile bootstrap."""
    own = [0.31, 0.47, 0.52, 0.58, 0.66, 0.93]
    random = [0.38, 0.44, 0.51, 0.57, 0.72]
    tests = significance.explanation_tests(scores_frame(own, random)).set_index("baseline")
    for values, (low, high) in (
        (own, tests.loc["random_neurons", ["ci_low", "ci_high"]]),
        (random, tests.loc["random_neurons", ["baseline_ci_low", "baseline_ci_high"]]),
    ):
        means = np.array([np.mean(r) for r in itertools.product(values, repeat=len(values))])  # equally likely
        exact = np.quantile(means, [0.025, 0.975])
        assert (low, high) == pytest.approx(tuple(exact), abs=0.01)
        ref = stats.bootstrap((np.array(values),), np.mean, method="percentile", n_resamples=10_000, rng=np.random.default_rng(1))
        assert (low, high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=0.01)
    # The next-token mean's CI is the same on both baselines' rows; the shuffled row has no baseline to draw.
    assert tests.loc["shuffled", "ci_low"] == tests.loc["random_neurons", "ci_low"]
    assert pd.isna(tests.loc["shuffled", "baseline_ci_low"]) and tests.loc["shuffled", "n_baseline"] == 0


def test_the_paired_shuffled_test_matches_scipy():
    own = [0.5, 0.75, 0.625, 0.875, 0.5, 0.9375, 0.6875, 0.8125]
    shuffled = [0.5, 0.5, 0.625, 0.4375, 0.5625, 0.5, 0.375, 0.25]  # two zero differences, one negative
    frame = scores_frame(own, [0.5, 0.5625], [(f"e{i}", v) for i, v in enumerate(shuffled)])
    frame = pd.concat([frame, scores_frame([], [], [("e-unscored", 0.1)])])  # a shuffled row with no own E: not a pair
    tests = significance.explanation_tests(frame).set_index("baseline")
    row = tests.loc["shuffled"]
    ref = stats.wilcoxon(own, shuffled, alternative="two-sided")
    assert row["n_paired"] == 8
    assert row["difference"] == pytest.approx(np.mean(np.subtract(own, shuffled)))
    assert row["wilcoxon_w"] == pytest.approx(ref.statistic) and row["wilcoxon_p"] == pytest.approx(ref.pvalue)
    assert row["mw_p"] == pytest.approx(stats.mannwhitneyu(own, [*shuffled, 0.1], alternative="two-sided").pvalue)  # kept as it was
    assert tests.loc["random_neurons", ["n_paired", "wilcoxon_w", "wilcoxon_p"]].isna().all()  # nothing to pair


def test_degenerate_inputs_give_nulls():
    one = significance.explanation_tests(scores_frame([0.75], [0.5], [("e0", 0.5)])).set_index("baseline")
    assert one[["ci_low", "ci_high", "baseline_ci_low", "baseline_ci_high", "difference_ci_low", "permutation_p"]].isna().all().all()  # n < 2
    assert one.loc["shuffled", "n_paired"] == 1 and pd.isna(one.loc["shuffled", "wilcoxon_p"])
    same = significance.explanation_tests(scores_frame([0.5, 0.75, 0.75], [], [("e0", 0.5), ("e1", 0.75), ("e2", 0.75)])).set_index("baseline")
    assert same.loc["shuffled", "n_paired"] == 3 and same.loc["shuffled", "difference"] == 0.0
    assert same.loc["shuffled", ["wilcoxon_w", "wilcoxon_p", "permutation_p"]].isna().all()  # all differences zero
    assert pd.isna(same.loc["random_neurons", "baseline_ci_low"]) and same.loc["random_neurons", "n_baseline"] == 0
    assert significance.bootstrap_mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)  # no spread: no interval to widen
    assert significance.bootstrap_mean_ci([]) == (None, None)
    assert significance.paired_wilcoxon(np.array([])) == (None, None)
    assert significance.permutation_p([0.5, 0.5], [0.5, 0.5], paired=False) is None  # no spread


def test_the_new_columns_go_through_the_schema_the_views_and_the_checks():
    own = [0.5, 0.75, 0.625, 0.875, 0.5, 0.9375]
    frame = scores_frame(own, [0.5, 0.5625, 0.4375], [(f"e{i}", v) for i, v in enumerate([0.5, 0.5, 0.625, 0.4375, 0.5625, 0.5])])
    tests = significance.explanation_tests(frame)
    keys = {"model_id": "m@1", "prompt_set_id": "ps-1", "explainer": "x"}
    store = Store()
    store.replace("explanation_tests", keys, tests)
    rows = store.rows("explanation_tests", **keys)
    assert quality.validate(explanation_suites.explanation_tests_check_frame(rows), "t", explanation_suites.explanation_tests_suite()).success
    found = store.named_query("explanation_findings", model_id="m@1", prompt_set_id="ps-1").set_index("baseline")
    assert found.loc["shuffled", "wilcoxon_p"] == pytest.approx(tests.set_index("baseline").loc["shuffled", "wilcoxon_p"])
    assert found.loc["random_neurons", "ci_low"] <= found.loc["random_neurons", "mean"] <= found.loc["random_neurons", "ci_high"]
    preview = store.read("preview_explanation_comparison", model_id="m@1", prompt_set_id="ps-1")
    assert {"mean_95ci", "difference_95ci", "permutation_p", "wilcoxon_p", "signal"} <= set(preview.columns)
    broken = rows.copy()
    broken.loc[broken["baseline"] == "random_neurons", "wilcoxon_p"] = 0.5  # no pairing on the random-neuron row
    broken["ci_high"] = broken["ci_low"] - 0.1  # an interval upside down
    outcome = quality.validate(explanation_suites.explanation_tests_check_frame(broken), "t", explanation_suites.explanation_tests_suite())
    failed = {f["kwargs"].get("column") for f in outcome.failures}
    assert not outcome.success and {"cis_consistent", "paired_consistent"} <= failed, outcome.summary()


def test_the_permutation_test_is_exact_on_small_samples_and_matches_scipy():
    """Recomputation: with 4 + 4 values every relabelling (70) can be enumerated, and with 5 pairs every sign flip (32)."""
    a, b = [0.61, 0.72, 0.80, 0.55], [0.50, 0.41, 0.52, 0.47]
    observed = np.mean(a) - np.mean(b)
    pooled = np.array(a + b)
    diffs = [pooled[list(c)].mean() - np.delete(pooled, list(c)).mean() for c in itertools.combinations(range(8), 4)]
    exact = np.mean(np.abs(diffs) >= abs(observed) - 1e-12)
    assert significance.permutation_p(a, b, paired=False) == pytest.approx(exact)
    x, y = np.array([0.7, 0.6, 0.9, 0.55, 0.8]), np.array([0.5, 0.62, 0.5, 0.5, 0.45])
    d = x - y
    flips = [np.mean(d * np.array(signs)) for signs in itertools.product([1, -1], repeat=5)]
    assert significance.permutation_p(x, y, paired=True) == pytest.approx(np.mean(np.abs(flips) >= abs(d.mean()) - 1e-12))


def test_the_difference_ci_resamples_each_cohort_and_covers_the_difference():
    rng = np.random.default_rng(5)
    own, random = rng.normal(0.6, 0.05, 48), rng.normal(0.5, 0.05, 48)
    low, high = significance.bootstrap_difference_ci(own, random)
    assert low < own.mean() - random.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * np.sqrt(own.var(ddof=1) / 48 + random.var(ddof=1) / 48), rel=0.15)  # the normal approximation
    assert significance.bootstrap_difference_ci(own, [0.5]) == (None, None)


def test_a_difference_of_five_hundredths_reaches_significance_with_equal_cohorts():
    """The power the equal-sized random cohort buys: per-pair scores with the spread of the demo's contrastive E
    (std 0.15 over 48 next-token pairs) and a true difference of 0.05, found more often with 48 random pairs than
    with the 12 the demo had before."""
    rng = np.random.default_rng(0)

    def found(n_random: int) -> float:
        hits = 0
        for _ in range(40):
            own, random = rng.normal(0.55, 0.15, 48), rng.normal(0.50, 0.15, n_random)
            hits += significance.permutation_p(own, random, paired=False, n_resamples=2000) < 0.05
        return hits / 40

    equal, small = found(48), found(12)
    assert equal > small
