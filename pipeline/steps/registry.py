"""The step registry (docs/architecture.md, "Adding a step"): one ``Step`` declaration per step, next to its
code, naming everything else derives from: its settings class, code version, inputs, result tables, checks
and its function. The Dagster assets, their run-config classes, the asset checks, the code versions, the
run-config schema and `lookups run`'s settings are all built from ``STEPS``; nothing else lists the steps.

A step's function takes its inputs (the upstream steps' handles) as keyword arguments named after those
steps, then ``settings`` and ``store``; it may also take ``progress`` and ``run_id``. It returns a
``StepResult`` (steps/base.py).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from lookups.pipeline.steps.base import StepResult
    from lookups.pipeline.store.quality import SuiteResult


@dataclass(frozen=True)
class PartitionKey:
    """A step whose input is a partition key: the dimension that holds it, the setting it fills, and how a key
    becomes that setting's value."""

    dimension: str  # 'model' or 'corpus'
    setting: str  # 'name' (ModelSettings), 'source' (CorpusSettings)
    to_setting: Callable[[str], str] = lambda key: key


@dataclass(frozen=True)
class Preview:
    """A named read (``sql/reads/<read>.sql``) shown in the asset's metadata, its first ``rows`` rows."""

    label: str
    read: str
    rows: int = 10


@dataclass(frozen=True)
class Outcome:
    """A check's verdict: the merged suite result and the metadata it adds."""

    result: SuiteResult
    metadata: dict


@dataclass(frozen=True)
class Check:
    """A data-quality check of what a step wrote: ``evaluate(handle, store, run_id)``. A blocking check that
    fails stops the steps after it (docs/quality.md)."""

    name: str
    description: str
    evaluate: Callable[..., Outcome]
    blocking: bool = True


@dataclass(frozen=True)
class Step:
    """One step of the graph (one Dagster asset)."""

    name: str
    run: Callable[..., StepResult]
    settings: type[BaseModel]  # what the function takes
    code_version: str  # bump when the algorithm changes: the step and everything after it recompute
    description: str
    inputs: tuple[str, ...] = ()  # the steps whose handles it takes, as keyword arguments of those names
    after: tuple[str, ...] = ()  # steps it reads from the store without taking their handle
    tables: tuple[str, ...] = ()  # the result tables it writes (their keys: sql/schema.sql)
    checks: tuple[Check, ...] = ()
    kinds: frozenset = frozenset()  # shown in the UI
    previews: tuple[Preview, ...] = ()
    metadata: Callable[[StepResult], dict] | None = None  # the asset's own metadata entries
    key: PartitionKey | None = None  # a setting filled from the partition key (not run config)
    source: str | None = None  # the observable source asset it reads ('model_weights', 'corpus_files')
    template_settings: tuple[str, ...] = ()  # an LLM step: the ExplanationSettings fields naming its prompt templates
    run_config: type[BaseModel] | None = field(default=None)  # the run-config settings, when ``key`` fills one
    needs_model: bool | None = None  # loads the model (a GPU step); None: it takes the model handle or is the model step

    @property
    def loads_model(self) -> bool:
        """Whether the step loads the model's weights (runs on a GPU worker: docs/workers.md)."""
        if self.needs_model is not None:
            return self.needs_model
        return "model" in self.inputs or (self.key is not None and self.key.dimension == "model")

    @property
    def config_settings(self) -> type[BaseModel]:
        """The settings a run's config gives (all but the partition key's)."""
        return self.run_config or self.settings

    def settings_for(self, config: dict, key: str | None = None) -> BaseModel:
        """The step's settings from its run config and, for a keyed step, the partition key."""
        values = dict(config)
        if self.key is not None:
            values[self.key.setting] = self.key.to_setting(key)
        return self.settings(**values)

    def call(self, inputs: dict, settings: BaseModel, store, progress=None, run_id: str | None = None) -> StepResult:
        """Run the step's function with its inputs' handles, the settings, the store and what else it takes."""
        extras = {"progress": progress, "run_id": run_id}
        accepted = _parameters(self.run)
        return self.run(
            **{name: inputs[name] for name in self.inputs}, settings=settings, store=store, **{k: v for k, v in extras.items() if k in accepted}
        )


@functools.cache
def _parameters(function: Callable) -> frozenset:
    return frozenset(inspect.signature(function).parameters)


#: Every step, in the order they were registered (an order the dependencies allow).
STEPS: dict[str, Step] = {}


def register(step: Step) -> Step:
    """Add ``step`` to the registry; its inputs must be registered before it."""
    if step.name in STEPS:
        raise ValueError(f"The step {step.name} is registered twice.")
    missing = [name for name in step.inputs if name not in STEPS]
    if missing:
        raise ValueError(f"The step {step.name} takes {', '.join(missing)}, not registered before it.")
    STEPS[step.name] = step
    return step
