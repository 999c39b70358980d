"""Asset checks: Great Expectations 1.x suites from ``pipeline.quality`` run on the rows each asset wrote."""


import dagster as dg

from lookups.pipeline import quality, steps

from .core import explanation_scores, explanations, head_ablations, head_attributions, head_neuron_scores, model, neuron_catalog, neuron_exemplars, prompt_set
from .automation import CHECK_WITH_ITS_ASSET, lookups_partitions
from .resources import LookupsStore


def lookups_check(**kwargs):
    """A check of one (model, prompt_set) partition of its asset, run right after that partition is written
    (also when the automation requests the asset: the assets after it wait for the blocking checks)."""
    return dg.asset_check(partitions_def=lookups_partitions, automation_condition=CHECK_WITH_ITS_ASSET, **kwargs)

#: Share of selected neurons that must have at least one exemplar before the coverage check warns.
MIN_COVERAGE = 0.8


def _result(outcome: quality.SuiteResult, severity=dg.AssetCheckSeverity.ERROR, **extra) -> dg.AssetCheckResult:
    metadata = {"rows": outcome.rows, "expectations": outcome.evaluated, "summary": dg.MetadataValue.md(outcome.summary())}
    if outcome.failures:
        metadata["failures"] = dg.MetadataValue.json(outcome.failures)
    return dg.AssetCheckResult(passed=outcome.success, severity=severity, metadata={**metadata, **extra})


def _rows(db, table: str, keys: dict):
    """The rows of ``table`` this (model, prompt set) partition wrote."""
    return db.query(f"SELECT * FROM {table} WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id", keys)


def _references(db, table: str, **keys) -> quality.SuiteResult:
    """The child table's rows of this scope joined to their parents (sql/checks/references_<table>.sql), validated."""
    sql, params = quality.references_query(table, **keys)
    return quality.validate_references(db.query(sql, params), table)


@lookups_check(asset=model, blocking=True, description="The model's row recorded: id unique and not null, architecture facts positive, MLP kind known.")
def models_valid(model: steps.ModelHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query("SELECT * FROM models WHERE model_id = ?", [model.model_id])
    return _result(quality.validate(frame, "models", quality.models_suite(rows=1)))


@lookups_check(asset=neuron_catalog, blocking=True, description="Keys unique and not null, scores finite, a selection of the expected size; every neuron of a recorded model.")
def neurons_valid(neuron_catalog: steps.CatalogHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    frame = db.query("SELECT * FROM neurons WHERE model_id = ?", [neuron_catalog.model_id])
    expected = neuron_catalog.neurons_per_layer * neuron_catalog.last_layers
    rows = quality.validate(frame, "neurons", quality.neuron_catalog_suite(expected))
    return _result(quality.merge("neurons", rows, _references(db, "neurons", model_id=neuron_catalog.model_id)))


@lookups_check(
    asset=prompt_set,
    blocking=True,
    description="Document keys unique and not null, splits valid, no empty text, every document of a recorded prompt set; "
    "the prompt set's counts non-negative, its splits adding up to its documents.",
)
def documents_valid(prompt_set: steps.PromptSetHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    frame = db.query("SELECT * FROM documents WHERE prompt_set_id = ?", [prompt_set.prompt_set_id])
    sets = db.query("SELECT * FROM prompt_sets WHERE prompt_set_id = ?", [prompt_set.prompt_set_id])
    outcome = quality.merge(
        "documents",
        quality.validate(frame, "documents", quality.documents_suite()),
        quality.validate(quality.prompt_sets_check_frame(sets), "prompt_sets", quality.prompt_sets_suite(rows=1)),
        _references(db, "documents", prompt_set_id=prompt_set.prompt_set_id),
    )
    return _result(outcome)


@lookups_check(
    asset=neuron_exemplars,
    blocking=True,
    description="Keys unique and not null, activations finite, every prompt at or above the ratio, under the length limit and ending at the "
    "max-activating token; every exemplar of a selected or random-baseline neuron and of a document of the prompt set.",
)
def exemplars_valid(neuron_exemplars: steps.ExemplarsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    frame = db.query(
        "SELECT * EXCLUDE (prompt_token_ids, prompt_text) FROM neuron_exemplars WHERE model_id = ? AND prompt_set_id = ?",
        [neuron_exemplars.model_id, neuron_exemplars.prompt_set_id],
    )
    suite = quality.exemplars_suite(neuron_exemplars.act_ratio, neuron_exemplars.max_prompt_tokens)
    rows = quality.validate(quality.exemplar_check_frame(frame), "neuron_exemplars", suite)
    references = _references(db, "neuron_exemplars", model_id=neuron_exemplars.model_id, prompt_set_id=neuron_exemplars.prompt_set_id)
    return _result(quality.merge("neuron_exemplars", rows, references))


@lookups_check(asset=neuron_exemplars, description=f"At least one exemplar for {MIN_COVERAGE:.0%} of the selected neurons (a warning otherwise).")
def exemplar_coverage(neuron_exemplars: steps.ExemplarsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query(
        "SELECT n.layer, n.neuron, count(e.doc_id) AS n_exemplars FROM neurons n "
        "LEFT JOIN neuron_exemplars e ON e.model_id = n.model_id AND e.layer = n.layer AND e.neuron = n.neuron AND e.prompt_set_id = ? "
        "WHERE n.model_id = ? AND n.selected GROUP BY n.layer, n.neuron",
        [neuron_exemplars.prompt_set_id, neuron_exemplars.model_id],
    )
    outcome = quality.validate(frame, "exemplar_coverage", quality.coverage_suite(MIN_COVERAGE))
    without = int((frame["n_exemplars"] == 0).sum())
    return _result(outcome, dg.AssetCheckSeverity.WARN, neurons_without_exemplars=without, selected_neurons=len(frame))


@lookups_check(
    asset=head_attributions,
    blocking=True,
    description="For every exemplar, the full decomposition (embeddings, every head, every earlier MLP, biases) sums to the "
    "neuron's pre-activation; keys unique, scores finite, only heads of layers 0..L, every attribution of a recorded exemplar.",
)
def attribution_identity(head_attributions: steps.AttributionsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    keys = [head_attributions.model_id, head_attributions.prompt_set_id]
    totals = db.query("SELECT * FROM exemplar_decompositions WHERE model_id = ? AND prompt_set_id = ?", keys)
    heads = db.query(
        "SELECT model_id, prompt_set_id, layer, neuron, doc_id, head_layer, head, in_contribution, score FROM head_attributions "
        "WHERE model_id = ? AND prompt_set_id = ?",
        keys,
    )
    identity = quality.validate(totals, "exemplar_decompositions", quality.attribution_identity_suite(head_attributions.identity_tolerance))
    rows = quality.validate(heads, "head_attributions", quality.head_attributions_suite())
    references = _references(db, "head_attributions", model_id=head_attributions.model_id, prompt_set_id=head_attributions.prompt_set_id)
    outcome = quality.merge("attribution", identity, rows, references, rows=rows.rows)
    return _result(
        outcome,
        identity_max_abs_error=float(totals["identity_abs_error"].max()) if len(totals) else 0.0,
        identity_max_rel_error=float(totals["identity_rel_error"].max()) if len(totals) else 0.0,
        tolerance=head_attributions.identity_tolerance,
        exemplars=len(totals),
    )


@lookups_check(
    asset=head_neuron_scores,
    blocking=True,
    description="Keys unique, fractions in [0, 1], one rank-1 head per neuron; every score of a selected or random-baseline neuron.",
)
def head_scores_valid(head_neuron_scores: steps.HeadScoresHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    keys = {"model_id": head_neuron_scores.model_id, "prompt_set_id": head_neuron_scores.prompt_set_id}
    frame = _rows(db, "head_neuron_scores", keys)
    rows = quality.validate(frame, "head_neuron_scores", quality.head_scores_suite())
    return _result(quality.merge("head_neuron_scores", rows, _references(db, "head_neuron_scores", **keys)))


@lookups_check(
    asset=head_ablations,
    blocking=True,
    description="Keys unique, activations finite, probabilities in [0, 1]; every ablation of a consistent pair on one of its neuron's "
    "exemplars; KS statistics and p-values in [0, 1].",
)
def ablations_valid(head_ablations: steps.AblationsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    keys = {"model_id": head_ablations.model_id, "prompt_set_id": head_ablations.prompt_set_id}
    frame = _rows(db, "head_ablations", keys)
    tests = _rows(db, "ablation_tests", keys)
    outcome = quality.merge(
        "head_ablations",
        quality.validate(frame, "head_ablations", quality.ablations_suite()),
        quality.validate(quality.ablation_tests_check_frame(tests), "ablation_tests", quality.ablation_tests_suite()),
        _references(db, "head_ablations", **keys),
    )
    return _result(outcome)


@lookups_check(
    asset=explanations,
    blocking=True,
    description="Ids unique, statuses known, text wherever the status is ok, every explanation of a consistent pair of its cohort; "
    "the run's LLM calls keyed, statuses known, tokens non-negative; failed and budget-stopped calls are counted.",
)
def explanations_valid(context: dg.AssetCheckExecutionContext, explanations: steps.ExplanationsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    keys = {"model_id": explanations.model_id, "prompt_set_id": explanations.prompt_set_id, "explainers": list(explanations.explainers)}
    frame = db.query(
        "SELECT * FROM explanations WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND list_contains($explainers, explainer)", keys
    )
    calls = db.query(*quality.check_query("llm_calls_of_run", run_id=context.run.run_id))
    outcome = quality.merge(
        "explanations",
        quality.validate(quality.explanations_check_frame(frame), "explanations", quality.explanations_suite()),
        _references(db, "explanations", **keys),
        quality.validate(calls, "llm_calls", quality.llm_calls_suite()),
    )
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    return _result(outcome, **{f"status {k}": int(v) for k, v in counts.items()})


@lookups_check(
    asset=explanation_scores,
    blocking=True,
    description="Keys unique, E and AUC in [0, 1], confusion counts equal to the usable answers, a reason for every unscored row, every "
    "score of a recorded explanation and its pair; the tests' p-values in [0, 1], statistics finite.",
)
def explanation_scores_valid(explanation_scores: steps.ExplanationScoresHandle, store: LookupsStore) -> dg.AssetCheckResult:
    db = store.store()
    keys = {"model_id": explanation_scores.model_id, "prompt_set_id": explanation_scores.prompt_set_id}
    frame = _rows(db, "explanation_scores", keys)
    tests = _rows(db, "explanation_tests", keys)
    outcome = quality.merge(
        "explanation_scores",
        quality.validate(quality.explanation_scores_check_frame(frame), "explanation_scores", quality.explanation_scores_suite()),
        quality.validate(quality.explanation_tests_check_frame(tests), "explanation_tests", quality.explanation_tests_suite()),
        _references(db, "explanation_scores", **keys),
    )
    return _result(outcome, scored=int((frame["status"] == "scored").sum()) if len(frame) else 0)


ALL_CHECKS = [
    models_valid, neurons_valid, documents_valid, exemplars_valid, exemplar_coverage, attribution_identity, head_scores_valid, ablations_valid,
    explanations_valid, explanation_scores_valid,
]
