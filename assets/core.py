"""The software-defined assets: each a thin call into ``pipeline.steps`` plus metadata for the UI."""


import base64
from pathlib import Path

import dagster as dg
import pandas as pd

from lookups.pipeline import sources, steps
from lookups.pipeline.config import CorpusSettings, ModelSettings
from lookups.pipeline.corpora import CorpusError
from lookups.pipeline.explainers import ExplainerError
from lookups.pipeline.models import ModelError
from lookups.pipeline.progress import PhaseProgress

from .automation import LOOKUPS_AUTOMATION, corpus_files, keys_of, lookups_partitions, model_weights
from .resources import (
    AblationConfig,
    AtlasConfig,
    AttributionConfig,
    CatalogConfig,
    CorpusConfig,
    ExemplarConfig,
    ExplanationConfig,
    HeadScoreConfig,
    LookupsStore,
    ModelConfig,
    PromptSetConfig,
    ScoringConfig,
)

GROUP = "lookups"


def lookups_asset(**kwargs):
    """Every lookups asset: partitioned by (model, prompt_set), materialized by declarative automation."""
    return dg.asset(group_name=GROUP, partitions_def=lookups_partitions, automation_condition=LOOKUPS_AUTOMATION, **kwargs)


def _preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_no rows_")


def _output(result: steps.StepResult, metadata: dict) -> dg.Output:
    metadata = {
        "skipped (unchanged inputs)": result.skipped,
        "seconds": round(result.seconds, 2),
        "data_version": result.handle.data_version,
        **metadata,
    }
    return dg.Output(result.handle, data_version=dg.DataVersion(result.handle.data_version), metadata=metadata)


def _png(alt: str, path: Path) -> dg.MetadataValue:
    """A PNG file shown inline in the asset's metadata (markdown with a data URL)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


def _fail_clearly(err: Exception):
    """Known input problems become a Dagster Failure with the message alone (no traceback to read)."""
    return dg.Failure(description=str(err), allow_retries=False)


@lookups_asset(code_version=steps.CODE_VERSIONS["model"], kinds={"pytorch", "duckdb"}, deps=[model_weights])
def model(context: dg.AssetExecutionContext, config: ModelConfig, store: LookupsStore) -> dg.Output[steps.ModelHandle]:
    """The partition's model (its `model` key) as an fp32 checkpoint, fingerprinted, booted with LayerNorm
    folded; a row in `models`."""
    model_key, _ = keys_of(context)
    try:
        result = steps.run_model(ModelSettings(name=model_key, **config.model_dump()), store.store())
    except ModelError as err:
        raise _fail_clearly(err) from err
    handle = result.handle
    return _output(result, {"model_id": handle.model_id, "origin": result.stats["origin"], **{k: v for k, v in handle.facts.items()}})


@lookups_asset(code_version=steps.CODE_VERSIONS["neuron_catalog"], kinds={"pytorch", "duckdb"})
def neuron_catalog(context: dg.AssetExecutionContext, config: CatalogConfig, model: steps.ModelHandle, store: LookupsStore) -> dg.Output[steps.CatalogHandle]:
    """Every MLP neuron's next token (argmax of W_out·W_U), score, z-score and top tokens; the selected set."""
    db = store.store()
    result = steps.run_catalog(model, config, db)
    top = db.query(
        "SELECT layer, neuron, token, round(score, 3) AS score, round(zscore, 2) AS zscore FROM neurons "
        "WHERE model_id = ? AND selected ORDER BY score DESC LIMIT 10",
        [model.model_id],
    )
    return _output(
        result,
        {
            "neurons": result.stats["neurons"],
            "selected": result.stats["selected"],
            "neurons_per_layer": result.handle.neurons_per_layer,
            "last_layers": result.handle.last_layers,
            "strongest selected": _preview(top),
        },
    )


@lookups_asset(code_version=steps.CODE_VERSIONS["corpus"], kinds={"parquet"}, deps=[corpus_files])
def corpus(context: dg.AssetExecutionContext, config: CorpusConfig) -> dg.Output[steps.CorpusHandle]:
    """The partition's corpus (its `prompt_set` key) as read (Wikipedia stripped of markup, files, records),
    cached as Parquet."""
    _, corpus_key = keys_of(context)
    settings = CorpusSettings(source=sources.corpus_source(corpus_key), **config.model_dump())
    try:
        result = steps.run_corpus(settings)
    except CorpusError as err:
        raise _fail_clearly(err) from err
    return _output(result, {"source": settings.source, "parquet_path": dg.MetadataValue.path(result.handle.parquet_path), **result.stats})


@lookups_asset(code_version=steps.CODE_VERSIONS["prompt_set"], kinds={"duckdb"})
def prompt_set(context: dg.AssetExecutionContext, config: PromptSetConfig, corpus: steps.CorpusHandle, store: LookupsStore) -> dg.Output[steps.PromptSetHandle]:
    """Deduplicated passages with deterministic explain/held-out splits, keyed by a content hash."""
    db = store.store()
    try:
        result = steps.run_prompt_set(corpus, config, db)
    except CorpusError as err:
        raise _fail_clearly(err) from err
    sample = db.query(
        "SELECT doc_id, split, title, left(text, 80) AS text FROM documents WHERE prompt_set_id = ? ORDER BY doc_index LIMIT 5",
        [result.handle.prompt_set_id],
    )
    return _output(result, {"prompt_set_id": result.handle.prompt_set_id, **result.stats, "documents": _preview(sample)})


@lookups_asset(code_version=steps.CODE_VERSIONS["neuron_exemplars"], kinds={"pytorch", "duckdb"})
def neuron_exemplars(
    context: dg.AssetExecutionContext,
    config: ExemplarConfig,
    model: steps.ModelHandle,
    neuron_catalog: steps.CatalogHandle,
    prompt_set: steps.PromptSetHandle,
    store: LookupsStore,
) -> dg.Output[steps.ExemplarsHandle]:
    """Each selected neuron's max-activating documents per split, truncated to the shortest suffix that keeps
    the activation (DESIGN steps 2-3)."""
    db = store.store()
    with PhaseProgress(log=context.log.info) as progress:
        result = steps.run_exemplars(model, neuron_catalog, prompt_set, config, db, progress)
    sample = db.query(
        "SELECT layer, neuron, next_token, split, rank, round(act_ratio, 2) AS ratio, prompt_text FROM neuron_exemplars "
        "WHERE model_id = ? AND prompt_set_id = ? AND rank = 1 ORDER BY doc_max_act DESC LIMIT 8",
        [model.model_id, prompt_set.prompt_set_id],
    )
    scalars = {k: v for k, v in result.stats.items() if isinstance(v, (int, float, str))}
    return _output(result, {**scalars, "top exemplars": _preview(sample)})


def _scalars(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


@lookups_asset(code_version=steps.CODE_VERSIONS["head_attributions"], kinds={"pytorch", "duckdb"})
def head_attributions(
    context: dg.AssetExecutionContext,
    config: AttributionConfig,
    model: steps.ModelHandle,
    neuron_exemplars: steps.ExemplarsHandle,
    store: LookupsStore,
) -> dg.Output[steps.AttributionsHandle]:
    """Every candidate head's direct contribution to each exemplar's neuron at the prompt's last position,
    through the layer norm with its cached scale (TransformerLens decomposition), and which heads are active
    (DESIGN steps 4-5). Also the per-exemplar decomposition totals in `exemplar_decompositions`."""
    db = store.store()
    with PhaseProgress(log=context.log.info) as progress:
        result = steps.run_attributions(model, neuron_exemplars, config, db, progress)
    top = db.query(
        "SELECT layer, neuron, head_layer, head, round(avg(score), 4) AS mean_score, round(avg(active::INT), 2) AS active_share "
        "FROM head_attributions WHERE model_id = ? AND prompt_set_id = ? AND split = 'explain' "
        "GROUP BY ALL ORDER BY mean_score DESC LIMIT 10",
        [model.model_id, neuron_exemplars.prompt_set_id],
    )
    return _output(result, {**_scalars(result.stats), "strongest (neuron, head) attributions": _preview(top)})


@lookups_asset(code_version=steps.CODE_VERSIONS["head_neuron_scores"], kinds={"duckdb"})
def head_neuron_scores(
    context: dg.AssetExecutionContext, config: HeadScoreConfig, head_attributions: steps.AttributionsHandle, store: LookupsStore
) -> dg.Output[steps.HeadScoresHandle]:
    """Per (neuron, head): mean attribution, active fraction, rank, and the consistent flag (active on 25-75%
    of the neuron's explain prompts); held-out active counts as ground truth for scoring explanations."""
    db = store.store()
    result = steps.run_head_scores(head_attributions, config, db)
    keys = [head_attributions.model_id, head_attributions.prompt_set_id]
    by_layer = db.query(
        "SELECT head_layer, consistent_pairs, heads_with_consistent_pairs, candidate_pairs FROM heads_by_layer "
        "WHERE model_id = ? AND prompt_set_id = ? ORDER BY head_layer",
        keys,
    )
    pairs = db.query(
        "SELECT layer, neuron, token, head_layer, head, rank, round(mean_score, 4) AS mean_score, round(active_fraction, 2) AS active "
        "FROM consistent_pairs WHERE model_id = ? AND prompt_set_id = ? ORDER BY mean_score DESC LIMIT 10",
        keys,
    )
    return _output(
        result,
        {
            **_scalars(result.stats),
            "heads by layer (consistent pairs)": _preview(by_layer[by_layer["consistent_pairs"] > 0], rows=40),
            "strongest consistent pairs": _preview(pairs),
        },
    )


@lookups_asset(code_version=steps.CODE_VERSIONS["head_ablations"], kinds={"pytorch", "duckdb"})
def head_ablations(
    context: dg.AssetExecutionContext,
    config: AblationConfig,
    model: steps.ModelHandle,
    head_neuron_scores: steps.HeadScoresHandle,
    store: LookupsStore,
) -> dg.Output[steps.AblationsHandle]:
    """Each consistent pair's head zero-ablated on the neuron's prompts: the neuron's activation and its token's
    probability before and after; active vs inactive prompts compared with a two-sample KS test (DESIGN step 8)."""
    db = store.store()
    with PhaseProgress(log=context.log.info) as progress:
        result = steps.run_ablations(model, head_neuron_scores, config, db, progress)
    comparison = db.query(
        "SELECT metric, n_active, n_inactive, round(mean_active, 4) AS mean_active, round(mean_inactive, 4) AS mean_inactive, "
        "round(ks_statistic, 3) AS ks, p_value FROM ablation_comparison WHERE model_id = ? AND prompt_set_id = ?",
        [model.model_id, head_neuron_scores.prompt_set_id],
    )
    return _output(result, {**_scalars(result.stats), "active vs inactive (KS test)": _preview(comparison)})


@lookups_asset(code_version=steps.CODE_VERSIONS["atlas_report"], kinds={"html"})
def atlas_report(
    context: dg.AssetExecutionContext,
    config: AtlasConfig,
    model: steps.ModelHandle,
    head_ablations: steps.AblationsHandle,
    explanation_scores: steps.ExplanationScoresHandle,
    store: LookupsStore,
) -> dg.Output[steps.AtlasHandle]:
    """One static HTML page per model and prompt set: neurons and tokens, head x layer heatmaps, each consistent
    pair's prompts shaded by the head's attention with its explanations and scores E, the findings' figures. Opens from disk, no server, no internet."""
    result = steps.run_atlas(model, head_ablations, config, store.store(), explanation_scores)
    path = Path(result.handle.path)
    images = {}
    for name in ("heads_by_layer", "ablation"):
        png = path.parent / f"{path.stem}__{name}.png"
        if png.exists():
            images[f"figure: {name.replace('_', ' ')}"] = _png(name, png)
    return _output(result, {"html_path": dg.MetadataValue.path(str(path)), **_scalars(result.stats), **images})


@lookups_asset(code_version=steps.asset_code_version("explanations", ExplanationConfig()), kinds={"openai", "duckdb"})
def explanations(
    context: dg.AssetExecutionContext,
    config: ExplanationConfig,
    model: steps.ModelHandle,
    head_neuron_scores: steps.HeadScoresHandle,
    store: LookupsStore,
) -> dg.Output[steps.ExplanationsHandle]:
    """Each neuron's strongest consistent heads explained from their active and inactive prompts (DESIGN step
    6), for next-token neurons and the random baseline neurons: by an LLM (an OpenAI-compatible endpoint, or a
    local instruct model offline) and by the contrastive log-odds reference. Every LLM call is cached in
    `llm_calls`; a run budget stops cleanly, keeping what was done."""
    db = store.store()
    try:
        with PhaseProgress(log=context.log.info) as progress:
            result = steps.run_explanations(model, head_neuron_scores, config, db, context.run_id, progress)
    except ExplainerError as err:
        raise _fail_clearly(err) from err
    if result.stats.get("budget_reached"):
        context.log.warning("The run's LLM budget was reached: explanations not made are marked budget_exhausted; raise max_calls/max_tokens and materialize again (answers so far are cached).")
    sample = db.query(
        "SELECT cohort, layer, neuron, token, head_layer, head, explainer, status, left(explanation, 160) AS explanation FROM explanations "
        "WHERE model_id = ? AND prompt_set_id = ? AND list_contains(?, explainer) ORDER BY explainer <> 'contrastive', cohort, layer, neuron LIMIT 12",
        [model.model_id, head_neuron_scores.prompt_set_id, list(result.handle.explainers)],
    )
    return _output(result, {**_scalars(result.stats), "explainers": ", ".join(result.handle.explainers), "explanations": _preview(sample, rows=12)})


@lookups_asset(code_version=steps.asset_code_version("explanation_scores", ExplanationConfig()), kinds={"openai", "duckdb"})
def explanation_scores(
    context: dg.AssetExecutionContext,
    config: ScoringConfig,
    model: steps.ModelHandle,
    explanations: steps.ExplanationsHandle,
    store: LookupsStore,
) -> dg.Output[steps.ExplanationScoresHandle]:
    """Each explanation asked, given only itself, whether the head is active on each held-out prompt (Yes/No):
    the Head Explanation Score E (balanced accuracy) and AUC (DESIGN step 7); against the random-neuron and
    shuffled-explanation baselines with Mann-Whitney tests, and the E histogram (DESIGN step 9)."""
    db = store.store()
    try:
        with PhaseProgress(log=context.log.info) as progress:
            result = steps.run_explanation_scores(model, explanations, config, db, context.run_id, progress)
    except ExplainerError as err:
        raise _fail_clearly(err) from err
    comparison = db.query(
        "SELECT explainer, baseline, n, round(mean_e, 3) AS mean_e, round(std_e, 3) AS std_e, round(skew, 2) AS skew, skew_p, "
        "n_baseline, round(mean_baseline, 3) AS mean_baseline, mw_p, round(mean_auc, 3) AS mean_auc FROM explanation_comparison "
        "WHERE model_id = ? AND prompt_set_id = ?",
        [model.model_id, explanations.prompt_set_id],
    )
    metadata = {**_scalars(result.stats), "E against the baselines": _preview(comparison)}
    if result.handle.figure_path:
        metadata["figure: E histogram"] = _png("E histogram", Path(result.handle.figure_path))
        metadata["figure_path"] = dg.MetadataValue.path(result.handle.figure_path)
    return _output(result, metadata)
