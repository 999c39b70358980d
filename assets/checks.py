"""Asset checks: Great Expectations 1.x suites from ``pipeline.quality`` run on the rows each asset wrote."""


import dagster as dg

from lookups.pipeline import quality, steps

from .core import explanation_scores, explanations, head_ablations, head_attributions, head_neuron_scores, neuron_catalog, neuron_exemplars, prompt_set
from .resources import LookupsStore

#: Share of selected neurons that must have at least one exemplar before the coverage check warns.
MIN_COVERAGE = 0.8


def _result(outcome: quality.SuiteResult, severity=dg.AssetCheckSeverity.ERROR, **extra) -> dg.AssetCheckResult:
    metadata = {"rows": outcome.rows, "expectations": outcome.evaluated, "summary": dg.MetadataValue.md(outcome.summary())}
    if outcome.failures:
        metadata["failures"] = dg.MetadataValue.json(outcome.failures)
    return dg.AssetCheckResult(passed=outcome.success, severity=severity, metadata={**metadata, **extra})


@dg.asset_check(asset=neuron_catalog, blocking=True, description="Keys unique and not null, scores finite, a selection of the expected size.")
def neurons_valid(neuron_catalog: steps.CatalogHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query("SELECT * FROM neurons WHERE model_id = ?", [neuron_catalog.model_id])
    expected = neuron_catalog.neurons_per_layer * neuron_catalog.last_layers
    return _result(quality.validate(frame, "neurons", quality.neuron_catalog_suite(expected)))


@dg.asset_check(asset=prompt_set, blocking=True, description="Document keys unique and not null, splits valid, no empty text.")
def documents_valid(prompt_set: steps.PromptSetHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query("SELECT * FROM documents WHERE prompt_set_id = ?", [prompt_set.prompt_set_id])
    return _result(quality.validate(frame, "documents", quality.documents_suite()))


@dg.asset_check(
    asset=neuron_exemplars,
    blocking=True,
    description="Keys unique and not null, activations finite, every prompt at or above the ratio, under the length limit and ending at the max-activating token.",
)
def exemplars_valid(neuron_exemplars: steps.ExemplarsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query(
        "SELECT * EXCLUDE (prompt_token_ids, prompt_text) FROM neuron_exemplars WHERE model_id = ? AND prompt_set_id = ?",
        [neuron_exemplars.model_id, neuron_exemplars.prompt_set_id],
    )
    suite = quality.exemplars_suite(neuron_exemplars.act_ratio, neuron_exemplars.max_prompt_tokens)
    return _result(quality.validate(quality.exemplar_check_frame(frame), "neuron_exemplars", suite))


@dg.asset_check(asset=neuron_exemplars, description=f"At least one exemplar for {MIN_COVERAGE:.0%} of the selected neurons (a warning otherwise).")
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


@dg.asset_check(
    asset=head_attributions,
    blocking=True,
    description="For every exemplar, the full decomposition (embeddings, every head, every earlier MLP, biases) sums to the "
    "neuron's pre-activation; keys unique, scores finite, only heads of layers 0..L.",
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
    outcome = quality.SuiteResult("attribution", identity.success and rows.success, rows.rows, identity.failures + rows.failures, identity.evaluated + rows.evaluated)
    return _result(
        outcome,
        identity_max_abs_error=float(totals["identity_abs_error"].max()) if len(totals) else 0.0,
        identity_max_rel_error=float(totals["identity_rel_error"].max()) if len(totals) else 0.0,
        tolerance=head_attributions.identity_tolerance,
        exemplars=len(totals),
    )


@dg.asset_check(asset=head_neuron_scores, blocking=True, description="Keys unique, fractions in [0, 1], one rank-1 head per neuron.")
def head_scores_valid(head_neuron_scores: steps.HeadScoresHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query(
        "SELECT * FROM head_neuron_scores WHERE model_id = ? AND prompt_set_id = ?", [head_neuron_scores.model_id, head_neuron_scores.prompt_set_id]
    )
    return _result(quality.validate(frame, "head_neuron_scores", quality.head_scores_suite()))


@dg.asset_check(asset=head_ablations, blocking=True, description="Keys unique, activations finite, probabilities in [0, 1].")
def ablations_valid(head_ablations: steps.AblationsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query(
        "SELECT * FROM head_ablations WHERE model_id = ? AND prompt_set_id = ?", [head_ablations.model_id, head_ablations.prompt_set_id]
    )
    return _result(quality.validate(frame, "head_ablations", quality.ablations_suite()))


@dg.asset_check(asset=explanations, blocking=True, description="Ids unique, statuses known, text wherever the status is ok; failed and budget-stopped calls are counted.")
def explanations_valid(explanations: steps.ExplanationsHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query(
        "SELECT * FROM explanations WHERE model_id = ? AND prompt_set_id = ? AND list_contains(?, explainer)",
        [explanations.model_id, explanations.prompt_set_id, list(explanations.explainers)],
    )
    outcome = quality.validate(quality.explanations_check_frame(frame), "explanations", quality.explanations_suite())
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    return _result(outcome, **{f"status {k}": int(v) for k, v in counts.items()})


@dg.asset_check(asset=explanation_scores, blocking=True, description="Keys unique, E and AUC in [0, 1], confusion counts equal to the usable answers, a reason for every unscored row.")
def explanation_scores_valid(explanation_scores: steps.ExplanationScoresHandle, store: LookupsStore) -> dg.AssetCheckResult:
    frame = store.store().query(
        "SELECT * FROM explanation_scores WHERE model_id = ? AND prompt_set_id = ?", [explanation_scores.model_id, explanation_scores.prompt_set_id]
    )
    outcome = quality.validate(quality.explanation_scores_check_frame(frame), "explanation_scores", quality.explanation_scores_suite())
    return _result(outcome, scored=int((frame["status"] == "scored").sum()) if len(frame) else 0)


ALL_CHECKS = [
    neurons_valid, documents_valid, exemplars_valid, exemplar_coverage, attribution_identity, head_scores_valid, ablations_valid,
    explanations_valid, explanation_scores_valid,
]
