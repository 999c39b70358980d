"""Helpers for the tests that run the Dagster definitions in-process (tests/integration/assets/ and
tests/acceptance/): the checks a whole run evaluates, counting what each step computes, one tick of the automation
conditions, running what they requested, and the automation scenario both tiers run (with the contrastive
explainer in the integration tier, with the local SmolLM2 explainer in the acceptance tier)."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import dagster as dg
import pandas as pd
import torch

from lookups.assets import automation
from lookups.assets.resources import LookupsStore
from lookups.pipeline import steps
from lookups.pipeline.inputs import planted


def check_evaluations(result) -> list:
    """The asset check evaluations of a finished in-process run, in the order they ran."""
    return [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


#: Every asset check of the main job: a whole run evaluates each.
ALL_CHECK_NAMES = {
    "models_valid", "neurons_valid", "documents_valid", "exemplars_valid", "exemplar_coverage", "attribution_identity", "head_scores_valid", "ablations_valid",
    "lookups_identity", "interventions_valid", "knockouts_valid", "qk_identity", "explanations_valid", "explanation_scores_valid",
}
#: The assets of the main job, and those that depend on the model alone.
ASSETS = [
    "model", "neuron_catalog", "corpus", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations",
    "head_lookups", "lookup_interventions", "lookup_knockouts", "qk_attributions", "explanations", "explanation_scores", "atlas_report",
]
MODEL_ONLY = {"model", "neuron_catalog"}
#: Every step's function, by name (what ``StepCounter`` logs).
STEP_FUNCTIONS = {step.run.__name__ for step in steps.STEPS.values()}


class StepCounter:
    """Per step function (named as in ``pipeline.steps``, e.g. ``run_model``): calls, whether it computed, torch
    forward passes (token embedding lookups: one per forward of any model, analysed or explaining) and new LLM
    calls. It wraps ``Step.call``, the one way every asset runs its step."""

    def __init__(self, monkeypatch):
        self.forwards = 0
        self.log: list[dict] = []
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._count)
        original, counter = steps.Step.call, self

        def call(step, inputs, settings, store, progress=None, run_id=None):
            before = counter.forwards
            result = original(step, inputs, settings, store, progress, run_id)
            counter.log.append(
                {
                    "step": step.run.__name__, "computed": not result.skipped, "forwards": counter.forwards - before,
                    "llm_calls": 0 if result.skipped else int(result.stats.get("llm_calls", 0)),
                }
            )
            return result

        monkeypatch.setattr(steps.Step, "call", call)

    def _count(self, module, args):
        if isinstance(module, torch.nn.Embedding):  # at least one per forward pass (GPT-2 style: token and position)
            self.forwards += 1

    def take(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.log, columns=["step", "computed", "forwards", "llm_calls"])
        self.log = []
        return frame

    def close(self):
        self._hook.remove()


def computed(frame: pd.DataFrame) -> set[str]:
    return set(frame.loc[frame["computed"], "step"])


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
        LookupsStore().publish_run(result.dagster_run)  # as the run-status sensor does after a launched run


def recomputes_exactly_what_changed(tmp_path, monkeypatch, settings_defs, explainer: str) -> None:
    """The automation scenario, in one instance, in order: the first materialization; nothing changed; a document added
    to the corpus; a new model; a changed code version. After each, which (asset, partition) the automation requests
    and what the steps then compute, counted in forward passes and LLM calls (``settings_defs``: the fixture of
    tests/conftest.py; ``explainer``: the explanations' backend)."""
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
            assert computed(made) == STEP_FUNCTIONS and made["forwards"].sum() > 0
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
                                         "run_lookups", "run_interventions", "run_knockouts", "run_qk", "run_explanations", "run_explanation_scores",
                                         "run_atlas"}
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
            downstream = {
                "head_neuron_scores", "head_ablations", "head_lookups", "lookup_interventions", "lookup_knockouts", "qk_attributions", "explanations",
                "explanation_scores", "atlas_report",
            }
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
