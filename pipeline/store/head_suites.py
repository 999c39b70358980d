"""The data-quality suites of the heads' tables (docs/quality.md): the attributions to each head and the
tolerances of their identity checks, the head scores, the ablations and their tests, the look-ups and the
interventions on them; each suite's expectations and the check frame it runs on (a column per rule)."""

from __future__ import annotations

import pandas as pd

from lookups.pipeline.store.quality import Tolerance, bounded, finite, keys_expected, p_values, present_where

#: Rounding is far below these tolerances on any hardware (the scales bound it), so a failure is not noise.
_NOT_ROUNDING = (
    "fp32 rounding stays far below this on any CPU or GPU, so the model is not decomposed as described: check that it runs in float32 "
    "with TF32 off, else report the model (docs/quality.md#tolerances)."
)


ATTRIBUTION_IDENTITY = Tolerance(
    "identity_rel_error", "head_attributions.identity_tolerance", "miss the neuron's pre-activation", "their rounding scale", _NOT_ROUNDING,
)


LOOKUP_IDENTITY = Tolerance(
    "identity_rel_error", "head_lookups.identity_tolerance", "do not sum to the head's output from the same pass", "their rounding scale",
    _NOT_ROUNDING,
)


QK_IDENTITY = Tolerance(
    "identity_rel_error", "qk_attributions.identity_tolerance", "do not sum to the head's score from the same pass", "|q| |k| x scaling",
    _NOT_ROUNDING,
)


LOOKUP_AGREEMENT = Tolerance(
    "attribution_rel_error", "head_lookups.attribution_tolerance", "differ from the head's stored attribution", "the head's magnitude",
    "Two forward passes differ by rounding only, far less than this, so the stored attribution was computed from other weights or "
    "prompts: rematerialize head_attributions, then head_lookups (docs/quality.md#tolerances).",
)


def attribution_identity_suite() -> list:
    """Per exemplar (``exemplar_decompositions``): keys unique, values finite (the identity itself is
    ``ATTRIBUTION_IDENTITY``: the full decomposition summing to the pre-activation)."""
    return keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "doc_id"]) + finite(["pre_in", "sum_in", "act", "identity_abs_error"])


def head_attributions_suite() -> list:
    """Per (exemplar, head): keys unique, scores finite, and only heads of layers 0..L attributed to a layer-L neuron."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "doc_id", "head_layer", "head"])
        + finite(["in_contribution", "score"])
        + [gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="layer", column_B="head_layer", or_equal=True)]
    )


def head_scores_suite() -> list:
    """Per (neuron, head): keys unique, fractions in [0, 1], ranks from 1, exactly one rank-1 head per neuron."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head"])
        + finite(["mean_score", "std_score"])
        + [
            gx.expectations.ExpectColumnValuesToBeBetween(column="active_fraction", min_value=0.0, max_value=1.0),
            gx.expectations.ExpectColumnValuesToBeBetween(column="heldout_active_fraction", min_value=0.0, max_value=1.0),
            gx.expectations.ExpectColumnValuesToBeBetween(column="rank", min_value=1),
            gx.expectations.ExpectColumnValuesToBeBetween(column="n_prompts", min_value=1),
            gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["model_id", "prompt_set_id", "layer", "neuron", "rank"]),
        ]
    )


def ablations_suite() -> list:
    """Per (pair, prompt): keys unique, activations finite, probabilities in [0, 1]."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "doc_id"])
        + finite(["clean_act", "ablated_act", "act_drop"])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0) for c in ("clean_prob", "ablated_prob")]
    )


ABLATION_TEST_STATS = ["mean_active", "mean_inactive", "median_active", "median_inactive", "ks_statistic", "p_value"]


def ablation_tests_suite() -> list:
    """Per (model, prompt set, metric): keys unique, metric known, counts non-negative, statistics finite, the KS
    statistic and p-value in [0, 1], and each statistic present wherever its prompts exist (see
    ``ablation_tests_check_frame``)."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "metric"])
        + [gx.expectations.ExpectColumnValuesToBeInSet(column="metric", value_set=["act_drop", "prob_drop"])]
        + [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in ("n_active", "n_inactive")]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("n_active", "n_inactive")]
        + bounded(ABLATION_TEST_STATS)
        + p_values(["ks_statistic", "p_value"])
        + [gx.expectations.ExpectColumnValuesToBeInSet(column="stats_present", value_set=[True])]
    )


def ablation_tests_check_frame(tests: pd.DataFrame) -> pd.DataFrame:
    """Means and medians are defined wherever their prompts exist, the KS test wherever both groups do."""
    frame = tests.copy()
    active, inactive = frame["n_active"] > 0, frame["n_inactive"] > 0
    frame["stats_present"] = (
        present_where(frame, active, ["mean_active", "median_active"])
        & present_where(frame, inactive, ["mean_inactive", "median_inactive"])
        & present_where(frame, active & inactive, ["ks_statistic", "p_value"])
    )
    return frame


def lookups_suite() -> list:
    """Per (pair, prompt, source position): keys unique, terms finite, attention a probability, positions and
    ranks valid (the identity and the agreement with the attribution are ``LOOKUP_IDENTITY`` and
    ``LOOKUP_AGREEMENT``, checked per (pair, prompt))."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "doc_id", "position"])
        + finite(["in_contribution", "contribution", "head_score", "identity_abs_error", "attribution_abs_error"])
        + [
            # A softmax output: the exponential of the largest score over a sum that includes it, at most 1 in
            # any rounding; the margin is one fp32 rounding of that quotient.
            gx.expectations.ExpectColumnValuesToBeBetween(column="attention", min_value=0.0, max_value=1.0 + 2**-23),
            gx.expectations.ExpectColumnValuesToBeBetween(column="position", min_value=0),
            gx.expectations.ExpectColumnValuesToBeBetween(column="distance", min_value=0),
            gx.expectations.ExpectColumnValuesToBeBetween(column="rank", min_value=1),
            gx.expectations.ExpectColumnValuesToBeInSet(column="cohort", value_set=["next_token", "random"]),
        ]
    )


def interventions_suite() -> list:
    """Per (pair, prompt, site): keys unique, sites known, activations finite, probabilities in [0, 1], at least one substitute."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "doc_id", "site"])
        + finite(["clean_act", "substituted_act", "act_drop", "clean_score", "substituted_score"])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0) for c in ("clean_prob", "substituted_prob")]
        + [
            gx.expectations.ExpectColumnValuesToBeInSet(column="site", value_set=["lookup", "control"]),
            gx.expectations.ExpectColumnValuesToBeBetween(column="n_substitutes", min_value=1),
            gx.expectations.ExpectColumnValuesToBeBetween(column="position", min_value=1),
        ]
    )


def lookup_tests_suite() -> list:
    """Per tested pair: keys unique, p- and q-values in [0, 1], q never below p."""
    import great_expectations as gx

    return keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head"]) + [
        gx.expectations.ExpectColumnValuesToBeBetween(column="p_value", min_value=0.0, max_value=1.0),
        gx.expectations.ExpectColumnValuesToBeBetween(column="q_value", min_value=0.0, max_value=1.0),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="q_value"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="n_prompts", min_value=1),
    ]


def knockouts_suite() -> list:
    """Per (pair, prompt, prompt_kind, site): keys unique, windows and sites known, activations finite, weights and
    probabilities in [0, 1], the blocked position after BOS."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "doc_id", "prompt_kind", "site"])
        + finite(["clean_act", "knocked_act", "act_drop", "clean_score", "knocked_score", "score_drop"])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0 + 2**-23) for c in ("clean_prob", "knocked_prob", "attention")]
        + [
            gx.expectations.ExpectColumnValuesToBeInSet(column="prompt_kind", value_set=["truncated", "untruncated"]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="site", value_set=["lookup", "control_position", "control_head"]),
            gx.expectations.ExpectColumnValuesToBeBetween(column="position", min_value=1),
            gx.expectations.ExpectColumnValuesToBeBetween(column="distance", min_value=0),  # a head may read its own position
        ]
    )


def knockout_tests_suite() -> list:
    """Per (tested pair, prompt_kind): keys unique, p- and q-values in [0, 1], q-values present."""
    import great_expectations as gx

    return keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "prompt_kind"]) + [
        *(gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0)
          for c in ("p_value_position", "p_value_head", "q_value_position", "q_value_head")),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="q_value_position"),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="q_value_head"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="n_prompts", min_value=1),
    ]


def qk_suite() -> list:
    """Per (edge, side, rank): keys unique, sides known, terms and scores finite, weights in [0, 1], the decomposed
    position after BOS (the identity is ``QK_IDENTITY``, checked per edge)."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "doc_id", "position", "side", "rank"])
        + finite(["score", "term", "identity_abs_error", "attention_abs_error"])
        + [
            gx.expectations.ExpectColumnValuesToBeBetween(column="attention", min_value=0.0, max_value=1.0 + 2**-23),
            gx.expectations.ExpectColumnValuesToBeInSet(column="side", value_set=["query", "key", "pair"]),
            gx.expectations.ExpectColumnValuesToBeBetween(column="position", min_value=1),
            gx.expectations.ExpectColumnValuesToBeBetween(column="lookup_rank", min_value=1),
            gx.expectations.ExpectColumnValuesToBeBetween(column="rank", min_value=1),
        ]
    )
