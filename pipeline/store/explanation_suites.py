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
    """Per (explanation, scorer, split, baseline): keys unique, E and AUC in [0, 1], confusion counts that add
    up to the usable answers, and a reason for every row not scored."""
    import great_expectations as gx

    return keys_expected(["explanation_id", "scorer", "split", "baseline"]) + [
        gx.expectations.ExpectColumnValuesToBeBetween(column="e_score", min_value=0.0, max_value=1.0),
        gx.expectations.ExpectColumnValuesToBeBetween(column="auc", min_value=0.0, max_value=1.0),
        gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=["scored", "not_scored"]),
        gx.expectations.ExpectColumnValuesToBeInSet(column="consistent_counts", value_set=[True]),
    ]


def explanation_scores_check_frame(scores: pd.DataFrame) -> pd.DataFrame:
    frame = scores.copy()
    counted = frame[["tp", "fn", "tn", "fp"]].fillna(0).sum(axis=1)
    scored = frame["status"] == "scored"
    frame["consistent_counts"] = (scored & (counted == frame["n_answered"]) & frame["e_score"].notna()) | (~scored & frame["reason"].notna())
    return frame


EXPLANATION_TEST_CIS = ["mean_e_ci_low", "mean_e_ci_high", "baseline_ci_low", "baseline_ci_high"]


EXPLANATION_TEST_PAIRED = ["n_paired", "paired_mean_diff", "wilcoxon_w", "wilcoxon_p"]


EXPLANATION_TEST_STATS = [
    "mean_e", "std_e", "skew", "skew_z", "skew_p", "mean_baseline", "std_baseline", "mw_u", "mw_p", "mean_auc",
    *EXPLANATION_TEST_CIS, "paired_mean_diff", "wilcoxon_w", "wilcoxon_p",
]


def explanation_tests_suite() -> list:
    """Per (model, prompt set, explainer, baseline): keys unique, baseline known, n non-negative, statistics
    finite, p-values, mean E, their bootstrap CIs and AUC in [0, 1], deviations, U and W non-negative, the mean paired
    difference in [-1, 1]; the mean E, the baseline's mean and the Mann-Whitney test present wherever their pairs
    exist, each CI both ends or neither, ordered and only with two values or more, and the paired test only on the
    shuffled rows with two pairs or more (see ``explanation_tests_check_frame``)."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "explainer", "baseline"])
        + [gx.expectations.ExpectColumnValuesToBeInSet(column="baseline", value_set=["random_neurons", "shuffled"])]
        + [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in ("n", "n_baseline")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("n", "n_baseline", "n_paired")]
        + bounded(EXPLANATION_TEST_STATS)
        + p_values(["skew_p", "mw_p", "wilcoxon_p", "mean_e", "mean_baseline", "mean_auc", *EXPLANATION_TEST_CIS])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0) for c in ("std_e", "std_baseline", "mw_u", "wilcoxon_w")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column="paired_mean_diff", min_value=-1.0, max_value=1.0)]
        + [gx.expectations.ExpectColumnValuesToBeInSet(column=c, value_set=[True]) for c in ("stats_present", "cis_consistent", "paired_consistent")]
    )


def _ci_consistent(frame: pd.DataFrame, low: str, high: str, n: pd.Series) -> pd.Series:
    """Both ends or neither, low <= high, and none from fewer than two values."""
    both, neither = frame[[low, high]].notna().all(axis=1), frame[[low, high]].isna().all(axis=1)
    return neither | (both & (frame[low] <= frame[high]) & (n >= 2))


def explanation_tests_check_frame(tests: pd.DataFrame) -> pd.DataFrame:
    frame = tests.copy()
    for column in EXPLANATION_TEST_CIS + EXPLANATION_TEST_PAIRED:
        if column not in frame:  # rows from before the column existed read it as NULL
            frame[column] = np.nan
    own, base = frame["n"] > 0, frame["n_baseline"] > 0
    frame["stats_present"] = (
        present_where(frame, own, ["mean_e"]) & present_where(frame, base, ["mean_baseline"]) & present_where(frame, own & base, ["mw_u", "mw_p"])
    )
    frame["cis_consistent"] = _ci_consistent(frame, "mean_e_ci_low", "mean_e_ci_high", frame["n"]) & _ci_consistent(
        frame, "baseline_ci_low", "baseline_ci_high", frame["n_baseline"]
    )
    paired = frame[EXPLANATION_TEST_PAIRED].notna()
    frame["paired_consistent"] = ~paired.any(axis=1) | (
        (frame["baseline"] == "shuffled") & (paired["wilcoxon_p"] == paired["wilcoxon_w"]) & (~paired["wilcoxon_p"] | (frame["n_paired"] >= 2))
    )
    return frame


def llm_calls_suite() -> list:
    """Per LLM call: a cache key, a known purpose and status (the backends' statuses: a call stopped by the budget
    is never made, so never recorded), token counts and seconds non-negative."""
    import great_expectations as gx

    from lookups.pipeline.llm.backends import ANSWER_STATUSES

    return (
        [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in ("cache_key", "run_id", "status", "prompt_tokens", "completion_tokens")]
        + [
            gx.expectations.ExpectColumnValueLengthsToBeBetween(column="cache_key", min_value=1),
            gx.expectations.ExpectColumnValuesToBeInSet(column="status", value_set=[*ANSWER_STATUSES, "error"]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="purpose", value_set=["explain", "classify"]),
        ]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("prompt_tokens", "completion_tokens")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column="seconds", min_value=0.0, max_value=FINITE)]
    )
