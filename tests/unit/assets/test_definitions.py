"""The Dagster layer without running it (no model): the code location loads, the job, assets, schedules and
sensors are defined, the README's run config is valid, run tags reach every run, and a skipped step's metadata
reports this run's seconds. The graph materialized on the planted circuit: tests/integration/assets/test_definitions.py;
on SmolLM2: tests/acceptance/test_definitions.py."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from lookups.assets.definitions import ALL_ASSETS, defs, split_keys

REPO = Path(__file__).resolve().parents[3]


def test_code_location_loads():
    out = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr


def test_job_and_assets_are_defined():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "model", "neuron_catalog", "corpus", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations",
        "head_lookups", "lookup_interventions", "lookup_knockouts", "qk_attributions", "explanations", "explanation_scores", "atlas_report",
        "model_weights", "corpus_files",
    }
    assert defs.resolve_job_def("lookups").partitions_def is not None
    assert {s.name for s in defs.schedules} == {"refresh_models", "refresh_corpora"}
    assert {s.name for s in defs.sensors} == {"lookups_automation", "sources_sensor", "publish_successful_runs"}


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
