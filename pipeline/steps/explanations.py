"""The LLM steps: explain each chosen consistent pair (the primary backend and the no-LLM references),
then score every explanation on held-out prompts, by each scorer, against the random-neuron and shuffled baselines."""

from __future__ import annotations

import pandas as pd

from lookups.pipeline.common import files
from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import LLM_BASE_URL_ENV, LLM_MODEL_ENV, ExplanationSettings, ScoringSettings, result_settings
from lookups.pipeline.llm import ExplainerError
from lookups.pipeline.llm.backends import make_llm_backend
from lookups.pipeline.llm.explain import CONTRASTIVE, LOOKUP, REFERENCES, explain_pairs
from lookups.pipeline.llm.ledger import CallLedger, new_run_id
from lookups.pipeline.llm.pairs import PAIR_KEYS, Pair, build_pairs, choose_pairs, pair_ids
from lookups.pipeline.llm.score import Judge, score_explanations
from lookups.pipeline.llm.significance import explanation_tests
from lookups.pipeline.llm.templates import load_template
from lookups.pipeline.report import figures
from lookups.pipeline.steps import checks
from lookups.pipeline.steps.base import (
    Computed,
    ExplanationScoresHandle,
    ExplanationsHandle,
    HeadScoresHandle,
    LookupsHandle,
    ModelHandle,
    StepResult,
    Yield,
    figure_path,
    run_step,
)
from lookups.pipeline.steps.registry import Preview, Step, register
from lookups.pipeline.store.store import Store


def _pairs_with_prompts(store: Store, keys: dict, chosen: pd.DataFrame, with_lookups: bool = False) -> list[Pair]:
    """The chosen pairs (cohort, layer, neuron, head_layer, head, token) with their prompts of both splits and,
    ``with_lookups``, what their heads read on them."""
    if not len(chosen):
        return []
    ids = pair_ids(chosen)
    lookups = store.read("pair_lookup_prompts", **keys, pairs=ids) if with_lookups else None
    return build_pairs(chosen, store.read("pair_prompts", **keys, pairs=ids), lookups)


def _status_counts(frame: pd.DataFrame, column: str = "status") -> dict:
    return {f"{column}_{k}": int(v) for k, v in frame[column].value_counts().items()} if len(frame) else {}


def run_explanations(
    model: ModelHandle, head_neuron_scores: HeadScoresHandle, settings: ExplanationSettings, store: Store, run_id: str | None = None,
    progress: Progress | None = None, head_lookups: LookupsHandle | None = None,
) -> StepResult:
    """Explain each chosen consistent pair with the no-LLM references and the primary LLM backend. With
    ``head_lookups`` (the pairs' look-ups), the lookup reference runs and templates can mark what each head reads.
    A run stopped by its LLM budget says so (``StepResult.warning``) and is redone next time."""
    scores, looked_up = head_neuron_scores, head_lookups
    keys = scores.keys
    template = load_template(settings.explain_template)
    classify_template = load_template(settings.classify_template)  # fail early on a bad name
    backend = make_llm_backend(settings, model.device)
    names = (CONTRASTIVE,) + ((LOOKUP,) if looked_up else ()) + ((backend.explainer,) if backend else ())

    def compute() -> Computed:
        chosen = choose_pairs(store.read("consistent_pairs_with_tokens", **keys), settings)
        pairs = _pairs_with_prompts(store, keys, chosen, with_lookups=looked_up is not None)
        ledger = CallLedger(store, run_id or new_run_id(), settings.max_calls, settings.max_tokens)
        frame = explain_pairs(pairs, model.model_id, scores.prompt_set_id, settings, template, backend, ledger, progress)
        stats = {
            "pairs": len(pairs),
            "next_token_pairs": sum(p.cohort == "next_token" for p in pairs),
            "random_pairs": sum(p.cohort == "random" for p in pairs),
            "explainers": list(names),
            "llm_calls": ledger.new_calls,
            "cache_hits": int(frame["cached"].sum()),
            "tokens": int(frame["prompt_tokens"].sum() + frame["completion_tokens"].sum()),
            "budget_reached": ledger.budget_hit,
            "template": template.version,
            "classify_template": classify_template.version,
            **_status_counts(frame[~frame["explainer"].isin(REFERENCES)]),
        }
        frame = frame[frame["explainer"].isin(names)]
        writes = [("explanations", {**keys, "explainer": name}, frame[frame["explainer"] == name]) for name in names]
        # A run with failed or budget-stopped calls is redone next time (answers so far come from the cache).
        complete = not ledger.budget_hit and not frame["status"].isin(["error", "budget_exhausted"]).any()
        return Computed(writes, stats, complete)

    def handle(data_version: str, stats: dict) -> ExplanationsHandle:
        return ExplanationsHandle(data_version=data_version, stats=stats, **keys, settings=settings.model_dump(), explainers=names)

    fingerprint = (scores.data_version, looked_up.data_version if looked_up else None, result_settings(settings), template.version, names)
    yields = Yield("pairs", "pairs to explain", "the explanations settings", inputs_empty=scores.no_pairs)
    result = run_step(store, "explanations", scores.scope, fingerprint, compute, handle, yields=yields)
    if result.stats.get("budget_reached"):
        budget = (
            "The run's LLM budget was reached: explanations not made are marked budget_exhausted; raise max_calls/max_tokens and "
            "materialize again (answers so far are cached)."
        )
        result.warning = f"{result.warning} {budget}" if result.warning else budget
    return result


def run_explanation_scores(
    model: ModelHandle, explanations: ExplanationsHandle, settings: ScoringSettings, store: Store, run_id: str | None = None,
    progress: Progress | None = None,
) -> StepResult:
    """Score every explanation on held-out prompts (and the shuffled baseline) by each scorer; test each measure
    against the baselines; draw the score histograms."""
    explained = explanations
    keys = explained.keys
    explain_settings = ExplanationSettings(**explained.settings)
    classify, simulate = load_template(explain_settings.classify_template), load_template(explain_settings.simulate_template)
    figure = figure_path(store, model.model_id, explained.prompt_set_id, "explanation_scores")

    def compute() -> Computed:
        rows = store.read("explanations_by", **keys, explainers=list(explained.explainers))
        # The pairs the explanations step explained, as it saved them (not chosen again from its settings).
        chosen = rows[["cohort", *PAIR_KEYS, "token"]].drop_duplicates().sort_values(["cohort", *PAIR_KEYS]).reset_index(drop=True)
        pairs = {p.key: p for p in _pairs_with_prompts(store, keys, chosen)}
        backend = make_llm_backend(explain_settings, model.device) if set(explained.explainers) - set(REFERENCES) else None
        if backend is not None and backend.explainer not in explained.explainers:
            raise ExplainerError(
                f"The explanations were made by {explained.explainers[-1]} but the backend is now {backend.explainer} "
                f"(did {LLM_MODEL_ENV} or {LLM_BASE_URL_ENV} change?): materialize explanations again, or restore the setting."
            )
        ledger = CallLedger(store, run_id or new_run_id(), explain_settings.max_calls, explain_settings.max_tokens)
        judge = Judge(backend, classify, simulate, ledger, explain_settings, model.model_id, progress)
        frame = score_explanations(rows, pairs, settings, judge, _embedder(settings, progress))
        tests = explanation_tests(frame)
        png = figures.score_histograms(frame, f"{model.model_id} / {explained.prompt_set_id}")
        if png:
            files.write_atomically(figure, png)
        scored = frame[frame["status"] == "scored"]
        headline = tests[(tests["baseline"] == "random_neurons")]
        stats = {
            "scores": len(frame),
            "scored": len(scored),
            "not_scored": int((frame["status"] != "scored").sum()),
            "llm_calls": ledger.new_calls,
            "malformed_answers": int(frame["n_malformed"].sum()),
            "failed_calls": int(frame["n_errors"].sum()),
            "budget_reached": ledger.budget_hit,
            "templates": f"{classify.version}, {simulate.version}",
            "scorers": list(settings.scorers),
            **{f"{r.scorer} {r.measure}[{r.explainer}]": r.mean for r in headline.itertuples()},
            **{f"{r.scorer} {r.measure} random[{r.explainer}]": r.mean_baseline for r in headline.itertuples()},
        }
        names = list(explained.explainers)
        writes = [("explanation_scores", {**keys, "explainer": name}, frame[frame["explainer"] == name]) for name in names]
        writes += [("explanation_tests", {**keys, "explainer": name}, tests[tests["explainer"] == name]) for name in names]
        return Computed(writes, stats, complete=not ledger.budget_hit and int(frame["n_errors"].sum()) == 0)

    def handle(data_version: str, stats: dict) -> ExplanationScoresHandle:
        shown = {"score histograms": str(figure)} if figure.exists() else {}
        return ExplanationScoresHandle(data_version=data_version, stats=stats, **keys, figures=shown)

    fingerprint = (explained.data_version, result_settings(settings), classify.version, simulate.version)
    yields = Yield("scores", "explanation scores", "the neuron_exemplars settings (keep_heldout)", inputs_empty=explained.stats.get("pairs") == 0)
    return run_step(store, "explanation_scores", explained.scope, fingerprint, compute, handle, yields=yields)


def _embedder(settings: ScoringSettings, progress: Progress | None):
    """The embedding scorer's ``texts -> unit vector per text`` (the sentence encoder loaded on first use), or
    None when the scorer is off."""
    if "embedding" not in settings.scorers:
        return None

    def embed(texts: list[str]) -> dict:
        from lookups.pipeline.llm.embeddings import embedder

        if progress:
            progress("scoring: embedding", 0, len(texts), "all-MiniLM-L6-v2")
        vectors = embedder().encode(texts)
        if progress:
            progress("scoring: embedding", len(texts), len(texts), "all-MiniLM-L6-v2")
        return dict(zip(texts, vectors))

    return embed


# ---------------------------------------------------------------- registry rows


def _explanations_metadata(result: StepResult) -> dict:
    return {"explainers": ", ".join(result.handle.explainers)}


EXPLANATIONS = register(Step(
    name="explanations", run=run_explanations, settings=ExplanationSettings, inputs=("model", "head_neuron_scores", "head_lookups"),
    code_version="4",  # 2: no delimiter can be formed from corpus text or the token (templates.untrusted); 3: the lookup reference;
    # 4: answers that compare the groups are flagged 'comparison'
    template_settings=("explain_template",), tables=("explanations", "llm_calls"), checks=(checks.EXPLANATIONS_VALID,),
    kinds=frozenset({"openai", "duckdb"}), previews=(Preview("explanations", "preview_explanations", 12),), metadata=_explanations_metadata,
    description="Each neuron's strongest consistent heads explained from their active and inactive prompts (docs/method.md, step 6), for "
    "next-token neurons and the random baseline neurons: by an LLM (an OpenAI-compatible endpoint, or a local instruct model offline) "
    "and by the contrastive log-odds reference. Every LLM call is cached in `llm_calls`; a run budget stops cleanly, keeping what was done.",
))


def _scores_metadata(result: StepResult) -> dict:
    """The score histograms' path (the step's one figure), when it drew one."""
    return {"figure_path": list(result.handle.figures.values())[-1]} if result.handle.figures else {}


EXPLANATION_SCORES = register(Step(
    name="explanation_scores", run=run_explanation_scores, settings=ScoringSettings, inputs=("model", "explanations"),
    code_version="3",  # 2: bootstrap CIs of mean E, the paired test against the shuffled scores, the lookup reference; 3: three scorers
    template_settings=("classify_template", "simulate_template"), tables=("explanation_scores", "explanation_tests", "llm_calls"),
    checks=(checks.EXPLANATION_SCORES_VALID,), kinds=frozenset({"openai", "duckdb"}),
    previews=(Preview("scores against the baselines", "preview_explanation_comparison", 12),), metadata=_scores_metadata,
    description="Each explanation scored on held-out prompts given only itself (docs/method.md, \"Scoring explanations\"): detection (the "
    "LLM's Yes/No and P(Yes): E, calibrated E, AUC), embedding (no LLM: AUROC of the cosine under all-MiniLM-L6-v2) and simulation "
    "(the LLM's 0-9 rating: correlation with the head's real score); each measure against the random-neuron and shuffled-explanation "
    "baselines (difference with its bootstrap CI, permutation test), and their histograms.",
))
