"""The data-quality suites of the inputs' tables (docs/quality.md): the model (``models``), its neuron catalog
(``neurons``), the prompt set (``prompt_sets``, ``documents``, ``corpus_reads``) and the exemplars each neuron is
explained from (``neuron_exemplars``, with their coverage of the selected neurons); each suite's expectations and
the check frame it runs on (a column per rule)."""

from __future__ import annotations

import json

import pandas as pd

from lookups.pipeline.config import NEURON_ROLES, SPLITS
from lookups.pipeline.store.quality import finite, keys_expected, row_count


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


def documents_suite() -> list:
    import great_expectations as gx

    return keys_expected(["prompt_set_id", "doc_id"]) + [
        gx.expectations.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
    ]


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
