"""The software-defined assets: one per registered step (``pipeline.steps.STEPS``, whose rows are where each
asset is defined), built by one factory, each a thin call into its step plus metadata for the UI (previews
from ``sql/reads/preview_*.sql``, figures from files)."""

import base64
import inspect
from pathlib import Path

import dagster as dg
import pandas as pd

from lookups.pipeline import steps
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.common.progress import PhaseProgress
from lookups.pipeline.config import DEFAULT_QUEUE, GPU_QUEUE, k8s_step_gpus
from lookups.pipeline.steps import STEPS, Step

from .automation import LOOKUPS_AUTOMATION, corpus_files, keys_of, lookups_partitions, model_weights
from .resources import LookupsStore

GROUP = "lookups"
#: The op tags executors place steps by: the Celery queue (docs/workers.md: the steps that load the model on
#: ``gpu``, the others on dagster-celery's default ``dagster``) and, for the Kubernetes step executor, the GPUs
#: of a model step's pod (``LOOKUPS_K8S_STEP_GPUS``). Other executors ignore them.
QUEUE_TAG = "dagster-celery/queue"
K8S_TAG = "dagster-k8s/config"


def op_tags(step: Step) -> dict:
    """Where ``step``'s op runs: its Celery queue and, if it loads the model, its pod's GPUs."""
    if not step.loads_model:
        return {QUEUE_TAG: DEFAULT_QUEUE}
    gpus = k8s_step_gpus()
    pod = {K8S_TAG: {"container_config": {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}}} if gpus else {}
    return {QUEUE_TAG: GPU_QUEUE, **pod}
#: The observable sources a step may read (``Step.source``).
SOURCES = {"model_weights": model_weights, "corpus_files": corpus_files}


def _preview(frame: pd.DataFrame, rows: int = 10) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(rows).to_markdown(index=False) if len(frame) else "_no rows_")


def _png(alt: str, path: Path) -> dg.MetadataValue:
    """A PNG file shown inline in the asset's metadata (markdown with a data URL)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})")


def _scalars(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _own_metadata(step: Step, result: steps.StepResult) -> dict:
    """The step's own entries (``Step.metadata``), paths shown as paths."""
    entries = step.metadata(result) if step.metadata else {}
    return {k: dg.MetadataValue.path(str(v)) if k.endswith("_path") else v for k, v in entries.items()}


def _read_parameters(handle) -> dict:
    """Every parameter a preview may take, from the handle (the store passes on only those a read uses)."""
    found = {name: getattr(handle, name) for name in ("model_id", "prompt_set_id") if hasattr(handle, name)}
    return found | ({"explainers": list(handle.explainers)} if hasattr(handle, "explainers") else {})


def _partition_key(step: Step, context: dg.AssetExecutionContext) -> str | None:
    """The partition key a keyed step takes as a setting (the model's name, the corpus's source)."""
    if step.key is None:
        return None
    model_key, corpus_key = keys_of(context)
    return {"model": model_key, "corpus": corpus_key}[step.key.dimension]


def materialize(step: Step, context: dg.AssetExecutionContext, config, store: LookupsStore, inputs: dict) -> dg.Output:
    """Run one asset's step and describe its result. A user error (``LookupsError``) becomes a Dagster
    failure with its message alone, not a traceback."""
    db = store.store(str(context.partition_key) if context.has_partition_key else None)
    try:
        settings = step.settings_for(config.model_dump() if config is not None else {}, _partition_key(step, context))
        with PhaseProgress(log=context.log.info) as progress:
            result = step.call(inputs, settings, db, progress, context.run_id)
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
        **_own_metadata(step, result),
    }
    parameters = _read_parameters(handle)
    for preview in step.previews:
        metadata[preview.label] = _preview(db.read(preview.read, **parameters), preview.rows)
    for name, path in handle.figures.items():
        metadata[f"figure: {name}"] = _png(name, Path(path))
    return dg.Output(handle, data_version=dg.DataVersion(handle.data_version), metadata=metadata)


def build_asset(step: Step, config_class: type, explanation_settings=None) -> dg.AssetsDefinition:
    """The Dagster asset of one step: partitioned by (model, corpus), materialized by automation, with the
    step's code version (the LLM steps' also carries their prompt template's, from ``explanation_settings``)."""

    def compute(context: dg.AssetExecutionContext, config, store: LookupsStore, **inputs):
        return materialize(step, context, config, store, inputs)

    # Dagster reads the inputs, the config class and the resources from the signature.
    parameters = [
        inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dg.AssetExecutionContext),
        inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=config_class),
        *(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in step.inputs),
        inspect.Parameter("store", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=LookupsStore),
    ]
    compute.__signature__ = inspect.Signature(parameters)
    compute.__name__ = step.name
    deps = ([SOURCES[step.source]] if step.source else []) + [dg.AssetKey(name) for name in step.after]
    return dg.asset(
        name=step.name, description=step.description, group_name=GROUP, partitions_def=lookups_partitions,
        automation_condition=LOOKUPS_AUTOMATION, code_version=steps.code_version(step.name, explanation_settings),
        kinds=set(step.kinds), deps=deps, op_tags=op_tags(step),
    )(compute)


def build_assets(config_classes: dict[str, type]) -> list[dg.AssetsDefinition]:
    """Every lookups asset, with the run-config classes given by step name (their defaults: the settings file's)."""
    explanation_settings = config_classes["explanations"]()
    return [build_asset(step, config_classes[name], explanation_settings) for name, step in STEPS.items()]
