"""Partitions, observable sources, declarative automation, the corpus-folder sensor and the daily refresh.

Every asset is partitioned by (model, corpus): two dynamic dimensions whose keys are model and corpus keys
(``pipeline.sources``); a partition's key reads ``<corpus>|<model>`` (Dagster orders dimensions by name). The
model weights and each corpus are observable sources; their data versions (weights fingerprint, files'
content hash) flow through every asset's data version, so Dagster knows which partitions are stale and the
automation sensor materializes exactly those.
"""

from __future__ import annotations

import hashlib
import json
import os

import dagster as dg

from lookups.pipeline.inputs import sources

MODEL_DIMENSION = "model"
CORPUS_DIMENSION = "corpus"
model_partitions = dg.DynamicPartitionsDefinition(name=MODEL_DIMENSION)
corpus_partitions = dg.DynamicPartitionsDefinition(name=CORPUS_DIMENSION)
#: One partition per (model, corpus), e.g. "gensim-wiki|smollm2-135m-instruct".
lookups_partitions = dg.MultiPartitionsDefinition({MODEL_DIMENSION: model_partitions, CORPUS_DIMENSION: corpus_partitions})

REFRESH_CRON_ENV = "LOOKUPS_REFRESH_CRON"
DEFAULT_REFRESH_CRON = "0 3 * * *"  # daily, 03:00 in the instance's time zone
SENSOR_INTERVAL_ENV = "LOOKUPS_CORPUS_SENSOR_SECONDS"
RUN_TAGS_ENV = "LOOKUPS_RUN_TAGS"


def run_tags() -> dict:
    """Tags for every run of the lookups assets, from ``LOOKUPS_RUN_TAGS`` (JSON). On Kubernetes, with
    dagster-k8s's run launcher, ``{"dagster-k8s/config": {"container_config": {"resources": {"limits":
    {"nvidia.com/gpu": "1"}}}}}`` gives each partition's run a pod with a GPU."""
    text = os.environ.get(RUN_TAGS_ENV)
    if not text:
        return {}
    try:
        tags = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{RUN_TAGS_ENV} is not JSON ({err}): give an object of tags, e.g. '{{\"team\": \"interp\"}}'.") from err
    if not isinstance(tags, dict):
        raise ValueError(f"{RUN_TAGS_ENV} must be a JSON object of tags, not {type(tags).__name__}.")
    # Dagster tags are strings: structured values (dagster-k8s/config) travel as JSON.
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}


def partition_key(model: str, corpus: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({MODEL_DIMENSION: model, CORPUS_DIMENSION: corpus})


def keys_of(context) -> tuple[str, str]:
    """(model key, corpus key) of the running partition."""
    if not context.has_partition_key:
        raise dg.Failure(
            "lookups assets are partitioned by (model, corpus): pick a partition in the UI's materialize dialog "
            "(add a model or corpus key there if it is new), or run `lookups run --model ... --corpus ...`.",
            allow_retries=False,
        )
    found = context.partition_key.keys_by_dimension
    return found[MODEL_DIMENSION], found[CORPUS_DIMENSION]


def add_partitions(instance: dg.DagsterInstance, model: str, corpus: str) -> dg.MultiPartitionKey:
    """Register the keys (idempotent) and return the partition."""
    model, corpus = sources.normalize_key("model", model), sources.normalize_key("corpus", corpus)
    for dimension, key in ((MODEL_DIMENSION, model), (CORPUS_DIMENSION, corpus)):
        if not instance.has_dynamic_partition(dimension, key):
            try:
                instance.add_dynamic_partitions(dimension, [key])
            except Exception:  # another run added the same key a moment before: fine
                if not instance.has_dynamic_partition(dimension, key):
                    raise
    return partition_key(model, corpus)


# ---------------------------------------------------------------- observable sources


def _observe(context, dimension: str, fingerprint) -> dg.DataVersionsByPartition:
    versions = {}
    for key in context.instance.get_dynamic_partitions(dimension):
        try:
            versions[key] = fingerprint(key)
        except Exception as err:  # one unreadable source must not hide the others' changes
            context.log.warning(f"{dimension} {key!r} could not be observed: {err}")
    return dg.DataVersionsByPartition(versions)


@dg.observable_source_asset(
    partitions_def=model_partitions,
    group_name="lookups",
    description="Each model's weights: observed as name@sha256 of the weight files (a changed checkpoint is a new version).",
)
def model_weights(context) -> dg.DataVersionsByPartition:
    return _observe(context, MODEL_DIMENSION, sources.model_fingerprint)


@dg.observable_source_asset(
    partitions_def=corpus_partitions,
    group_name="lookups",
    description="Each corpus's files: observed as a hash of their content (an added or edited document is a new version).",
)
def corpus_files(context) -> dg.DataVersionsByPartition:
    return _observe(context, CORPUS_DIMENSION, sources.corpus_fingerprint)


observe_models = dg.define_asset_job("observe_models", selection=[model_weights], description="Re-observe every model's weights.")
observe_corpora = dg.define_asset_job("observe_corpora", selection=[corpus_files], description="Re-observe every corpus's files.")


# ---------------------------------------------------------------- automation

#: Materialize a partition when it appears (a new model or corpus key), when an input's data version changes
#: (a source re-observed with new content, an upstream asset recomputed) or when this asset's code version
#: changes; never while an input is missing or running, and only once the inputs' blocking checks passed.
LOOKUPS_AUTOMATION = (
    dg.AutomationCondition.eager()
    | (
        dg.AutomationCondition.code_version_changed()
        & ~dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("code version changed")
) & dg.AutomationCondition.all_deps_blocking_checks_passed()

#: A check is requested with its asset, in the same run, where a failed blocking check stops what follows.
CHECK_WITH_ITS_ASSET = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested()).with_label("its asset is requested")

automation_sensor = dg.AutomationConditionSensorDefinition(
    "lookups_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    run_tags=run_tags(),
    description="Materializes exactly the stale or new partitions (the assets' automation conditions).",
)


# ---------------------------------------------------------------- corpus folders and the daily refresh


@dg.sensor(
    jobs=[observe_models, observe_corpora],
    minimum_interval_seconds=int(os.environ.get(SENSOR_INTERVAL_ENV, "30")),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the sources observed: a new folder under the corpus folders root (LOOKUPS_CORPUS_FOLDERS) becomes "
    "a corpus key; new or changed files there, and any model or corpus key added (from the UI, the CLI, this sensor), "
    "are observed at once, so the automation sensor materializes exactly what they made new or stale.",
)
def sources_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    before = json.loads(context.cursor) if context.cursor else {}
    snapshot = sources.folder_snapshot()
    models = sorted(context.instance.get_dynamic_partitions(MODEL_DIMENSION))
    corpora = sorted(context.instance.get_dynamic_partitions(CORPUS_DIMENSION))
    new_folders = sorted(k for k in snapshot if k not in corpora)
    changed_folders = sorted(k for k, v in snapshot.items() if before.get("folders", {}).get(k) != v)
    new_models = sorted(set(models) - set(before.get("models", [])))
    new_corpora = sorted((set(corpora) | set(new_folders)) - set(before.get("corpora", [])))
    cursor = {"folders": snapshot, "models": models, "corpora": sorted(set(corpora) | set(new_folders))}
    stamp = hashlib.sha256(json.dumps(cursor, sort_keys=True).encode()).hexdigest()[:16]
    requests = []
    if new_models:
        requests.append(dg.RunRequest(run_key=f"models-{stamp}", job_name=observe_models.name, tags={"lookups/new": ",".join(new_models)[:200]}))
    if changed_folders or new_corpora:
        requests.append(
            dg.RunRequest(run_key=f"corpora-{stamp}", job_name=observe_corpora.name, tags={"lookups/new": ",".join(changed_folders + new_corpora)[:200]})
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[corpus_partitions.build_add_request(new_folders)] if new_folders else [],
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if requests or new_folders else "no new key, no new or changed corpus folder",
    )


#: The main job's name: every lookups asset of one partition.
MAIN_JOB = "lookups"


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="publish_successful_runs",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=5,
    description="Publishes a successful run's results, so that every reader (queries, the summary, the views file) sees them "
    "(docs/data.md, \"What a reader sees\"); a failed run's finished steps stay pending for the next run of its partition.",
)
def publish_successful_runs(context: dg.RunStatusSensorContext) -> None:
    from .resources import LookupsStore  # the resources import the steps (torch): only a run's outcome pays for it

    if context.dagster_run.job_name == MAIN_JOB:
        LookupsStore().publish_run(context.dagster_run)


def refresh_schedules() -> list[dg.ScheduleDefinition]:
    """Re-observe the models and the corpora on a cron (``LOOKUPS_REFRESH_CRON``, daily by default); the
    automation sensor then materializes whatever the new versions made stale."""
    cron = os.environ.get(REFRESH_CRON_ENV) or DEFAULT_REFRESH_CRON
    return [
        dg.ScheduleDefinition(name=f"refresh_{job.name.removeprefix('observe_')}", job=job, cron_schedule=cron, default_status=dg.DefaultScheduleStatus.RUNNING)
        for job in (observe_models, observe_corpora)
    ]
