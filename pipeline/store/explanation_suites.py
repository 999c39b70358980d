"""The data-quality suites of the LLM's tables (docs/quality.md): the explanations, their scores and the tests on
those scores, and the log of LLM calls; each suite's expectations and the check frame it runs on (a column per rule)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lookups.pipeline.store.quality import FINITE, bounded, keys_expected, p_values, present_where


def explanations_suite() -> list:
    """Per explanation: id unique, statuses known, an explanation text wherever the status is ok."""
    import great_expectations as gx

    from lookups.pipeline.llm.backends import STATUSES

    return keys_expected(["explanation_id"]) + [
        gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
        gx.expectations.ExpectColumnValuesToBeInSet(column="cohort", value_set=["next_token", "random"]),
        gx.expectations.ExpectColumnValuesToBeInSet(column="has_text_if_ok", value_set=[True]),
        gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="layer", column_B="head_layer", or_equal=True),
    ]


def explanations_check_frame(explanations: pd.DataFrame) -> pd.DataFrame:
    frame = explanations.copy()
    frame["has_text_if_ok"] = (frame["status"] != "ok") | (frame["explanation"].fillna("").str.len() > 0)
    return frame


def explanation_scores_suite() -> list:
    """Per (explanation, scorer, split, baseline): keys unique, scorer known, E, calibrated E and AUC in [0, 1],
    correlations in [-1, 1], and per row (``explanation_scores_check_frame``): detection's confusion counts add up
    to the usable answers, every scored row has its scorer's measure, every row not scored a reason."""
    import great_expectations as gx

    from lookups.pipeline.config import SCORERS

    return keys_expected(["explanation_id", "scorer", "split", "baseline"]) + [
        gx.expectations.ExpectColumnValuesToBeInSet(column="scorer", value_set=list(SCORERS)),
        *[gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0) for c in ("e_score", "calibrated_e", "auc")],
        *[gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=-1.0, max_value=1.0) for c in ("correlation", "pearson")],
        gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=["scored", "not_scored"]),
        gx.expectations.ExpectColumnValuesToBeInSet(column="consistent_counts", value_set=[True]),
    ]


#: The measure a scored row of each scorer always has.
SCORED_MEASURE = {"detection": "auc", "embedding": "auc", "simulation": "correlation"}


def explanation_scores_check_frame(scores: pd.DataFrame) -> pd.DataFrame:
    frame = scores.copy()
    for column in ("calibrated_e", "threshold", "correlation", "pearson"):
        if column not in frame:  # rows from before the column existed read it as NULL
            frame[column] = np.nan
    counted = frame[["tp", "fn", "tn", "fp"]].fillna(0).sum(axis=1)
    scored = frame["status"] == "scored"
    has_measure = pd.Series(False, index=frame.index)
    for scorer, measure in SCORED_MEASURE.items():
        has_measure |= (frame["scorer"] == scorer) & frame[measure].notna()
    detection_counts = (frame["scorer"] != "detection") | frame["e_score"].isna() | (counted == frame["n_answered"])
    frame["consistent_counts"] = (scored & has_measure & detection_counts) | (~scored & frame["reason"].notna())
    return frame


EXPLANATION_TEST_CIS = [("ci_low", "ci_high", "n"), ("baseline_ci_low", "baseline_ci_high", "n_baseline")]
EXPLANATION_TEST_PAIRED = ["n_paired", "wilcoxon_w", "wilcoxon_p"]
EXPLANATION_TEST_STATS = [
    "mean", "ci_low", "ci_high", "std", "skew", "skew_z", "skew_p", "mean_baseline", "baseline_ci_low", "baseline_ci_high", "std_baseline",
    "difference", "difference_ci_low", "difference_ci_high", "permutation_p", "mw_u", "mw_p", "wilcoxon_w", "wilcoxon_p",
]


def explanation_tests_suite() -> list:
    """Per (model, prompt set, explainer, scorer, measure, baseline): keys unique, scorer, measure and baseline
    known, n non-negative, statistics finite, p-values in [0, 1], means and their CIs within the measure's range
    ([-1, 1]; differences [-2, 2]), deviations, U and W non-negative; and per row (``explanation_tests_check_frame``):
    the mean, the baseline's mean and the Mann-Whitney test present wherever their values exist, each CI both ends
    or neither, ordered and only from two values or more, the paired test only on shuffled rows with two pairs or more."""
    import great_expectations as gx

    from lookups.pipeline.llm.significance import CHANCE, MEASURES

    return (
        keys_expected(["model_id", "prompt_set_id", "explainer", "scorer", "measure", "baseline"])
        + [
            gx.expectations.ExpectColumnValuesToBeInSet(column="baseline", value_set=["random_neurons", "shuffled"]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="scorer", value_set=list(MEASURES)),
            gx.expectations.ExpectColumnValuesToBeInSet(column="measure", value_set=list(CHANCE)),
        ]
        + [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in ("n", "n_baseline", "chance")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("n", "n_baseline", "n_paired")]
        + bounded(EXPLANATION_TEST_STATS)
        + p_values(["skew_p", "mw_p", "wilcoxon_p", "permutation_p"])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=-1.0, max_value=1.0)
           for c in ("mean", "ci_low", "ci_high", "mean_baseline", "baseline_ci_low", "baseline_ci_high")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=-2.0, max_value=2.0)
           for c in ("difference", "difference_ci_low", "difference_ci_high")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0) for c in ("std", "std_baseline", "mw_u", "wilcoxon_w")]
        + [gx.expectations.ExpectColumnValuesToBeInSet(column=c, value_set=[True]) for c in ("stats_present", "cis_consistent", "paired_consistent")]
    )


def _ci_consistent(frame: pd.DataFrame, low: str, high: str, n: pd.Series) -> pd.Series:
    """Both ends or neither, low <= high, and none from fewer than two values."""
    both, neither = frame[[low, high]].notna().all(axis=1), frame[[low, high]].isna().all(axis=1)
    return neither | (both & (frame[low] <= frame[high]) & (n >= 2))


def explanation_tests_check_frame(tests: pd.DataFrame) -> pd.DataFrame:
    frame = tests.copy()
    own, base = frame["n"] > 0, frame["n_baseline"] > 0
    frame["stats_present"] = (
        present_where(frame, own, ["mean"]) & present_where(frame, base, ["mean_baseline"]) & present_where(frame, own & base, ["mw_u", "mw_p"])
    )
    frame["cis_consistent"] = np.logical_and.reduce([_ci_consistent(frame, low, high, frame[n]) for low, high, n in EXPLANATION_TEST_CIS])
    paired = frame[EXPLANATION_TEST_PAIRED].notna()
    frame["paired_consistent"] = ~paired.any(axis=1) | (
        (frame["baseline"] == "shuffled") & (paired["wilcoxon_p"] == paired["wilcoxon_w"]) & (~paired["wilcoxon_p"] | (frame["n_paired"] >= 2))
    )
    return frame


def llm_calls_suite() -> list:
    """Per LLM call: a cache key, a known purpose and status (the backends' statuses: a call stopped by the budget
    is never made, so never recorded), token counts and seconds non-negative."""
    import great_expectations as gx

    from lookups.pipeline.llm.backends import ANSWER_STATUSES, PURPOSES

    return (
        [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in ("cache_key", "run_id", "status", "prompt_tokens", "completion_tokens")]
        + [
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="cache_key", min_value=1),
            gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=[*ANSWER_STATUSES, "error"]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="purpose", value_set=list(PURPOSES)),
        ]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("prompt_tokens", "completion_tokens")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column="seconds", min_value=0.0, max_value=FINITE)]
    )
