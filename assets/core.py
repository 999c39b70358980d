"""The software-defined assets, built from one table (``ASSETS``) by one factory: each a thin call into
``pipeline.steps`` plus metadata for the UI (previews from ``sql/reads/preview_*.sql``, figures from files)."""

import base64
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from lookups.pipeline import steps
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.common.progress import PhaseProgress
from lookups.pipeline.config import CorpusSettings, ModelSettings
from lookups.pipeline.inputs import sources
from lookups.pipeline.store.store import Store

from .automation import LOOKUPS_AUTOMATION, corpus_files, keys_of, lookups_partitions, model_weights
from .resources import LookupsStore

GROUP = "lookups"


@dataclass
class Call:
    """What an asset's step is called with: the run's context and config, the store, the upstream handles."""

    context: dg.AssetExecutionContext
    config: object
    store: Store
    inputs: dict
    progress: PhaseProgress

    @property
    def keys(self) -> tuple[str, str]:
        """(model key, corpus key) of the running partition."""
        return keys_of(self.context)


@dataclass(frozen=True)
class AssetSpec:
    """One row of the asset table. ``run`` calls the step; ``previews`` are (label, named read) shown in the
    metadata, with the read's parameters from the handle; ``metadata`` adds the asset's own entries."""

    name: str
    config: str  # the run-config class (resources.CONFIG_CLASSES)
    run: Callable[[Call], steps.StepResult]
    description: str
    kinds: frozenset
    inputs: tuple[str, ...] = ()
    deps: tuple = ()
    previews: tuple[tuple[str, str, int], ...] = ()  # (label, named read, rows shown)
    metadata: Callable[[steps.StepResult], dict] = lambda result: {}
    llm: bool = False  # its code version also carries its prompt template's (the explanations config's default)


def _preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_no rows_")


def _png(alt: str, path: Path) -> dg.MetadataValue:
    """A PNG file shown inline in the asset's metadata (markdown with a data URL)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


def _scalars(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _read_parameters(handle) -> dict:
    """Every parameter a preview may take, from the handle (the store passes on only those a read uses)."""
    found = {name: getattr(handle, name) for name in ("model_id", "prompt_set_id") if hasattr(handle, name)}
    return found | ({"explainers": list(handle.explainers)} if hasattr(handle, "explainers") else {})


def materialize(spec: AssetSpec, context: dg.AssetExecutionContext, config, store: LookupsStore, inputs: dict) -> dg.Output:
    """Run one asset's step and describe its result. A user error (``LookupsError``) becomes a Dagster
    failure with its message alone, not a traceback."""
    db = store.store()
    try:
        with PhaseProgress(log=context.log.info) as progress:
            result = spec.run(Call(context, config, db, inputs, progress))
    except LookupsError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    if result.warning:
        context.log.warning(result.warning)
    handle = result.handle
    metadata = {
        "skipped (unchanged inputs)": result.skipped,
        **_scalars(handle.stats),
        "seconds": round(result.seconds, 2),  # this run's; `compute_seconds` is when the step last computed
        "data_version": handle.data_version,
        **spec.metadata(result),
    }
    parameters = _read_parameters(handle)
    for label, read, rows in spec.previews:
        metadata[label] = _preview(db.read(read, **parameters), rows)
    for name, path in handle.figures.items():
        metadata[f"figure: {name}"] = _png(name, Path(path))
    return dg.Output(handle, data_version=dg.DataVersion(handle.data_version), metadata=metadata)


def build_asset(spec: AssetSpec, config_classes: dict[str, type]) -> dg.AssetsDefinition:
    """The Dagster asset of one table row: partitioned by (model, prompt_set), materialized by automation."""

    config_class = config_classes[spec.config]

    def compute(context: dg.AssetExecutionContext, config, store: LookupsStore, **inputs):
        return materialize(spec, context, config, store, inputs)

    # Dagster reads the inputs, the config class and the resources from the signature.
    parameters = [
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.AssetExecutionContext),
        inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=config_class),
        *(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in spec.inputs),
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=LookupsStore),
    ]
    compute.__signature__ = inspect.Signature(parameters)
    compute.__name__ = spec.name
    explanation_defaults = config_classes["ExplanationConfig"]()
    code_version = steps.asset_code_version(spec.name, explanation_defaults) if spec.llm else steps.CODE_VERSIONS[spec.name]
    return dg.asset(
        name=spec.name, description=spec.description, group_name=GROUP, partitions_def=lookups_partitions,
        automation_condition=LOOKUPS_AUTOMATION, code_version=code_version, kinds=set(spec.kinds), deps=list(spec.deps),
    )(compute)


# ---------------------------------------------------------------- the table


def _model(call: Call) -> steps.StepResult:
    model_key, _ = call.keys
    return steps.run_model(ModelSettings(name=model_key, **call.config.model_dump()), call.store)


def _corpus(call: Call) -> steps.StepResult:
    _, corpus_key = call.keys
    return steps.run_corpus(CorpusSettings(source=sources.corpus_source(corpus_key), **call.config.model_dump()))


def _explanations(call: Call) -> steps.StepResult:
    result = steps.run_explanations(
        call.inputs["model"], call.inputs["head_neuron_scores"], call.config, call.store, call.context.run_id, call.progress,
        looked_up=call.inputs["head_lookups"],
    )
    if result.stats.get("budget_reached"):
        call.context.log.warning(
            "The run's LLM budget was reached: explanations not made are marked budget_exhausted; raise max_calls/max_tokens and "
            "materialize again (answers so far are cached)."
        )
    return result


ASSETS = [
    AssetSpec(
        "model", "ModelConfig", _model, kinds=frozenset({"pytorch", "duckdb"}), deps=(model_weights,),
        description="The partition's model (its `model` key) as an fp32 checkpoint, fingerprinted, booted with LayerNorm folded; a row in `models`.",
        metadata=lambda r: {"model_id": r.handle.model_id, **r.handle.facts},
    ),
    AssetSpec(
        "neuron_catalog", "CatalogConfig", lambda c: steps.run_catalog(c.inputs["model"], c.config, c.store), inputs=("model",),
        kinds=frozenset({"pytorch", "duckdb"}), previews=(("strongest selected", "preview_strongest_selected", 10),),
        description="Every MLP neuron's next token (argmax of W_out·W_U), score, z-score and top tokens; the selected set.",
        metadata=lambda r: {"neurons_per_layer": r.handle.neurons_per_layer, "last_layers": r.handle.last_layers},
    ),
    AssetSpec(
        "corpus", "CorpusConfig", _corpus, kinds=frozenset({"parquet"}), deps=(corpus_files,),
        description="The partition's corpus (its `prompt_set` key) as read (Wikipedia stripped of markup, files, records), cached as Parquet.",
        metadata=lambda r: {"source": r.handle.source, "parquet_path": dg.MetadataValue.path(r.handle.parquet_path)},
    ),
    AssetSpec(
        "prompt_set", "PromptSetConfig", lambda c: steps.run_prompt_set(c.inputs["corpus"], c.config, c.store), inputs=("corpus",),
        kinds=frozenset({"duckdb"}), previews=(("documents", "preview_documents", 5),),
        description="Deduplicated passages with deterministic explain/held-out splits, keyed by a content hash.",
        metadata=lambda r: {"prompt_set_id": r.handle.prompt_set_id},
    ),
    AssetSpec(
        "neuron_exemplars", "ExemplarConfig",
        lambda c: steps.run_exemplars(c.inputs["model"], c.inputs["neuron_catalog"], c.inputs["prompt_set"], c.config, c.store, c.progress),
        inputs=("model", "neuron_catalog", "prompt_set"), kinds=frozenset({"pytorch", "duckdb"}), previews=(("top exemplars", "preview_top_exemplars", 8),),
        description="Each selected neuron's max-activating documents per split, truncated to the shortest suffix that keeps the activation "
        "(docs/method.md, steps 2-3).",
    ),
    AssetSpec(
        "head_attributions", "AttributionConfig",
        lambda c: steps.run_attributions(c.inputs["model"], c.inputs["neuron_exemplars"], c.config, c.store, c.progress),
        inputs=("model", "neuron_exemplars"), kinds=frozenset({"pytorch", "duckdb"}),
        previews=(("strongest (neuron, head) attributions", "preview_strongest_attributions", 10),),
        description="Every candidate head's direct contribution to each exemplar's neuron at the prompt's last position, through the layer "
        "norm with its cached scale (TransformerLens decomposition), and which heads are active (docs/method.md, steps 4-5). Also the "
        "per-exemplar decomposition totals in `exemplar_decompositions`.",
    ),
    AssetSpec(
        "head_neuron_scores", "HeadScoreConfig", lambda c: steps.run_head_scores(c.inputs["head_attributions"], c.config, c.store),
        inputs=("head_attributions",), kinds=frozenset({"duckdb"}),
        previews=(("heads by layer (consistent pairs)", "preview_heads_by_layer", 40), ("strongest consistent pairs", "preview_consistent_pairs", 10)),
        description="Per (neuron, head): mean attribution, active fraction, rank, and the consistent flag (active on 25-75% of the neuron's "
        "explain prompts); held-out active counts as ground truth for scoring explanations.",
    ),
    AssetSpec(
        "head_ablations", "AblationConfig",
        lambda c: steps.run_ablations(c.inputs["model"], c.inputs["head_neuron_scores"], c.config, c.store, c.progress),
        inputs=("model", "head_neuron_scores"), kinds=frozenset({"pytorch", "duckdb"}),
        previews=(("active vs inactive (KS test)", "preview_ablation_comparison", 10),),
        description="Each consistent pair's head zero-ablated on the neuron's prompts: the neuron's activation and its token's probability "
        "before and after; active vs inactive prompts compared with a two-sample KS test (docs/method.md, step 8).",
    ),
    AssetSpec(
        "head_lookups", "LookupConfig",
        lambda c: steps.run_lookups(c.inputs["model"], c.inputs["head_neuron_scores"], c.config, c.store, c.progress),
        inputs=("model", "head_neuron_scores"), kinds=frozenset({"pytorch", "duckdb"}),
        previews=(("what each pair's head reads most", "preview_pair_lookups", 10),),
        description="What each consistent pair's head reads: its attribution split by source position (attention weight x the value at "
        "that position through W_O, the neuron's norm and input), on every prompt of both splits and both cohorts; per pair the tokens "
        "read most, the concentration, and flags for copying, previous-token and BOS heads (docs/method.md, \"Look-ups\").",
    ),
    AssetSpec(
        "lookup_interventions", "InterventionConfig",
        lambda c: steps.run_interventions(c.inputs["model"], c.inputs["head_lookups"], c.inputs["explanations"], c.config, c.store, c.progress),
        inputs=("model", "head_lookups", "explanations"), kinds=frozenset({"pytorch", "duckdb"}),
        previews=(("share of pairs confirmed", "preview_lookup_confirmation", 4),),
        description="The counterfactual test of each explained pair's look-up: the token its head reads most, and a control position, "
        "replaced by substitutes from the prompt set's unigram distribution on the active prompts; the neuron's activation, the head's "
        "attribution and the token's probability before and after; a paired Wilcoxon test per pair and the share confirmed at a 5% "
        "false discovery rate (Benjamini-Hochberg), against the random-baseline pairs.",
        metadata=lambda r: {k: v for k, v in r.handle.stats.items() if k.endswith("share_confirmed") and v is not None},
    ),
    AssetSpec(
        "explanations", "ExplanationConfig", _explanations, inputs=("model", "head_neuron_scores", "head_lookups"), kinds=frozenset({"openai", "duckdb"}),
        previews=(("explanations", "preview_explanations", 12),), llm=True,
        description="Each neuron's strongest consistent heads explained from their active and inactive prompts (docs/method.md, step 6), for "
        "next-token neurons and the random baseline neurons: by an LLM (an OpenAI-compatible endpoint, or a local instruct model offline) "
        "and by the contrastive log-odds reference. Every LLM call is cached in `llm_calls`; a run budget stops cleanly, keeping what was done.",
        metadata=lambda r: {"explainers": ", ".join(r.handle.explainers)},
    ),
    AssetSpec(
        "explanation_scores", "ScoringConfig",
        lambda c: steps.run_explanation_scores(c.inputs["model"], c.inputs["explanations"], c.config, c.store, c.context.run_id, c.progress),
        inputs=("model", "explanations"), kinds=frozenset({"openai", "duckdb"}),
        previews=(("E against the baselines", "preview_explanation_comparison", 10),), llm=True,
        description="Each explanation asked, given only itself, whether the head is active on each held-out prompt (Yes/No): the Head "
        "Explanation Score E (balanced accuracy) and AUC (docs/method.md, step 7); against the random-neuron and shuffled-explanation "
        "baselines with Mann-Whitney tests, and the E histogram (step 9).",
        # The last figure's path (the step writes one figure, the E histogram); none when there is no figure.
        metadata=lambda r: {"figure_path": dg.MetadataValue.path(list(r.handle.figures.values())[-1])} if r.handle.figures else {},
    ),
    AssetSpec(
        "atlas_report", "AtlasConfig",
        lambda c: steps.run_atlas(
            c.inputs["model"], c.inputs["head_ablations"], c.config, c.store, c.inputs["explanation_scores"], c.inputs["lookup_interventions"]
        ),
        inputs=("model", "head_ablations", "explanation_scores", "lookup_interventions"), kinds=frozenset({"html"}),
        description="One static HTML page per model and prompt set: neurons and tokens, head x layer heatmaps, each consistent pair's "
        "look-up summary and counterfactual test, explanations and scores E, prompts shaded by the head's signed contribution per token "
        "(attention on a toggle, the token it reads most boxed), the findings' figures with the E histogram. Opens from disk, no server, no internet.",
        metadata=lambda r: {"html_path": dg.MetadataValue.path(r.handle.path)},
    ),
]
ASSET_NAMES = [spec.name for spec in ASSETS]


def build_assets(config_classes: dict[str, type]) -> list[dg.AssetsDefinition]:
    """Every lookups asset, with the run-config classes given (their defaults: the settings file's)."""
    return [build_asset(spec, config_classes) for spec in ASSETS]
