"""The data-quality suites of each table (docs/quality.md): expectations built from the run's settings, the
check frames they run on (a column per rule), the tolerances of the identity checks, and the referential
integrity of each table against its parents (``sql/checks/references_<table>.sql``, read by the store)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lookups.pipeline.config import NEURON_ROLES, SPLITS
from lookups.pipeline.store.quality import (
    FINITE,
    SuiteResult,
    Tolerance,
    bounded,
    finite,
    keys_expected,
    p_values,
    present_where,
    row_count,
    validate,
)


def neuron_catalog_suite(n_selected_expected: int) -> list:
    """Keys unique and not null, statistics finite, the selection of the expected size, roles known and agreeing
    with the skew's sign, the bottom score at most the top one, and the moments possible (on ``neuron_check_frame``)."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "layer", "neuron"])
        + finite(["score", "zscore", "vocab_mean", "vocab_std", "vocab_skew", "vocab_kurtosis", "bottom_score"])
        + [
            gx.expectations.ExpectColumnSumToBeBetween(column="selected", min_value=1, max_value=n_selected_expected),
            gx.expectations.ExpectColumnValuesToBeInSet(column="role", value_set=list(NEURON_ROLES)),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="score", column_B="bottom_score", or_equal=True),
            gx.expectations.ExpectColumnValuesToBeInSet(column="role_matches_skew", value_set=[True]),
            gx.expectations.ExpectColumnValuesToBeInSet(column="moments_possible", value_set=[True]),
        ]
    )


def neuron_check_frame(neurons: pd.DataFrame) -> pd.DataFrame:
    """The catalog rows plus the derived columns its suite checks: a prediction neuron's skew is positive and a
    suppression neuron's negative; and Pearson's inequality, kurtosis >= skew² + 1 for any distribution (excess
    kurtosis >= skew² - 2), holds, a check on the moments themselves."""
    frame = neurons.copy()
    skew, kurtosis, role = frame["vocab_skew"], frame["vocab_kurtosis"], frame["role"]
    frame["role_matches_skew"] = ((role != "prediction") | (skew > 0)) & ((role != "suppression") | (skew < 0))
    frame["moments_possible"] = kurtosis >= skew**2 - 2.0 - 1e-6 * (1.0 + skew**2)
    return frame


def documents_suite() -> list:
    import great_expectations as gx

    return keys_expected(["prompt_set_id", "doc_id"]) + [
        gx.expectations.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
    ]


def exemplars_suite(act_ratio: float, max_prompt_tokens: int) -> list:
    """Keys unique and not null, activations finite, every kept prompt at or above the ratio and under the
    length limit, and its last token the document's max-activating token."""
    import great_expectations as gx

    return (
        keys_expected(["model_id", "prompt_set_id", "layer", "neuron", "doc_id"])
        + finite(["doc_max_act", "prompt_act", "act_ratio"])
        + [
            gx.expectations.ExpectColumnValuesToBeBetween(column="act_ratio", min_value=act_ratio - 1e-6),
            gx.expectations.ExpectColumnValuesToBeBetween(column="prompt_n_tokens", min_value=1, max_value=max_prompt_tokens - 1),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="doc_max_act", column_B="zero", or_equal=False),
            gx.expectations.ExpectColumnValuesToBeInSet(column="ends_at_max", value_set=[True]),
        ]
    )


def exemplar_check_frame(exemplars: pd.DataFrame) -> pd.DataFrame:
    """The exemplar rows plus the derived columns the suite checks."""
    frame = exemplars.copy()
    frame["zero"] = 0.0
    frame["ends_at_max"] = (frame["prompt_start"] + frame["prompt_n_tokens"] - 1) == frame["doc_max_pos"]
    return frame


def coverage_suite(min_share: float) -> list:
    """At least one exemplar for at least ``min_share`` of the selected neurons (a warning otherwise)."""
    import great_expectations as gx

    return [gx.expectations.ExpectColumnValuesToBeBetween(column="n_exemplars", min_value=1, mostly=min_share)]


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


def models_suite(rows: int | None = None) -> list:
    """Per model version: id unique and not null, every architecture fact positive (the BOS id a token of the
    vocabulary), the MLP kind known; with ``rows``, exactly that many rows (1 for the run's model)."""
    import great_expectations as gx

    positive = ["n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp", "d_vocab", "n_ctx"]
    return (
        row_count(rows)
        + keys_expected(["model_id"])
        + [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in ["name", "fingerprint", *positive, "bos_token_id"]]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=1) for c in positive]
        + [
            gx.expectations.ExpectColumnValuesToBeBetween(column="bos_token_id", min_value=0),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="d_vocab", column_B="bos_token_id", or_equal=False),
            gx.expectations.ExpectColumnValuesToBeInSet(column="mlp_kind", value_set=["gated", "ungated"]),
        ]
    )


PROMPT_SET_COUNTS = [
    "n_documents", "n_explain", "n_heldout", "source_documents", "duplicates_dropped", "beyond_slice", "skipped_empty", "skipped_undecodable",
    "skipped_malformed",
]


def prompt_sets_suite(rows: int | None = None) -> list:
    """Per prompt set: id unique and not null, counts non-negative, at least one document, the splits adding
    up to the documents (every document is explain or heldout, see ``corpora.build_prompt_set``) and neither
    split empty (no exemplars to explain, or none to score on; the failure's sample says which, and what to
    change); with ``rows``, exactly that many rows (1 for the run's prompt set)."""
    import great_expectations as gx

    return (
        row_count(rows)
        + keys_expected(["prompt_set_id"])
        + [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in PROMPT_SET_COUNTS]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in PROMPT_SET_COUNTS]
        + [
            gx.expectations.ExpectColumnValuesToBeBetween(column="n_documents", min_value=1),
            gx.expectations.ExpectColumnValuesToBeInSet(column="splits_add_up", value_set=[True]),
            gx.expectations.ExpectColumnValuesToBeNull(column="empty_split"),
        ]
    )


def prompt_sets_check_frame(prompt_sets: pd.DataFrame) -> pd.DataFrame:
    frame = prompt_sets.copy()
    frame["splits_add_up"] = (frame["n_explain"] + frame["n_heldout"]) == frame["n_documents"]
    frame["empty_split"] = pd.Series([_empty_split(row) for row in frame.to_dict("records")], index=frame.index, dtype=object)
    return frame


CORPUS_READ_COUNTS = [
    "n_read", "skipped_empty", "skipped_undecodable", "skipped_malformed", "duplicates_dropped", "beyond_slice", "control_stripped",
]


def corpus_reads_suite() -> list:
    """Per corpus that built the prompt set: keys unique and not null, counts non-negative, and at least one
    such corpus (the run's own, written with the prompt set)."""
    import great_expectations as gx

    return (
        [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1)]
        + keys_expected(["prompt_set_id", "corpus_read_id"])
        + [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in CORPUS_READ_COUNTS]
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in CORPUS_READ_COUNTS]
    )


def _empty_split(row: dict) -> str | None:
    """Why a split of the prompt set is empty, and the fix; None when neither is. Splits are drawn per source
    document, so a corpus of very few documents can leave one empty."""
    try:
        fraction = json.loads(row.get("settings") or "{}").get("heldout_fraction")
    except (TypeError, ValueError):
        fraction = None
    sources = row.get("source_documents")
    read = f"{sources} source document{'' if sources == 1 else 's'}"
    now = f" (now {fraction})" if fraction is not None else ""
    if row.get("n_documents", 0) and not row.get("n_explain"):
        return (
            f"the explain split is empty: all {row['n_heldout']} passages of the {read} are held out, so there is nothing to explain; "
            f"lower prompt_set.heldout_fraction{now} or add more source documents"
        )
    if row.get("n_documents", 0) and not row.get("n_heldout"):
        return (
            f"the held-out split is empty: all {row['n_explain']} passages of the {read} are in the explain split (a source document's "
            f"passages stay in one split), so no explanation can be scored; raise prompt_set.heldout_fraction{now} or add more source documents"
        )
    return None


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


#: Per child table, the boolean columns its ``sql/checks/references_<table>.sql`` returns: one per reference
#: (a parent row found, and where it matters the parent in the right state), each of which must be true.
REFERENCES = {
    "neurons": ("model_found",),
    "documents": ("prompt_set_found",),
    "neuron_exemplars": ("neuron_found", "neuron_chosen", "document_found"),
    "head_attributions": ("exemplar_found",),
    "head_neuron_scores": ("neuron_found", "neuron_chosen"),
    "head_ablations": ("pair_found", "pair_consistent", "exemplar_found"),
    "head_lookups": ("attribution_found", "pair_consistent"),
    "lookup_interventions": ("lookup_found",),
    "explanations": ("pair_found", "pair_consistent", "cohort_matches"),
    "explanation_scores": ("explanation_found", "pair_matches"),
}


def references_suite(columns) -> list:
    """Each reference column all true: a parent found for every child row (NULL counts as not found)."""
    import great_expectations as gx

    out = []
    for c in columns:
        out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=c))
        out.append(gx.expectations.ExpectColumnValuesToBeInSet(column=c, value_set=[True]))
    return out


def validate_references(frame: pd.DataFrame, table: str) -> SuiteResult:
    """Run ``references_suite`` on a references query's rows; a failure's sample is the orphan rows' keys."""
    columns = REFERENCES[table]
    keys = [c for c in frame.columns if c not in columns]
    return validate(frame, f"{table} references", references_suite(columns), index_columns=keys or None)
