"""Validation with Great Expectations 1.x: ``validate`` runs a suite (a list of expectations) on a DataFrame read
back from DuckDB and reports which expectations failed, with counts and samples; ``Tolerance`` turns a
numeric check into one line that names the worst row. The suites of each table are in ``input_suites.py``, ``head_suites.py``,
``explanation_suites.py`` and ``reference_suites.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
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

    def lines(self) -> list[str]:
        """A line per failure, for the terminal: the reason itself where the suite states one (a column of
        reasons expected to be null, e.g. ``empty_split``, ``over_tolerance``), else the expectation, its count
        and a sample."""
        lines = []
        for failure in self.failures:
            sample = failure.get("sample") or []
            if failure["expectation"] == "expect_column_values_to_be_null" and sample and all(isinstance(s, str) for s in sample):
                lines.append("; ".join(sample))
            else:
                lines.append(f"{failure['expectation']} {failure['kwargs']}: {failure['unexpected_count']} unexpected, e.g. {sample}")
        return lines

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


def _plain(value):
    return value.item() if hasattr(value, "item") else value  # numpy scalars, for JSON metadata


def validate(frame: pd.DataFrame, suite_name: str, expectations: list, index_columns: list[str] | None = None) -> SuiteResult:
    """Run ``expectations`` (GX expectation objects) on ``frame``. With ``index_columns``, a failure's sample
    is the failing rows' values of those columns (e.g. a child row's keys) rather than the failing values."""
    import great_expectations as gx

    context = _gx_context()
    name = f"{suite_name}-{id(frame)}"
    source = context.data_sources.add_or_update_pandas(name)
    batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    result_format = {"result_format": "SUMMARY", "unexpected_index_column_names": list(index_columns)} if index_columns else None
    outcome = batch.validate(suite, result_format=result_format) if result_format else batch.validate(suite)
    context.data_sources.delete(name)
    failures = []
    for result in outcome.results:
        if not result.success:
            config = result.expectation_config
            kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
            rows = result.result.get("partial_unexpected_index_list") if index_columns else None
            sample = [{k: _plain(v) for k, v in row.items()} for row in rows[:5]] if rows else (result.result.get("partial_unexpected_list") or [])[:5]
            failure = {"expectation": config.type, "kwargs": kwargs, "unexpected_count": result.result.get("unexpected_count"), "sample": sample}
            info = result.exception_info if isinstance(result.exception_info, dict) else {}  # keyed by metric when one failed (a missing column)
            error = info.get("exception_message") or next(
                (v["exception_message"] for v in info.values() if isinstance(v, dict) and v.get("exception_message")), None
            )
            if error:
                failure["error"] = error
            failures.append(failure)
    return SuiteResult(suite_name, bool(outcome.success), len(frame), failures, len(outcome.results))


def merge(suite_name: str, *outcomes: SuiteResult, rows: int | None = None) -> SuiteResult:
    """Several suites' outcomes as one (one asset check): it passes when all pass; each failure says which suite
    it came from. ``rows`` defaults to the first outcome's."""
    return SuiteResult(
        suite_name,
        all(o.success for o in outcomes),
        outcomes[0].rows if rows is None and outcomes else (rows or 0),
        [{"suite": o.suite, **f} for o in outcomes for f in o.failures],
        sum(o.evaluated for o in outcomes),
    )


def keys_expected(columns: list[str]) -> list:
    import great_expectations as gx

    unique = (
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=columns)
        if len(columns) > 1
        else gx.expectations.ExpectColumnValuesToBeUnique(column=columns[0])
    )
    out = [unique]
    out += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    return out


def finite(columns: list[str]) -> list:
    import great_expectations as gx

    out = []
    for c in columns:
        out.append(gx.expectations.ExpectColumnValuesToNotBeNull(column=c))
        out.append(gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=-FINITE, max_value=FINITE))
    return out


@dataclass(frozen=True)
class Tolerance:
    """A numeric check of one column against a tolerance, whose failure is one line: how many rows fail, the
    worst one named, and what it means (docs/quality.md, "Tolerances")."""

    column: str  # the relative error checked
    setting: str  # the setting that holds the tolerance, e.g. 'head_lookups.identity_tolerance'
    failing: str  # what a failing row does, e.g. "miss the neuron's pre-activation"
    scale: str  # what the error is relative to
    advice: str  # what it means and what to do

    def reasons(self, frame: pd.DataFrame, tolerance: float, names: str, name_row) -> pd.DataFrame:
        """One row whose ``over_tolerance`` is null when every row of ``frame`` is within ``tolerance`` (NaN
        fails), else the line. ``names``: what a row of ``frame`` is; ``name_row(row)`` names one."""
        values = frame[self.column].to_numpy(float) if len(frame) else np.zeros(0)
        bad = ~(values <= tolerance)
        reason = None
        if bad.any():
            worst = frame.iloc[int(np.nanargmax(np.where(np.isnan(values), np.inf, values)))]
            absolute = self.column.replace("_rel_", "_abs_")
            size = f"{worst[self.column]:.2g}" + (f" ({worst[absolute]:.2g} absolute)" if absolute in frame else "")
            reason = (
                f"{int(bad.sum()):,} of {len(frame):,} {names} {self.failing} by more than {self.setting} ({tolerance:g}) of {self.scale}; "
                f"worst: {name_row(worst)}, {size}. {self.advice}"
            )
        return pd.DataFrame({"over_tolerance": pd.Series([reason], dtype=object)})

    def suite(self) -> list:
        import great_expectations as gx

        return [gx.expectations.ExpectColumnValuesToBeNull(column="over_tolerance")]


def row_count(rows: int | None) -> list:
    import great_expectations as gx

    return [] if rows is None else [gx.expectations.ExpectTableRowCountToEqual(value=rows)]  # an empty frame passes every other


def p_values(columns: list[str]) -> list:
    import great_expectations as gx

    return [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=0.0, max_value=1.0) for c in columns]


def bounded(columns: list[str]) -> list:
    """No ±inf; NULL (NaN once read back) allowed: a statistic that is undefined, or a test not run."""
    import great_expectations as gx

    return [gx.expectations.ExpectColumnValuesToBeBetween(column=c, min_value=-FINITE, max_value=FINITE) for c in columns]


def present_where(frame: pd.DataFrame, when: pd.Series, columns: list[str]) -> pd.Series:
    """Per row: where ``when`` holds, every one of ``columns`` is present (not NULL or NaN)."""
    return ~when | frame[columns].notna().all(axis=1)
