"""The Dagster layer: the code location loads, and the graph materializes in-process on a tiny
configuration with checks passing; re-materializing with nothing changed runs no model."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from numerics import pre_activation_bound

from lookups.assets.definitions import ALL_ASSETS, defs, split_keys
from lookups.assets.runner import run_partition
from lookups.pipeline.inputs import planted
from lookups.pipeline.science import catalog, harvest
from lookups.pipeline.store.store import Store

REPO = Path(__file__).resolve().parents[2]
ALL_CHECK_NAMES = {
    "models_valid", "neurons_valid", "documents_valid", "exemplars_valid", "exemplar_coverage", "attribution_identity", "head_scores_valid", "ablations_valid",
    "lookups_identity", "interventions_valid", "explanations_valid", "explanation_scores_valid",
}

REPO_TEXTS = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passing the rocky coast relied on it.",
    "The market opened at dawn, and farmers arrived with carts full of apples, cabbages and fresh bread for the villagers.",
    "A violin is a wooden string instrument. Most violins have a hollow body and four strings tuned in perfect fifths.",
    "The expedition reached the summit after three weeks of climbing, but a storm forced them to descend the same night.",
    "Engineers designed the new bridge to withstand earthquakes, using steel cables anchored deep in the bedrock.",
    "The library holds more than two million books, including rare manuscripts from the fifteenth century.",
]


def test_code_location_loads():
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_job_and_assets_are_defined():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "model", "neuron_catalog", "corpus", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations",
        "head_lookups", "lookup_interventions", "explanations", "explanation_scores", "atlas_report", "model_weights", "corpus_files",
    }
    assert defs.resolve_job_def("lookups").partitions_def is not None
    assert {s.name for s in defs.schedules} == {"refresh_models", "refresh_corpora"}
    assert {s.name for s in defs.sensors} == {"lookups_automation", "sources_sensor"}


@pytest.mark.slow
def test_materialize_tiny_graph_then_nothing_recomputes(tmp_path, monkeypatch):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for i, text in enumerate(REPO_TEXTS):
        (corpus_dir / f"doc{i}.txt").write_text(text)
    run_config = {
        "ops": {
            "corpus": {"config": {"source": str(corpus_dir)}},
            "prompt_set": {"config": {"max_documents": None, "heldout_fraction": 0.3}},
            "neuron_catalog": {"config": {"neurons_per_layer": 1, "last_layers": 2, "random_per_layer": 1}},
            "neuron_exemplars": {"config": {"top_k": 3, "keep": 2, "window_tokens": 32}},
        }
    }
    calls = {"forward": 0, "catalog": 0}
    real_call, real_build = harvest.NeuronReader.__call__, catalog.build_catalog

    def counting_call(self, *args, **kwargs):
        calls["forward"] += 1
        return real_call(self, *args, **kwargs)

    def counting_build(*args, **kwargs):
        calls["catalog"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(harvest.NeuronReader, "__call__", counting_call)
    monkeypatch.setattr(catalog, "build_catalog", counting_build)

    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partition(instance, run_config)
        assert first.success
        checks = [e.asset_check_evaluation_data for e in first.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert {c.check_name for c in checks} == ALL_CHECK_NAMES
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
        assert calls["forward"] > 0 and calls["catalog"] == 1

        store = Store()
        counts = store.query("SELECT (SELECT count(*) FROM neurons) AS n, (SELECT count(*) FROM neuron_exemplars) AS e, (SELECT count(*) FROM documents) AS d")
        assert counts.values.tolist() == [[30 * 1536, counts.e[0], len(REPO_TEXTS)]] and counts.e[0] > 0

        calls.update(forward=0, catalog=0)
        second = run_partition(instance, run_config)
        assert second.success
        assert calls == {"forward": 0, "catalog": 0}
        for key in (
            "model", "neuron_catalog", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations",
            "head_lookups", "lookup_interventions", "explanations", "explanation_scores", "atlas_report",
        ):
            materialization = second.asset_materializations_for_node(key)[0]
            assert materialization.metadata["skipped (unchanged inputs)"].value is True
        # Data versions are unchanged, so Dagster sees nothing stale downstream.
        before = [first.output_for_node(a.key.path[-1]).data_version for a in ALL_ASSETS]
        after = [second.output_for_node(a.key.path[-1]).data_version for a in ALL_ASSETS]
        assert before == after


def test_materialize_the_planted_circuit_with_every_check(tmp_path):
    """The whole graph through Dagster on the planted model (fast: a 3-layer model): every check runs and
    passes, and the planted pair arrives in DuckDB as a consistent pair with its ablation test."""
    circuit = planted.build_planted_circuit(tmp_path / "planted")
    run_config = circuit.run_config()
    run_config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}  # the LLM backends have their own tests
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(instance, run_config)
    assert result.success
    checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {c.check_name for c in checks} == ALL_CHECK_NAMES
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    identity = next(c for c in checks if c.check_name == "attribution_identity")
    # Within the rounding bound of the planted model's pre-activations (tests/numerics.py).
    assert identity.metadata["identity_max_rel_error"].value <= pre_activation_bound(planted.N_LAYERS, planted.D_MODEL)
    pairs = Store().query("SELECT layer, neuron, head_layer, head, rank FROM consistent_pairs")
    assert [circuit.layer, circuit.neuron, circuit.head_layer, circuit.head, 1] in pairs.values.tolist()
    scores_md = result.asset_materializations_for_node("head_neuron_scores")[0].metadata
    assert scores_md["consistent_pairs"].value >= 1
    ablation_md = result.asset_materializations_for_node("head_ablations")[0].metadata
    assert ablation_md["act_drop_ks"].value > 0.9
    atlas_md = result.asset_materializations_for_node("atlas_report")[0].metadata
    assert Path(atlas_md["html_path"].value).exists(), atlas_md["html_path"]
    assert atlas_md["figure: ablation"].value.startswith("![ablation](data:image/png;base64,")
    # The contrastive reference explains the planted head by its trigger word and scores perfectly on held-out prompts.
    explained = Store().query("SELECT explanation FROM explanations WHERE layer = ? AND neuron = ? AND head_layer = ? AND head = ?", list(circuit.key))
    assert f"'{planted.TRIGGER}'" in explained["explanation"][0]
    scores_md = result.asset_materializations_for_node("explanation_scores")[0].metadata
    assert scores_md["mean_e[contrastive]"].value == 1.0
    assert scores_md["figure: E histogram"].value.startswith("![E histogram](data:image/png;base64,")

    # A look-up whose terms miss its head's output fails the check in one line that names it and says what it means.
    from lookups.pipeline.steps import checks

    store, looked_up = Store(), result.output_for_node("head_lookups")
    rows = store.rows("head_lookups", **looked_up.keys)
    doc = rows.loc[rows["layer"] == circuit.layer, "doc_id"].iloc[0]
    broken = (rows["layer"] == circuit.layer) & (rows["neuron"] == circuit.neuron) & (rows["head_layer"] == circuit.head_layer)
    broken &= (rows["head"] == circuit.head) & (rows["doc_id"] == doc)
    rows.loc[broken, "identity_rel_error"] = 0.25
    store.replace("head_lookups", looked_up.keys, rows)
    (line,) = checks.LOOKUPS_IDENTITY.evaluate(looked_up, store, "r").result.lines()
    pair = f"neuron {circuit.layer}:{circuit.neuron}, head {circuit.head_layer}.{circuit.head} on document {doc}"
    assert line.startswith("1 of ") and f"worst: {pair}, 0.25 (" in line and "head_lookups.identity_tolerance (0.001)" in line, line


def test_the_readme_run_config_example_is_valid():
    """The YAML example in the README is real run config for the main job (every key exists)."""
    import yaml

    text = (REPO / "README.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(block)
    assert set(config["ops"]) == {a.key.path[-1] for a in ALL_ASSETS}
    config, keys = split_keys(config)
    dg.validate_run_config(defs.resolve_job_def("lookups"), config)


def test_run_tags_from_the_environment_reach_every_run():
    """The scale-out switch is configuration: LOOKUPS_RUN_TAGS (e.g. a GPU per run's pod under dagster-k8s)
    tags the job's runs and the automation sensor's runs; a malformed value is a clear error."""
    gpu = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
    code = (
        "import json; from lookups.assets.definitions import defs; "
        "print(json.dumps([defs.resolve_job_def('lookups').tags, [s.run_tags for s in defs.sensors if s.name == 'lookups_automation'][0]]))"
    )
    env = {**os.environ, "LOOKUPS_RUN_TAGS": json.dumps(gpu)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    job_tags, sensor_tags = json.loads(out.stdout.strip().splitlines()[-1])
    assert json.loads(job_tags["dagster-k8s/config"]) == gpu["dagster-k8s/config"] and sensor_tags == job_tags
    bad = subprocess.run([sys.executable, "-c", code], env={**os.environ, "LOOKUPS_RUN_TAGS": "{gpu"}, capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "LOOKUPS_RUN_TAGS is not JSON" in bad.stderr


def test_metadata_seconds_are_this_runs_and_the_compute_time_keeps_its_own_name(tmp_path):
    """A skipped step reports the seconds this run spent (milliseconds), not the stored compute time of the
    run that computed (which appears as compute_seconds)."""
    from lookups.assets import core
    from lookups.assets.resources import LookupsStore
    from lookups.pipeline import steps as pipeline_steps

    handle = pipeline_steps.HeadScoresHandle(data_version="v1", stats={"pairs": 3, "compute_seconds": 840.0}, model_id="m@1", prompt_set_id="ps")
    def skipped(settings, store):
        return pipeline_steps.StepResult(handle, True, 0.004)

    step = dataclasses.replace(pipeline_steps.STEPS["head_neuron_scores"], run=skipped, inputs=())
    output = core.materialize(step, dg.build_asset_context(), None, LookupsStore(database=str(tmp_path / "x.duckdb")), {})
    metadata = {k: getattr(v, "value", v) for k, v in output.metadata.items()}
    assert metadata["seconds"] == 0.0 and metadata["compute_seconds"] == 840.0
    assert metadata["skipped (unchanged inputs)"] is True and metadata["pairs"] == 3
