"""The data-quality checks of what each step wrote (docs/quality.md): Great Expectations suites from the store's
``*_suites`` modules, run by ``store.quality`` on one (model, prompt set)'s rows. Each ``Check`` is named in its
step's registry row (``registry.Step.checks``); the Dagster layer makes them asset checks."""

from __future__ import annotations

from lookups.pipeline.steps.registry import Check, Outcome
from lookups.pipeline.store import explanation_suites, head_suites, input_suites, quality, reference_suites
from lookups.pipeline.store.store import Store

#: Share of selected neurons that must have at least one exemplar before the coverage check warns.
MIN_COVERAGE = 0.8


def _references(db: Store, table: str, **keys) -> quality.SuiteResult:
    """The child table's rows of this scope joined to their parents (sql/checks/references_<table>.sql), validated."""
    return reference_suites.validate_references(db.check_read(f"references_{table}", **keys), table)


def _partition(handle) -> dict:
    return {"model_id": handle.model_id, "prompt_set_id": handle.prompt_set_id}


def _models(handle, db: Store, run_id: str) -> Outcome:
    return Outcome(quality.validate(db.rows("models", model_id=handle.model_id), "models", input_suites.models_suite(rows=1)), {})


def _neurons(handle, db: Store, run_id: str) -> Outcome:
    expected = handle.neurons_per_layer * handle.last_layers
    frame = input_suites.neuron_check_frame(db.rows("neurons", model_id=handle.model_id))
    rows = quality.validate(frame, "neurons", input_suites.neuron_catalog_suite(expected))
    return Outcome(quality.merge("neurons", rows, _references(db, "neurons", model_id=handle.model_id)), {})


def _documents(handle, db: Store, run_id: str) -> Outcome:
    keys = {"prompt_set_id": handle.prompt_set_id}
    return Outcome(quality.merge(
        "documents",
        quality.validate(db.rows("documents", **keys), "documents", input_suites.documents_suite()),
        quality.validate(input_suites.prompt_sets_check_frame(db.rows("prompt_sets", **keys)), "prompt_sets", input_suites.prompt_sets_suite(rows=1)),
        quality.validate(db.rows("corpus_reads", **keys), "corpus_reads", input_suites.corpus_reads_suite()),
        _references(db, "documents", **keys),
    ), {})


def _exemplars(handle, db: Store, run_id: str) -> Outcome:
    frame = db.check_read("exemplars_without_prompts", **_partition(handle))
    suite = input_suites.exemplars_suite(handle.act_ratio, handle.max_prompt_tokens)
    rows = quality.validate(input_suites.exemplar_check_frame(frame), "neuron_exemplars", suite)
    return Outcome(quality.merge("neuron_exemplars", rows, _references(db, "neuron_exemplars", **_partition(handle))), {})


def _coverage(handle, db: Store, run_id: str) -> Outcome:
    frame = db.check_read("exemplar_coverage", **_partition(handle))
    without = int((frame["n_exemplars"] == 0).sum())
    outcome = quality.validate(frame, "exemplar_coverage", input_suites.coverage_suite(MIN_COVERAGE))
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
    identity = quality.validate(totals, "exemplar_decompositions", head_suites.attribution_identity_suite())
    within = _within(head_suites.ATTRIBUTION_IDENTITY, totals, handle.identity_tolerance, "exemplars", _exemplar_name)
    rows = quality.validate(heads, "head_attributions", head_suites.head_attributions_suite())
    references = _references(db, "head_attributions", **_partition(handle))
    return Outcome(quality.merge("attribution", identity, within, rows, references, rows=rows.rows), {
        **_worst(totals, "identity_rel_error", _exemplar_name), "tolerance": handle.identity_tolerance, "exemplars": len(totals),
    })


def _head_scores(handle, db: Store, run_id: str) -> Outcome:
    rows = quality.validate(db.rows("head_neuron_scores", **_partition(handle)), "head_neuron_scores", head_suites.head_scores_suite())
    return Outcome(quality.merge("head_neuron_scores", rows, _references(db, "head_neuron_scores", **_partition(handle))), {})


def _ablations(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    return Outcome(quality.merge(
        "head_ablations",
        quality.validate(db.rows("head_ablations", **keys), "head_ablations", head_suites.ablations_suite()),
        quality.validate(head_suites.ablation_tests_check_frame(db.rows("ablation_tests", **keys)), "ablation_tests", head_suites.ablation_tests_suite()),
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
        quality.validate(frame, "head_lookups", head_suites.lookups_suite()),
        _within(head_suites.LOOKUP_IDENTITY, per_prompt, handle.identity_tolerance, names, _pair_prompt_name),
        _within(head_suites.LOOKUP_AGREEMENT, per_prompt, handle.attribution_tolerance, names, _pair_prompt_name),
        _references(db, "head_lookups", **keys),
    )
    return Outcome(outcome, {
        **_worst(per_prompt, "identity_rel_error", _pair_prompt_name), **_worst(per_prompt, "attribution_rel_error", _pair_prompt_name),
        "identity_tolerance": handle.identity_tolerance, "attribution_tolerance": handle.attribution_tolerance,
    })


def _rows_and_tests(table: str, suite, tests_table: str, tests_suite):
    """The check of a step that writes rows and per-pair tests (the substitution test, the knockout): both against
    their suites, and the rows' references."""

    def evaluate(handle, db: Store, run_id: str) -> Outcome:
        keys = _partition(handle)
        return Outcome(quality.merge(
            table,
            quality.validate(db.rows(table, **keys), table, suite()),
            quality.validate(db.rows(tests_table, **keys), tests_table, tests_suite()),
            _references(db, table, **keys),
        ), {})

    return evaluate


_knockouts = _rows_and_tests("lookup_knockouts", head_suites.knockouts_suite, "knockout_tests", head_suites.knockout_tests_suite)
_interventions = _rows_and_tests("lookup_interventions", head_suites.interventions_suite, "lookup_tests", head_suites.lookup_tests_suite)


def _edge_name(row) -> str:
    return f"{_pair_prompt_name(row)}, position {row['position']}"


def _qk(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    frame = db.rows("qk_attributions", **keys)
    # The errors are per edge, repeated on each of its rows.
    per_edge = frame.drop_duplicates(["layer", "neuron", "head_layer", "head", "doc_id", "position"]) if len(frame) else frame
    outcome = quality.merge(
        "qk_attributions",
        quality.validate(frame, "qk_attributions", head_suites.qk_suite()),
        _within(head_suites.QK_IDENTITY, per_edge, handle.identity_tolerance, "edges (a pair's look-up on a prompt)", _edge_name),
        _references(db, "qk_attributions", **keys),
    )
    return Outcome(outcome, {**_worst(per_edge, "identity_rel_error", _edge_name), "identity_tolerance": handle.identity_tolerance})


def _explanations(handle, db: Store, run_id: str) -> Outcome:
    keys = {**_partition(handle), "explainers": list(handle.explainers)}
    frame = db.read("explanations_by", **keys)
    calls = db.check_read("llm_calls_of_run", run_id=run_id)
    outcome = quality.merge(
        "explanations",
        quality.validate(explanation_suites.explanations_check_frame(frame), "explanations", explanation_suites.explanations_suite()),
        _references(db, "explanations", **keys),
        quality.validate(calls, "llm_calls", explanation_suites.llm_calls_suite()),
    )
    counts = frame["status"].value_counts().to_dict() if len(frame) else {}
    return Outcome(outcome, {f"status {k}": int(v) for k, v in counts.items()})


def _explanation_scores(handle, db: Store, run_id: str) -> Outcome:
    keys = _partition(handle)
    frame = db.rows("explanation_scores", **keys)
    tests = db.rows("explanation_tests", **keys)
    outcome = quality.merge(
        "explanation_scores",
        quality.validate(explanation_suites.explanation_scores_check_frame(frame), "explanation_scores", explanation_suites.explanation_scores_suite()),
        quality.validate(explanation_suites.explanation_tests_check_frame(tests), "explanation_tests", explanation_suites.explanation_tests_suite()),
        _references(db, "explanation_scores", **keys),
    )
    return Outcome(outcome, {"scored": int((frame["status"] == "scored").sum()) if len(frame) else 0})


MODELS_VALID = Check(
    "models_valid", "The model's row recorded: id unique and not null, architecture facts positive, MLP kind known.",
    _models,
)
NEURONS_VALID = Check(
    "neurons_valid", "Keys unique and not null, scores and moments finite, a selection of the expected size, roles known "
    "and agreeing with the skew's sign, moments possible (Pearson's inequality); every neuron of a recorded model.",
    _neurons,
)
DOCUMENTS_VALID = Check(
    "documents_valid", "Document keys unique and not null, splits valid, no empty text, every document of a recorded prompt "
    "set; the prompt set's counts non-negative, its splits adding up to its documents, neither split empty (the failure says why and "
    "what to change); each corpus that built it recorded with non-negative counts.",
    _documents,
)
EXEMPLARS_VALID = Check(
    "exemplars_valid", "Keys unique and not null, activations finite, every prompt at or above the ratio, under the "
    "length limit and ending at the max-activating token; every exemplar of a selected or random-baseline neuron and of a document of "
    "the prompt set.",
    _exemplars,
)
EXEMPLAR_COVERAGE = Check(
    "exemplar_coverage", f"At least one exemplar for {MIN_COVERAGE:.0%} of the selected neurons (a warning otherwise).",
    _coverage, blocking=False,
)
ATTRIBUTION_IDENTITY = Check(
    "attribution_identity",
    "For every exemplar, the full decomposition (embeddings, every head, every earlier MLP, biases) sums to the neuron's "
    "pre-activation within the tolerance of its rounding scale; keys unique, scores finite, only heads of layers 0..L, every "
    "attribution of a recorded exemplar.",
    _attribution_identity,
)
HEAD_SCORES_VALID = Check(
    "head_scores_valid", "Keys unique, fractions in [0, 1], one rank-1 head per neuron; every score of a selected "
    "or random-baseline neuron.",
    _head_scores,
)
ABLATIONS_VALID = Check(
    "ablations_valid", "Keys unique, activations finite, probabilities in [0, 1]; every ablation of a consistent pair on "
    "one of its neuron's exemplars; KS statistics and p-values in [0, 1].",
    _ablations,
)
LOOKUPS_IDENTITY = Check(
    "lookups_identity",
    "For every pair on every prompt, the per-position terms (attention x value through W_O, the norms and the neuron's input) "
    "sum to the head's output from the same pass, which agrees with its stored attribution; keys unique, attention in [0, 1], "
    "every row of a stored attribution of a consistent pair.",
    _lookups,
)
INTERVENTIONS_VALID = Check(
    "interventions_valid", "Keys unique, sites known, activations finite, probabilities in [0, 1]; every "
    "replaced position a stored look-up; the tests' p- and q-values in [0, 1].",
    _interventions,
)
KNOCKOUTS_VALID = Check(
    "knockouts_valid", "Keys unique, windows and sites known, activations finite, weights and probabilities in [0, 1]; every "
    "blocked position of a truncated prompt a stored look-up position, every untruncated window's pair knocked out on its truncated prompt; "
    "the tests' p- and q-values in [0, 1].",
    _knockouts,
)
QK_IDENTITY = Check(
    "qk_identity",
    "For every looked-up edge, the (query component, key component) terms sum to the head's pre-softmax score formed from the same "
    "pass's query and key, within the tolerance relative to |q| |k| x scaling; keys unique, sides known, weights in [0, 1], every edge "
    "a stored look-up position.",
    _qk,
)
EXPLANATIONS_VALID = Check(
    "explanations_valid", "Ids unique, statuses known, text wherever the status is ok, every explanation of a consistent "
    "pair of its cohort; the run's LLM calls keyed, statuses known, tokens non-negative; failed and budget-stopped calls are counted.",
    _explanations,
)
EXPLANATION_SCORES_VALID = Check(
    "explanation_scores_valid", "Keys unique, E and AUC in [0, 1], confusion counts equal to the usable answers, a "
    "reason for every unscored row, every score of a recorded explanation and its pair; the tests' p-values in [0, 1], statistics finite.",
    _explanation_scores,
)
