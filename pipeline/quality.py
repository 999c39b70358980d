"""Data-quality suites (Great Expectations 1.x) for each table; the Dagster asset checks call these.

A suite is a list of expectations built from the run's settings; ``validate`` runs it on a DataFrame read
back from DuckDB and reports which expectations failed, with counts and samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no network calls from the data-quality layer

FINITE = 1e30  # GX has no "is finite"; a bound this large rejects ±inf, and not-null rejects NaN


@dataclass
class SuiteResult:
    suite: str
    success: bool
    rows: int
    failures: list[dict] = field(default_factory=list)
    evaluated: int = 0

    def summary(self) -> str:
        if self.success:
            return f"{self.suite}: {self.evaluated} expectations passed on {self.rows} rows"
        lines = [f"{self.suite}: {len(self.failures)} of {self.evaluated} expectations failed on {self.rows} rows"]
        lines += [f"- {f['expectation']} {f['kwargs']}: {f['unexpected_count']} unexpected, e.g. {f['sample']}" for f in self.failures]
        return "\n".join(lines)


_context = None


def _gx_context():
    global _context
    if _context is None:
        import great_expectations as gx

        _context = gx.get_context(mode="ephemeral")
        try:
            from great_expectations.data_context.types.base import ProgressBarsConfig

            _context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        except Exception:  # cosmetic only
            pass
    return _context


def validate(frame: pd.DataFrame, suite_name: str, expectations: list) -> SuiteResult:
    """Run ``expectations`` (GX expectation objects) on ``frame``."""
    import great_expectations as gx

    context = _gx_context()
    name = f"{suite_name}-{id(frame)}"
    source = context.data_sources.add_or_update_pandas(name)
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    outcome = batch.validate(suite)
    context.data_sources.delete(name)
    failures = []
    for result in outcome.results:
        if not result.success:
            config = result.expectation_config
            kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
            failures.append(
                {
                    "expectation": config.type,
                    "kwargs": kwargs,
                    "unexpected_count": result.result.get("unexpected_count"),
                    "sample": (result.result.get("partial_unexpected_list") or [])[:5],
                }
            )
    return SuiteResult(suite_name, bool(outcome.success), len(frame), failures, len(outcome.results))


def _keys(columns: list[str]) -> list:
    import great_expectations as gx

    unique = gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=columns) if len(columns) > 1 else gx.expectations.ExpectColumnValuesToBeUnique(column=columns[0])
    out = [unique]
    out += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    return out


def _finite(columns: list[str]) -> list:
    import great_expectations as gx

    out = []
    for c in columns:
        out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=c))
        out.append(gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=-FINITE, max_value=FINITE))
    return out


def neuron_catalog_suite(n_selected_expected: int) -> list:
    import great_expectations as gx

    return (
        _keys(["model_id", "layer", "neuron"])
        + _finite(["score", "zscore", "vocab_mean", "vocab_std"])
        + [gx.expectations.ExpectColumnSumToBeBetween(column="selected", min_value=1, max_value=n_selected_expected)]
    )


def documents_suite() -> list:
    import great_expectations as gx

    return _keys(["prompt_set_id", "doc_id"]) + [
        gx.expectations.ExpectColumnValuesToBeInSet(column="split", value_set=["explain", "heldout"]),
        gx.expectations.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
    ]


def exemplars_suite(act_ratio: float, max_prompt_tokens: int) -> list:
    """Keys unique and not null, activations finite, every kept prompt at or above the ratio and under the
    length limit, and its last token the document's max-activating token."""
    import great_expectations as gx

    return (
        _keys(["model_id", "prompt_set_id", "layer", "neuron", "doc_id"])
        + _finite(["doc_max_act", "prompt_act", "act_ratio"])
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


def attribution_identity_suite(tolerance: float) -> list:
    """Per exemplar (``exemplar_decompositions``): keys unique, values finite, and the full decomposition
    (embeddings, every head, every earlier MLP, biases) summing to the pre-activation within ``tolerance``
    relative to the sum of its terms' magnitudes."""
    import great_expectations as gx

    return (
        _keys(["model_id", "prompt_set_id", "layer", "neuron", "doc_id"])
        + _finite(["pre_in", "sum_in", "act", "identity_abs_error"])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column="identity_rel_error", min_value=0.0, max_value=tolerance)]
    )


def head_attributions_suite() -> list:
    """Per (exemplar, head): keys unique, scores finite, and only heads of layers 0..L attributed to a layer-L neuron."""
    import great_expectations as gx

    return (
        _keys(["model_id", "prompt_set_id", "layer", "neuron", "doc_id", "head_layer", "head"])
        + _finite(["in_contribution", "score"])
        + [gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(column_A="layer", column_B="head_layer", or_equal=True)]
    )


def head_scores_suite() -> list:
    """Per (neuron, head): keys unique, fractions in [0, 1], ranks from 1, exactly one rank-1 head per neuron."""
    import great_expectations as gx

    return (
        _keys(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head"])
        + _finite(["mean_score", "std_score"])
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
        _keys(["model_id", "prompt_set_id", "layer", "neuron", "head_layer", "head", "doc_id"])
        + _finite(["clean_act", "ablated_act", "act_drop"])
        + [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0) for c in ("clean_prob", "ablated_prob")]
    )


def explanations_suite() -> list:
    """Per explanation: id unique, statuses known, an explanation text wherever the status is ok."""
    import great_expectations as gx

    from .explainers import STATUSES

    return _keys(["explanation_id"]) + [
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

    return _keys(["explanation_id", "scorer", "split", "baseline"]) + [
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
