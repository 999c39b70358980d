"""Asset checks, built from one table (``CHECKS``) by one factory: Great Expectations 1.x suites from
``pipeline.store.quality`` run on the rows each asset wrote (docs/quality.md)."""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from lookups.pipeline.store import quality
from lookups.pipeline.store.store import Store

from .automation import CHECK_WITH_ITS_ASSET, lookups_partitions
from .resources import LookupsStore

#: Share of selected neurons that must have at least one exemplar before the coverage check warns.
MIN_COVERAGE = 0.8


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: the merged suite result and the metadata it adds."""

    result: quality.SuiteResult
    metadata: dict


@dataclass(frozen=True)
class CheckSpec:
    """One row of the check table: ``evaluate(handle, store, run_id)`` validates what the asset wrote."""

    name: str
    asset: str
    description: str
    evaluate: Callable[[object, Store, str], Outcome]
    blocking: bool = True


def _references(db: Store, table: str, **keys) -> quality.SuiteResult:
    """The child table's rows of this scope joined to their parents (sql/checks/references_<table>.sql), validated."""
    sql, params = quality.references_query(table, **keys)
    return quality.validate_references(db.query(sql, params, require_results=False), table)


def _partition(handle) -> dict:
    return {"model_id": handle.model_id, "prompt_set_id": handle.prompt_set_id}


def _models(handle, db: Store, run_id: str) -> Outcome:
    return Outcome(quality.validate(db.rows("models", model_id=handle.model_id), "models", quality.models_suite(rows=1)), {})


def _neurons(handle, db: Store, run_id: str) -> Outcome:
    expected = handle.neurons_per_layer * handle.last_layers
    rows = quality.validate(quality.neuron_check_frame(db.rows("neurons", model_id=handle.model_id)), "neurons", quality.neuron_catalog_suite(expected))
    return Outcome(quality.merge("neurons", rows, _references(db, "neurons", model_id=handle.model_id)), {})


def _documents(handle, db: Store, run_id: str) -> Outcome:
    keys = {"prompt_set_id": handle.prompt_set_id}
    return Outcome(quality.merge(
        "documents",
        quality.validate(db.rows("documents", **keys), "documents", quality.documents_suite()),
        quality.validate(quality.prompt_sets_check_frame(db.rows("prompt_sets", **keys)), "prompt_sets", quality.prompt_sets_suite(rows=1)),
        quality.validate(db.rows("corpus_reads", **keys), "corpus_reads", quality.corpus_reads_suite()),
        _references(db, "documents", **keys),
    ), {})


def _exemplars(handle, db: Store, run_id: str) -> Outcome:
    frame = db.check_read("exemplars_without_prompts", **_partition(handle))
    suite = quality.exemplars_suite(handle.act_ratio, handle.max_prompt_tokens)
    rows = quality.validate(quality.exemplar_check_frame(frame), "neuron_exemplars", suite)
    return Outcome(quality.merge("neuron_exemplars", rows, _references(db, "neuron_exemplars", **_partition(handle))), {})


def _coverage(handle, db: Store, run_id: str) -> Outcome:
    frame = db.check_read("exemplar_coverage", **_partition(handle))
    without = int((frame["n_exemplars"] == 0).sum())
    outcome = quality.validate(frame, "exemplar_coverage", quality.coverage_suite(MIN_COVERAGE))
    return Outcome(outcome, {"neurons_without_exemplars": without, "selected_neurons": len(frame)})


def _within(tolerance: quality.Tolerance, frame, limit: float, names: str, name_row) -> quality.SuiteResult:
    reasons = tolerance.reasons(frame, limit, names, name_row)
    return quality.validate(reasons, tolerance.column, tolerance.suite())


def _worst(frame, column: str, describe) -> dict:
    """For the check's metadata: the largest relative error of ``column`` and the row it is on, the largest
    absolute one (``identity_max_rel_error``, ``identity_max_abs_error``, ``identity_worst_case``)."""
    kind = column.removesuffix("_rel_error")
    if not len(frame):
        return {f"{kind}_max_rel_error": 0.0, f"{kind}_max_abs_error": 0.0}
    worst = frame.loc[frame[column].idxmax()]
    return {
        f"{kind}_max_rel_error": float(worst[column]), f"{kind}_max_abs_error": float(frame[f"{kind}_abs_error"].max()),
        f"{kind}_worst_case": describe(worst),
    }


def _exemplar_name(row) -> str:
    return f"neuron {row['layer']}:{row['neuron']} on document {row['doc_id']}"


def _pair_prompt_name(row) -> str:
    return f"neuron {row['layer']}:{row['neuron']}, head {row['head_layer']}.{row['head']} on document {row['doc_id']}"


def _attribution_identity(handle, db: Store, run_id: str) -> Outcome:
    totals = db.rows("exemplar_decompositions", **_partition(handle))
    heads = db.check_read("head_attributions_for_check", **_partition(handle))
    identity = quality.validate(totals, "exemplar_decompositions", quality.attribution_identity_suite())
    within = _within(quality.ATTRIBUTION_IDENTITY, totals, handle.identity_tolerance, "exemplars", _exemplar_name)
    rows = quality.validate(heads, "head_attributions", quality.head_attributions_suite())
    references = _references(db, "head_attributions", **_partition(handle))
    return Outcome(quality.merge("attribution", identity, within, rows, references, rows=rows.rows), {
        **_worst(totals, "identity_rel_error", _exemplar_name), "tolerance": handle.identity_tolerance, "exemplars": len(totals),
    })


def _head_scores(handle, db: Store, run_id: str) -> Outcome:
    rows = quality.validate(db.rows("head_neuron_scores", **_partition(handle)), "head_neuron_scores", quality.head_scores_suite())
    return Outcome(quality.merge("head_neuron_scores", rows, _references(db, "head_neuron_scores", **_partition(handle))), {})


def _ablations(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    return Outcome(quality.merge(
        "head_ablations",
        quality.validate(db.rows("head_ablations", **keys), "head_ablations", quality.ablations_suite()),
        quality.validate(quality.ablation_tests_check_frame(db.rows("ablation_tests", **keys)), "ablation_tests", quality.ablation_tests_suite()),
        _references(db, "head_ablations", **keys),
    ), {})


def _lookups(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    frame = db.rows("head_lookups", **keys)
    # The errors are per (pair, prompt), repeated on each of its positions.
    per_prompt = frame.drop_duplicates(["layer", "neuron", "head_layer", "head", "doc_id"]) if len(frame) else frame
    names = "look-ups (a pair on a prompt)"
    outcome = quality.merge(
        "head_lookups",
        quality.validate(frame, "head_lookups", quality.lookups_suite()),
        _within(quality.LOOKUP_IDENTITY, per_prompt, handle.identity_tolerance, names, _pair_prompt_name),
        _within(quality.LOOKUP_AGREEMENT, per_prompt, handle.attribution_tolerance, names, _pair_prompt_name),
        _references(db, "head_lookups", **keys),
    )
    return Outcome(outcome, {
        **_worst(per_prompt, "identity_rel_error", _pair_prompt_name), **_worst(per_prompt, "attribution_rel_error", _pair_prompt_name),
        "identity_tolerance": handle.identity_tolerance, "attribution_tolerance": handle.attribution_tolerance,
    })


def _interventions(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    return Outcome(quality.merge(
        "lookup_interventions",
        quality.validate(db.rows("lookup_interventions", **keys), "lookup_interventions", quality.interventions_suite()),
        quality.validate(db.rows("lookup_tests", **keys), "lookup_tests", quality.lookup_tests_suite()),
        _references(db, "lookup_interventions", **keys),
    ), {})


def _explanations(handle, db: Store, run_id: str) -> Outcome:
    keys = {**_partition(handle), "explainers": list(handle.explainers)}
    frame = db.read("explanations_by", **keys)
    calls = db.check_read("llm_calls_of_run", run_id=run_id)
    outcome = quality.merge(
        "explanations",
        quality.validate(quality.explanations_check_frame(frame), "explanations", quality.explanations_suite()),
        _references(db, "explanations", **keys),
        quality.validate(calls, "llm_calls", quality.llm_calls_suite()),
    )
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    return Outcome(outcome, {f"status {k}": int(v) for k, v in counts.items()})


def _explanation_scores(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    frame = db.rows("explanation_scores", **keys)
    outcome = quality.merge(
        "explanation_scores",
        quality.validate(quality.explanation_scores_check_frame(frame), "explanation_scores", quality.explanation_scores_suite()),
        quality.validate(quality.explanation_tests_check_frame(db.rows("explanation_tests", **keys)), "explanation_tests", quality.explanation_tests_suite()),
        _references(db, "explanation_scores", **keys),
    )
    return Outcome(outcome, {"scored": int((frame["status"] == "scored").sum()) if len(frame) else 0})


CHECKS = [
    CheckSpec("models_valid", "model", "The model's row recorded: id unique and not null, architecture facts positive, MLP kind known.", _models),
    CheckSpec(
        "neurons_valid", "neuron_catalog", "Keys unique and not null, scores and moments finite, a selection of the expected size, roles known "
        "and agreeing with the skew's sign, moments possible (Pearson's inequality); every neuron of a recorded model.", _neurons,
    ),
    CheckSpec(
        "documents_valid", "prompt_set", "Document keys unique and not null, splits valid, no empty text, every document of a recorded prompt "
        "set; the prompt set's counts non-negative, its splits adding up to its documents, neither split empty (the failure says why and "
        "what to change); each corpus that built it recorded with non-negative counts.", _documents,
    ),
    CheckSpec(
        "exemplars_valid", "neuron_exemplars", "Keys unique and not null, activations finite, every prompt at or above the ratio, under the "
        "length limit and ending at the max-activating token; every exemplar of a selected or random-baseline neuron and of a document of "
        "the prompt set.", _exemplars,
    ),
    CheckSpec(
        "exemplar_coverage", "neuron_exemplars", f"At least one exemplar for {MIN_COVERAGE:.0%} of the selected neurons (a warning otherwise).",
        _coverage, blocking=False,
    ),
    CheckSpec(
        "attribution_identity", "head_attributions", "For every exemplar, the full decomposition (embeddings, every head, every earlier MLP, "
        "biases) sums to the neuron's pre-activation; keys unique, scores finite, only heads of layers 0..L, every attribution of a "
        "recorded exemplar.", _attribution_identity,
    ),
    CheckSpec(
        "head_scores_valid", "head_neuron_scores", "Keys unique, fractions in [0, 1], one rank-1 head per neuron; every score of a selected "
        "or random-baseline neuron.", _head_scores,
    ),
    CheckSpec(
        "ablations_valid", "head_ablations", "Keys unique, activations finite, probabilities in [0, 1]; every ablation of a consistent pair on "
        "one of its neuron's exemplars; KS statistics and p-values in [0, 1].", _ablations,
    ),
    CheckSpec(
        "lookups_identity", "head_lookups", "For every pair on every prompt, the per-position terms (attention x value through W_O, the "
        "norms and the neuron's input) sum to the head's stored attribution; keys unique, attention in [0, 1], every row of a stored "
        "attribution of a consistent pair.", _lookups,
    ),
    CheckSpec(
        "interventions_valid", "lookup_interventions", "Keys unique, sites known, activations finite, probabilities in [0, 1]; every "
        "replaced position a stored look-up; the tests' p- and q-values in [0, 1].", _interventions,
    ),
    CheckSpec(
        "explanations_valid", "explanations", "Ids unique, statuses known, text wherever the status is ok, every explanation of a consistent "
        "pair of its cohort; the run's LLM calls keyed, statuses known, tokens non-negative; failed and budget-stopped calls are counted.",
        _explanations,
    ),
    CheckSpec(
        "explanation_scores_valid", "explanation_scores", "Keys unique, E and AUC in [0, 1], confusion counts equal to the usable answers, a "
        "reason for every unscored row, every score of a recorded explanation and its pair; the tests' p-values in [0, 1], statistics finite.",
        _explanation_scores,
    ),
]


def _failure_lines(result: quality.SuiteResult) -> list[str]:
    """A line per failure: the reason itself where the suite states one (a column of reasons expected to be
    null, e.g. ``empty_split``), else the expectation, its count and a sample."""
    lines = []
    for failure in result.failures:
        sample = failure.get("sample") or []
        if failure["expectation"] == "expect_column_values_to_be_null" and sample and all(isinstance(s, str) for s in sample):
            lines.append("; ".join(sample))
        else:
            lines.append(f"{failure['expectation']} {failure['kwargs']}: {failure['unexpected_count']} unexpected, e.g. {sample}")
    return lines


def build_check(spec: CheckSpec) -> dg.AssetChecksDefinition:
    """The Dagster check of one table row: a check of one (model, prompt_set) partition of its asset, run
    right after that partition is written (also when the automation requests the asset: the assets after
    it wait for the blocking checks). A blocking check's failure is an error; the others warn."""
    severity = dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN

    def check(context: dg.AssetCheckExecutionContext, store: LookupsStore, **handle) -> dg.AssetCheckResult:
        outcome = spec.evaluate(handle[spec.asset], store.store(), context.run.run_id)
        result = outcome.result
        # The terminal shows one line per log message: one per failure, so that its reason (an empty split, and
        # which setting to change) is read there, not only in the UI.
        for line in _failure_lines(result):
            (context.log.error if spec.blocking else context.log.warning)(f"{spec.name} failed: {line}")
        metadata = {"rows": result.rows, "expectations": result.evaluated, "summary": dg.MetadataValue.md(result.summary())}
        if result.failures:
            metadata["failures"] = dg.MetadataValue.json(result.failures)
        return dg.AssetCheckResult(passed=result.success, severity=severity, metadata={**metadata, **outcome.metadata})

    # The checked asset's output is loaded as the parameter named after it.
    check.__signature__ = inspect.Signature([
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.AssetCheckExecutionContext),
        inspect.Parameter(spec.asset, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=LookupsStore),
    ])
    check.__name__ = spec.name
    return dg.asset_check(
        asset=spec.asset, name=spec.name, blocking=spec.blocking, description=spec.description, partitions_def=lookups_partitions,
        automation_condition=CHECK_WITH_ITS_ASSET,
    )(check)


ALL_CHECKS = [build_check(spec) for spec in CHECKS]
