"""Incremental recomputation through Dagster's declarative automation, on the planted circuit: which
(asset, partition) the automation requests after each change, and what the steps then compute, counted in
torch forward passes and LLM calls per step.

Scenarios (one instance, in order): the first materialization; nothing changed; a document added to the
corpus; a new model; a changed code version. Plus the blocking data-quality gate: a corrupted table stops
the assets downstream of it.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest
import torch
import yaml

from lookups.assets import automation
from lookups.pipeline import steps
from lookups.pipeline.inputs import planted
from lookups.pipeline.science import catalog as catalog_mod
from lookups.pipeline.science import exemplars as exemplars_mod
from lookups.pipeline.store.store import Store

ASSETS = [
    "model", "neuron_catalog", "corpus", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations",
    "head_lookups", "lookup_interventions", "explanations", "explanation_scores", "atlas_report",
]
MODEL_ONLY = {"model", "neuron_catalog"}
STEPS = [name for name in dir(steps) if name.startswith("run_")]


class StepCounter:
    """Per step function of ``pipeline.steps``: calls, whether it computed, torch forward passes (token
    embedding lookups: one per forward of any model, analysed or explaining) and new LLM calls."""

    def __init__(self, monkeypatch):
        self.forwards = 0
        self.log: list[dict] = []
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._count)
        for name in STEPS:
            monkeypatch.setattr(steps, name, self._wrap(name, getattr(steps, name)))

    def _count(self, module, args):
        if isinstance(module, torch.nn.Embedding):  # at least one per forward pass (GPT-2 style: token and position)
            self.forwards += 1

    def _wrap(self, name, fn):
        def wrapped(*args, **kwargs):
            before = self.forwards
            result = fn(*args, **kwargs)
            self.log.append(
                {
                    "step": name, "computed": not result.skipped, "forwards": self.forwards - before,
                    "llm_calls": 0 if result.skipped else int(result.stats.get("llm_calls", 0)),
                }
            )
            return result

        return wrapped

    def take(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.log, columns=["step", "computed", "forwards", "llm_calls"])
        self.log = []
        return frame

    def close(self):
        self._hook.remove()


def computed(frame: pd.DataFrame) -> set[str]:
    return set(frame.loc[frame["computed"], "step"])


@pytest.fixture
def settings_defs(tmp_path, monkeypatch):
    """Definitions whose config defaults are a settings file (as `lookups ui --config` gives the daemon), so
    the automation's runs analyse the planted circuit with its settings."""
    from lookups.assets import core, definitions, resources

    def load(run_config: dict):
        path = tmp_path / "settings.yaml"
        path.write_text(yaml.safe_dump(run_config))
        monkeypatch.setenv("LOOKUPS_RUN_CONFIG", str(path))  # the daemon's steps load it again in their processes
        assets = core.build_assets(resources.config_classes(resources.settings_file_ops(str(path))))
        defs = definitions.build_definitions(assets)
        # What the runner and the daemon load: the deployment's definitions, with this settings file.
        monkeypatch.setattr(definitions, "defs", defs)
        monkeypatch.setattr(definitions, "ALL_ASSETS", assets)
        return SimpleNamespace(defs=defs, ALL_ASSETS=assets, build_definitions=definitions.build_definitions)

    yield load


def requested(defs, instance, cursor):
    """One automation tick: the (asset, partition) pairs the automation conditions request."""
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    wanted = set()
    for entity in result.results:
        if isinstance(entity.key, dg.AssetKey):
            wanted |= {(entity.key.to_user_string(), str(ap.partition_key)) for ap in entity.true_subset.expensively_compute_asset_partitions()}
    return result.cursor, wanted


def materialize(defs, instance, wanted) -> None:
    """Run what the automation requested, one run per partition, as the automation sensor launches them."""
    by_partition = defaultdict(list)
    for asset, partition in wanted:
        by_partition[partition].append(dg.AssetKey(asset))
    for partition, keys in sorted(by_partition.items()):
        corpus, model = partition.split("|")
        result = defs.resolve_job_def("lookups").execute_in_process(
            instance=instance, partition_key=automation.partition_key(model, corpus), asset_selection=keys
        )
        assert result.success


@pytest.mark.parametrize("explainer", ["contrastive", pytest.param("local", marks=pytest.mark.slow)])
def test_automation_recomputes_exactly_what_changed(tmp_path, monkeypatch, settings_defs, explainer):
    """With the contrastive reference (no LLM) in the fast tier; with the local SmolLM2 explainer (slow) the
    LLM calls are counted too: none when nothing changed, none when only a code version upstream changed
    (the answers come from the cache)."""
    circuit = planted.build_planted_circuit(tmp_path / "planted")
    control = planted.build_planted_circuit(tmp_path / "control", planted=False)
    settings = circuit.run_config()
    settings["ops"]["explanations"] = {"config": {"backend": explainer}}
    definitions = settings_defs(settings)
    defs = definitions.defs
    from lookups.assets.runner import observe_sources, run_partition

    counter = StepCounter(monkeypatch)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            first = run_partition(instance, {"ops": {"model": {"config": {"name": circuit.model_dir}}, "corpus": {"config": {"source": circuit.corpus_path}}}})
            assert first.success
            made = counter.take()
            assert computed(made) == set(STEPS) and made["forwards"].sum() > 0
            if explainer == "local":
                assert made.set_index("step").loc[["run_explanations", "run_explanation_scores"], "llm_calls"].min() > 0
            one = f"{circuit.corpus_path}|{circuit.model_dir}"  # Dagster orders the dimensions by name: corpus, model
            cursor, _ = requested(defs, instance, None)  # the first tick only records the state

            # Nothing changed: the automation requests nothing; a run anyway computes nothing.
            observe_sources(instance)
            cursor, wanted = requested(defs, instance, cursor)
            assert wanted == set()
            again = run_partition(instance, {"ops": {"model": {"config": {"name": circuit.model_dir}}, "corpus": {"config": {"source": circuit.corpus_path}}}})
            assert again.success
            made = counter.take()
            assert computed(made) == set() and made["forwards"].sum() == 0 and made["llm_calls"].sum() == 0
            cursor, wanted = requested(defs, instance, cursor)
            assert wanted == set()

            # A document added: the corpus's version changes; what depends on the prompt set recomputes, the
            # model and the catalog do not.
            with open(circuit.corpus_path, "a") as fh:
                fh.write(json.dumps({"text": f"The {planted.TRIGGER} of the valley watched the river all night long.", "id": "added"}) + "\n")
            observe_sources(instance)
            cursor, wanted = requested(defs, instance, cursor)
            assert wanted == {(a, one) for a in ASSETS if a not in MODEL_ONLY}
            materialize(defs, instance, wanted)
            made = counter.take()
            assert set(made["step"]) == {"run_corpus", "run_prompt_set", "run_exemplars", "run_attributions", "run_head_scores", "run_ablations",
                                         "run_lookups", "run_interventions", "run_explanations", "run_explanation_scores", "run_atlas"}
            assert {"run_corpus", "run_prompt_set", "run_exemplars", "run_attributions"} <= computed(made)
            assert made.set_index("step").loc["run_exemplars", "forwards"] > 0
            cursor, wanted = requested(defs, instance, cursor)
            assert wanted == set()

            # A new model: its partition alone.
            automation.add_partitions(instance, control.model_dir, circuit.corpus_path)
            observe_sources(instance)
            cursor, wanted = requested(defs, instance, cursor)
            two = f"{circuit.corpus_path}|{control.model_dir}"
            assert wanted == {(a, two) for a in ASSETS}
            materialize(defs, instance, wanted)
            made = counter.take()
            assert computed(made) >= {"run_model", "run_catalog", "run_exemplars", "run_attributions"}
            assert not computed(made) & {"run_corpus"}  # the corpus is parsed once, whatever the model
            cursor, wanted = requested(defs, instance, cursor)
            assert wanted == set()

            # A changed code version (head scores): that asset and what depends on it, in every partition.
            scores = steps.STEPS["head_neuron_scores"]
            monkeypatch.setitem(steps.STEPS, "head_neuron_scores", dataclasses.replace(scores, code_version=scores.code_version + "-changed"))
            changed = definitions.build_definitions(
                dg.map_asset_specs(
                    lambda spec: (
                        spec.replace_attributes(code_version=steps.STEPS["head_neuron_scores"].code_version)
                        if spec.key.to_user_string() == "head_neuron_scores"
                        else spec
                    ),
                    definitions.ALL_ASSETS,
                )
            )
            cursor, wanted = requested(changed, instance, cursor)
            downstream = {"head_neuron_scores", "head_ablations", "head_lookups", "lookup_interventions", "explanations", "explanation_scores", "atlas_report"}
            assert wanted == {(a, p) for a in downstream for p in (one, two)}
            materialize(changed, instance, wanted)
            made = counter.take()
            assert computed(made) >= {"run_head_scores"} and not set(made["step"]) & {"run_model", "run_catalog", "run_exemplars", "run_attributions"}
            assert made.set_index("step").loc["run_head_scores", "forwards"].sum() == 0
            assert {"run_explanations", "run_explanation_scores"} <= computed(made) and made["llm_calls"].sum() == 0  # cached answers
            cursor, wanted = requested(changed, instance, cursor)
            assert wanted == set()
    finally:
        counter.close()


@pytest.mark.parametrize("corruption", ["infinite_score", "orphan_exemplar"])
def test_a_corrupted_table_stops_what_depends_on_it(tmp_path, monkeypatch, corruption):
    """A blocking check that fails stops the run before the assets downstream: no forward pass is spent on
    them, and the automation does not request them either."""
    from lookups.assets.definitions import defs
    from lookups.assets.runner import run_partition

    circuit = planted.build_planted_circuit(tmp_path / "planted")
    if corruption == "infinite_score":
        real = catalog_mod.build_catalog

        def corrupted(*args, **kwargs):
            frame = real(*args, **kwargs)
            frame.loc[frame.index[frame["selected"]][0], "score"] = float("inf")  # NaN would not even pass the schema (NOT NULL)
            return frame

        monkeypatch.setattr(catalog_mod, "build_catalog", corrupted)
        failing, first_blocked, reason = "neurons_valid", "neuron_exemplars", "score"
    else:
        real = exemplars_mod.find_exemplars

        def corrupted(*args, **kwargs):
            frame, stats = real(*args, **kwargs)
            orphan = frame.iloc[[0]].copy()
            orphan["neuron"] = 9999  # a neuron the catalog does not have
            return pd.concat([frame, orphan], ignore_index=True), stats

        monkeypatch.setattr(exemplars_mod, "find_exemplars", corrupted)
        failing, first_blocked, reason = "exemplars_valid", "head_attributions", "neuron_found"  # referential integrity
    counter = StepCounter(monkeypatch)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            run_config = circuit.run_config()
            run_config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}
            result = run_partition(instance, run_config)
            assert not result.success
            checks = {
                e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
                for e in result.all_events
                if e.event_type_value == "ASSET_CHECK_EVALUATION"
            }
            assert checks[failing].passed is False and reason in str(checks[failing].metadata["failures"].value)
            materialized = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
            assert first_blocked not in materialized and "atlas_report" not in materialized
            ran = set(counter.take()["step"])
            blocked_step = {"neuron_exemplars": "run_exemplars", "head_attributions": "run_attributions"}[first_blocked]
            assert blocked_step not in ran
            # The automation does not request the blocked assets while the check stays failed.
            cursor, _ = requested(defs, instance, None)
            cursor, wanted = requested(defs, instance, cursor)
            assert not {a for a, _ in wanted} & {first_blocked, "atlas_report"}
            table = "neurons" if corruption == "infinite_score" else "neuron_exemplars"
            assert Store().query(f"SELECT count(*) AS n FROM {table}")["n"][0] > 0  # the bad rows are kept to inspect
    finally:
        counter.close()


def test_the_sources_sensor_adds_folders_and_observes_new_and_changed_sources(tmp_path, monkeypatch):
    from lookups.assets.definitions import defs

    root = tmp_path / "corpus_folders"
    monkeypatch.setenv("LOOKUPS_CORPUS_FOLDERS", str(root))
    (root / "letters").mkdir(parents=True)
    (root / "letters" / "a.txt").write_text("Dear friend, the harvest came early this year.")

    def tick(instance, cursor):
        result = automation.sources_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
        for request in result.dynamic_partitions_requests:  # what the daemon does with them
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result.cursor, sorted(r.job_name for r in result.run_requests)

    with dg.DagsterInstance.ephemeral() as instance:
        cursor, jobs = tick(instance, None)
        assert instance.get_dynamic_partitions("corpus") == ["letters"] and jobs == ["observe_corpora"]
        cursor, jobs = tick(instance, cursor)
        assert jobs == []  # nothing new
        (root / "letters" / "b.txt").write_text("A second letter.")
        cursor, jobs = tick(instance, cursor)
        assert jobs == ["observe_corpora"] and instance.get_dynamic_partitions("corpus") == ["letters"]
        instance.add_dynamic_partitions("model", ["some-model"])  # as the UI's "Add partition" does
        cursor, jobs = tick(instance, cursor)
        assert jobs == ["observe_models"]
        cursor, jobs = tick(instance, cursor)
        assert jobs == []
        # The folder's name is the key; the observed version is its files' content hash.
        from lookups.pipeline.inputs import sources

        assert sources.corpus_source("letters") == str(root / "letters")
        before = sources.corpus_fingerprint("letters")
        (root / "letters" / "b.txt").write_text("A second letter, edited.")
        assert sources.corpus_fingerprint("letters") != before
