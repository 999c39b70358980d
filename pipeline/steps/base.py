"""One versioned-step mechanism: load -> compute -> write, skipped when nothing it depends on changed.

A step's data version hashes its code version (``CODE_VERSIONS``), its inputs' data versions and the settings
that change its results (``config.result_settings``: fields marked as tuning - batch sizes, concurrency,
budgets, a check's tolerance - are left out, so changing one makes nothing stale). When the store holds that
version for the step's scope, the run that wrote it completed and the files it wrote still hold what was
written (sizes and SHA-256 against the manifest), the step returns at once with the stored stats: no model
load, no forward pass, no LLM call; a damaged file makes it compute again, and say why. Otherwise ``compute`` loads its inputs from the store,
computes, and returns the rows to write; they are written with the version record, all or nothing.
See docs/architecture.md.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.common.hashing import stable_hash
from lookups.pipeline.config import ExplanationSettings
from lookups.pipeline.inputs.models import ModelFacts
from lookups.pipeline.inputs.runtime import ModelRuntime, load_runtime
from lookups.pipeline.llm.templates import load_template
from lookups.pipeline.steps.registry import STEPS
from lookups.pipeline.store.asset_versions import AssetVersion
from lookups.pipeline.store.store import Store


def code_version(step: str, explanation_settings: ExplanationSettings | None = None) -> str:
    """The code version Dagster sees: the step's (``registry.Step.code_version``), and for the LLM steps also the
    version (name and content hash) of each prompt template they use, so editing a template makes them stale."""
    found = STEPS[step]
    if not found.template_settings:
        return found.code_version
    settings = explanation_settings or ExplanationSettings()
    return "+".join([found.code_version, *(load_template(getattr(settings, name)).version for name in found.template_settings)])


def version_hash(*parts) -> str:
    return stable_hash(*parts, length=16)


# ---------------------------------------------------------------- handles: what one asset hands the next


@dataclass(frozen=True, kw_only=True)
class Handle:
    """An asset's output: its data version, its stats and the keys the next step needs (the rows themselves
    live in the store). ``figures``: PNG files the step wrote, by name."""

    data_version: str
    stats: dict
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PartitionHandle(Handle):
    """The output of a step keyed by (model, prompt set)."""

    model_id: str
    prompt_set_id: str

    @property
    def scope(self) -> str:
        return partition_scope(self.model_id, self.prompt_set_id)

    @property
    def keys(self) -> dict:
        return {"model_id": self.model_id, "prompt_set_id": self.prompt_set_id}


@dataclass(frozen=True, kw_only=True)
class ModelHandle(Handle):
    model_id: str
    name: str
    local_dir: str
    device: str
    facts: ModelFacts

    def runtime(self) -> ModelRuntime:
        """The model to compute with, loaded once per process (``inputs.runtime``). On a machine where the model
        step's folder does not exist (a worker with a cache of its own, docs/workers.md), the model key is
        resolved again into this machine's cache, and must give the same weights."""
        local_dir = self.local_dir
        if not Path(local_dir).is_dir():
            from lookups.pipeline.inputs.checkpoints import resolve_model

            source = resolve_model(self.name)
            if source.model_id != self.model_id:
                raise LookupsError(
                    f"The model {self.name} resolves on this machine to {source.model_id}, not to {self.model_id} as where its model "
                    "step ran: give every worker the same checkpoint (or a shared LOOKUPS_CACHE_DIR), docs/workers.md."
                )
            local_dir = source.local_dir
        return load_runtime(local_dir, self.device)

    def __setstate__(self, state: dict) -> None:
        # A handle pickled when the facts were a plain dict.
        if isinstance(state.get("facts"), dict):
            state = {**state, "facts": ModelFacts(**state["facts"])}
        self.__dict__.update(state)


@dataclass(frozen=True, kw_only=True)
class CatalogHandle(Handle):
    model_id: str
    neurons_per_layer: int
    last_layers: int
    n_selected: int


@dataclass(frozen=True, kw_only=True)
class CorpusHandle(Handle):
    source: str
    parquet_path: str
    corpus_hash: str
    counts: dict


@dataclass(frozen=True, kw_only=True)
class PromptSetHandle(Handle):
    prompt_set_id: str
    counts: dict


@dataclass(frozen=True, kw_only=True)
class ExemplarsHandle(PartitionHandle):
    act_ratio: float
    max_prompt_tokens: int


@dataclass(frozen=True, kw_only=True)
class AttributionsHandle(PartitionHandle):
    identity_tolerance: float


@dataclass(frozen=True, kw_only=True)
class HeadScoresHandle(PartitionHandle):
    @property
    def no_pairs(self) -> bool:
        """No consistent pair in either cohort: nothing to ablate or explain."""
        return not (self.stats.get("consistent_pairs") or self.stats.get("random_baseline_consistent_pairs"))


@dataclass(frozen=True, kw_only=True)
class AblationsHandle(PartitionHandle):
    pass


@dataclass(frozen=True, kw_only=True)
class LookupsHandle(PartitionHandle):
    identity_tolerance: float
    attribution_tolerance: float = 1e-3  # a handle pickled before this setting existed reads the default


@dataclass(frozen=True, kw_only=True)
class InterventionsHandle(PartitionHandle):
    fdr: float


@dataclass(frozen=True, kw_only=True)
class KnockoutsHandle(PartitionHandle):
    fdr: float


@dataclass(frozen=True, kw_only=True)
class QKHandle(PartitionHandle):
    identity_tolerance: float


@dataclass(frozen=True, kw_only=True)
class ExplanationsHandle(PartitionHandle):
    settings: dict  # ExplanationSettings as run (no endpoint, no key: those live in the environment only)
    explainers: tuple


@dataclass(frozen=True, kw_only=True)
class ExplanationScoresHandle(PartitionHandle):
    pass


@dataclass(frozen=True, kw_only=True)
class AtlasHandle(PartitionHandle):
    path: str


# ---------------------------------------------------------------- the mechanism


@dataclass
class Computed:
    """What ``compute`` returns: the rows to write (table, key columns, frame), the stats, and whether the
    run finished (False: stopped by the LLM budget or by failed calls; the next run computes again)."""

    writes: list[tuple[str, dict, pd.DataFrame]]
    stats: dict
    complete: bool = True


@dataclass
class StepResult:
    handle: Handle
    skipped: bool
    seconds: float  # this call's wall time (skipped or not); the stats keep the compute time of the run that computed
    complete: bool = True
    warning: str | None = None  # something the person running it should see (an empty result)

    @property
    def stats(self) -> dict:
        return self.handle.stats


@dataclass(frozen=True)
class Yield:
    """What a step's result consists of, to tell an empty result: ``stat`` counts it in the stats, ``noun``
    names it, ``settings`` are the step's settings that can make it empty."""

    stat: str
    noun: str
    settings: str
    inputs_empty: bool = False  # the step's inputs held nothing: the step before it has said so already


class EmptyResultRefused(LookupsError, RuntimeError):
    """A step would replace a non-empty result with an empty one: refused, the earlier rows kept."""


def partition_scope(model_id: str, prompt_set_id: str) -> str:
    return f"{model_id}/{prompt_set_id}"


def run_step(
    store: Store,
    asset: str,
    scope: str,
    fingerprint: tuple,
    compute: Callable[[], Computed],
    handle: Callable[[str, dict], Handle],
    outputs_present: Callable[[], bool] = lambda: True,
    yields: Yield | None = None,
    is_report: bool = False,
) -> StepResult:
    """Skip or compute one step. ``fingerprint``: the inputs' data versions and the result settings;
    ``handle(data_version, stats)`` builds the output; ``outputs_present``: files the step writes outside
    the store (the atlas page) must still exist for a skip.

    ``yields`` tells an empty result. An empty result never replaces a non-empty one: the step fails with the
    reason and the earlier rows stay (docs/operations.md). A first empty result is written, with a warning.
    Any write but a report's makes the reports built on this scope stale: they are removed until rebuilt."""
    started = time.perf_counter()
    data_version = version_hash(STEPS[asset].code_version, *fingerprint)
    stored = store.version(asset, scope)
    repair = None
    if stored and stored.data_version == data_version and stored.complete and outputs_present():
        damaged = store.damaged(asset, scope)  # before trusting the record: the files must hold what was written
        if not damaged:
            return StepResult(handle(data_version, stored.stats), True, time.perf_counter() - started)
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        repair = f"{asset} computes again: {damaged[0]}{more}."
    computed = compute()
    warning = repair
    if yields is not None and not yields.inputs_empty and not computed.stats.get(yields.stat):
        earlier = (stored.stats.get(yields.stat) or 0) if stored else 0
        if earlier:
            raise EmptyResultRefused(
                f"With these settings {asset} finds no {yields.noun} (the stored result has {earlier}), so it keeps the stored rows "
                f"instead of replacing them with nothing. Loosen {yields.settings} and run again."
            )
        warning = " ".join(filter(None, [repair, f"{asset} found no {yields.noun}: the steps after it have nothing to work on. Loosen {yields.settings}."]))
    stats = {**computed.stats, "compute_seconds": round(time.perf_counter() - started, 3)}
    if not is_report:
        remove_stale_reports(store, scope)
    store.replace_many(computed.writes, AssetVersion(asset, scope, data_version, STEPS[asset].code_version, stats, computed.complete))
    return StepResult(handle(data_version, stats), False, time.perf_counter() - started, computed.complete, warning)


def report_name(model_id: str, prompt_set_id: str) -> str:
    """The atlas page of a model and prompt set, as one of the store's files (``Store.put_file``)."""
    return f"atlas/{_file_part(model_id)}__{prompt_set_id}.html"


def report_path(store: Store, model_id: str, prompt_set_id: str) -> Path:
    """The atlas page of a model and prompt set: ``atlas/<model>__<prompt set>.html`` in the store's folder (with an
    object-store warehouse, a copy of ``<warehouse>/_files/atlas/...`` on the machine that built or checked it)."""
    return store.folder / report_name(model_id, prompt_set_id)


def _file_part(model_id: str) -> str:
    return model_id.replace("@", "-")


def remove_stale_reports(store: Store, scope: str) -> None:
    """Remove the atlas pages built on the results of ``scope`` (a model id, a prompt set id or both), which
    are about to change: a page is rebuilt by the atlas step, never left contradicting the tables."""
    model_id, _, prompt_set_id = scope.partition("/")
    if prompt_set_id:
        pages = [report_name(model_id, prompt_set_id)]
    else:
        # a prompt set's id (pipeline/inputs/corpora.py); a model's id has no such prefix
        pattern = f"atlas/*__{scope}.html" if scope.startswith("ps-") else f"atlas/{_file_part(model_id)}__*.html"
        pages = [name for name in store.list_files("atlas") if fnmatch.fnmatchcase(name, pattern)]
    for page in pages:
        store.remove_file(page)


def figure_name(model_id: str, prompt_set_id: str, name: str) -> str:
    """One of a step's figures, as one of the store's files (``Store.put_file``)."""
    return f"figures/{_file_part(model_id)}__{prompt_set_id}__{name}.png"


def figure_path(store: Store, model_id: str, prompt_set_id: str, name: str) -> Path:
    """Where a step writes one of its figures: ``figures/<model>__<prompt set>__<name>.png`` in the store's folder."""
    return store.folder / figure_name(model_id, prompt_set_id, name)
