"""Dagster resources and run-config classes: the pipeline's settings, exposed to the launchpad."""

from __future__ import annotations

import hashlib
import os
import pickle

import dagster as dg

from lookups.pipeline.config import check_run_settings, database_path, load_settings_file
from lookups.pipeline.steps import STEPS, Step, settings_of_steps
from lookups.pipeline.store.store import Store

#: The run tag that holds a partitioned run's partition key.
PARTITION_TAG = "dagster/partition"


class LookupsStore(dg.ConfigurableResource):
    """The store every asset writes to: Parquet files beside the views file ``database`` (default: ``$LOOKUPS_DATA_DIR/lookups.duckdb``)."""

    database: str = ""

    def store(self, partition: str | None = None) -> Store:
        """The store; a run's (``partition``: the run's partition key) reads its own writes, which every other
        reader sees once the run succeeds and they are published (``publish_run``)."""
        return Store(self.database or database_path(), partition=partition)

    def run_store(self, run: dg.DagsterRun) -> Store:
        """The store of one run's steps and checks: its partition's writes pending until the run succeeds."""
        return self.store(run.tags.get(PARTITION_TAG))

    def publish_run(self, run: dg.DagsterRun) -> int:
        """Publish a successful run's writes (docs/data.md, "What a reader sees"); the number of files."""
        return self.run_store(run).publish()


class HandleIOManager(dg.ConfigurableIOManager):
    """The assets' outputs are small handles (ids, data versions, stats; the rows live in the store), pickled
    as the store's files, ``handles/<asset>/<hash of the partition key>.pkl``: under the store's folder, or in an
    object-store warehouse (``_files/handles/...``), where a step on another machine finds them. Partition keys
    are paths and names of any shape, so they never become file paths themselves."""

    store: LookupsStore

    @staticmethod
    def _name(asset_key: dg.AssetKey, partition: str | None) -> str:
        name = hashlib.sha256(str(partition).encode()).hexdigest()[:24] if partition is not None else "unpartitioned"
        return f"handles/{'__'.join(asset_key.path)}/{name}.pkl"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        name = self._name(context.asset_key, context.asset_partition_key if context.has_asset_partitions else None)
        self.store.store().put_file(name, pickle.dumps(obj))

    def load_input(self, context: dg.InputContext):
        partition = context.asset_partition_key if context.has_asset_partitions else None
        data = self.store.store().get_file(self._name(context.asset_key, partition))
        if data is None:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} has not been materialized for partition {partition}: materialize it first "
                "(select it too, or run `lookups run` for this model and corpus).",
                allow_retries=False,
            )
        return pickle.loads(data)


def config_class(step: Step, defaults: dict | None = None) -> type:
    """The run-config class of ``step``'s asset: its settings (without the partition key's) as a Dagster
    ``Config``, e.g. ``CatalogSettings`` -> ``CatalogConfig``, with ``defaults`` (the settings file's)."""
    base = step.config_settings
    name = base.__name__.removesuffix("Settings") + "Config"
    cls = type(name, (dg.Config, base), {"__doc__": base.__doc__, "__module__": __name__})
    return _with_defaults(cls, defaults or {})


# ---------------------------------------------------------------- settings file

#: The settings file (YAML run config, `lookups ui --config FILE`): its values become the defaults of the
#: config classes, so every run of the deployment uses them: launched from the UI, by the automation
#: sensor, by the schedule. A run's own config still overrides them.
SETTINGS_FILE_ENV = "LOOKUPS_RUN_CONFIG"


def settings_file_ops(path: str | None = None) -> dict:
    """The ``ops`` of the settings file (``path``, default ``$LOOKUPS_RUN_CONFIG``; none: no settings), without
    the model name and corpus source (those are partition keys)."""
    path = path or os.environ.get(SETTINGS_FILE_ENV)
    if not path:
        return {}
    ops = load_settings_file(path, f"{SETTINGS_FILE_ENV}=")
    check_run_settings(ops, settings_of_steps(), f"the settings file {SETTINGS_FILE_ENV}={path}")
    out = {}
    for op, block in ops.items():
        values = dict((block or {}).get("config") or {})
        if STEPS[op].key is not None:
            values.pop(STEPS[op].key.setting, None)
        out[op] = values
    return out


def _with_defaults(cls: type, values: dict) -> type:
    """``cls`` with the given field defaults (validated: an unknown field or a bad value fails at load)."""
    if not values:
        return cls
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no setting {', '.join(unknown)} (settings file {SETTINGS_FILE_ENV}).")
    cls.model_validate(values)
    import pydantic

    fields = {
        name: (
            cls.model_fields[name].annotation,
            pydantic.Field(value, description=cls.model_fields[name].description, json_schema_extra=cls.model_fields[name].json_schema_extra),
        )
        for name, value in values.items()
    }
    return pydantic.create_model(cls.__name__, __base__=cls, __doc__=cls.__doc__, __module__=cls.__module__, **fields)


def config_classes(settings: dict | None = None) -> dict[str, type]:
    """Every step's run-config class, by step name, with the defaults of ``settings`` (``settings_file_ops()``)."""
    settings = settings or {}
    return {name: config_class(step, settings.get(name)) for name, step in STEPS.items()}
