"""Bad settings and bad inputs, through the real `lookups` command and on the planted circuit: a whole run's
settings are checked before any step starts, user errors reach the terminal as one or two lines, a broken
checkpoint is named with its fix, a step never replaces a non-empty result with an empty one, and a report built
on tables that changed is removed until rebuilt (docs/operations.md). Every setting's valid range, checked
without running anything: tests/unit/config/test_settings.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from chains import run_planted_chain

from lookups.pipeline import steps
from lookups.pipeline.config import AblationSettings, HeadScoreSettings
from lookups.pipeline.steps.base import EmptyResultRefused, report_path

# ---------------------------------------------------------------- the command line


def _lookups(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lookups.pipeline.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ops: {head_neuron_scores: {config: {consistent_min: 0.9, consistent_max: 0.1}}}", "consistent_min (0.9) must be at most"),
        ("ops: {neuron_exemplars: {config: {act_ratio: 5, top_k: 0}}}", "neuron_exemplars.act_ratio"),
        ("ops: {head_ablations: {config: {batch_tokens: -5}}}", "head_ablations.batch_tokens"),
        ("ops: {neuron_exemplars: {config: {top_kk: 3}}}", "no setting 'top_kk'"),
        ("ops: {neuron_exemplars: [config: {", "not valid YAML at line"),
        ("- just\n- a list", "expected a mapping"),
        ("ops: {neuron_exemplars: 3}", "expected {config:"),
    ],
)
def test_bad_settings_files_end_in_a_short_message(tmp_path, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    done = _lookups("run", "--model", "planted", "--corpus", "planted", "--config", str(config))
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 4  # the file, one line per bad field, the fix
    assert not (Path(os.environ["LOOKUPS_DATA_DIR"]) / "dagster_home").exists()  # refused before Dagster started


def test_a_missing_relative_model_folder_is_named_as_a_folder(tmp_path):
    (tmp_path / "models").mkdir()
    done = _lookups("run", "--model", "models/nope", "--corpus", "planted", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    missing = tmp_path / "models" / "nope"
    assert done.stderr.strip().splitlines() == [f"lookups: The model path models/nope does not exist ({missing}). Check the path and run again."]


def test_a_corpus_key_with_a_separator_is_refused_in_one_line():
    done = _lookups("run", "--model", "planted", "--corpus", "a|b")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "contains |" in lines[0]


@pytest.mark.parametrize("damage", ["config", "weights"])
def test_a_broken_checkpoint_is_named_with_its_fix(tmp_path, planted_circuit, damage):
    from lookups.pipeline.inputs.checkpoints import ModelError, resolve_model

    folder = tmp_path / "broken"
    folder.mkdir()
    for path in Path(planted_circuit.model_dir).iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    if damage == "config":
        (folder / "config.json").write_text("{not json")
    else:
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelError) as caught:
        resolve_model(str(folder))
    message = str(caught.value)
    assert ("config.json is not valid JSON" if damage == "config" else "model.safetensors is not a readable safetensors file") in message
    assert "\n" not in message


# ---------------------------------------------------------------- nothing computed is replaced by nothing


def test_an_empty_result_never_replaces_a_non_empty_one(tmp_path):
    """Settings that leave no consistent pair fail the step with the reason; the stored pairs stay."""
    _, store, handles = run_planted_chain(tmp_path / "circuit", ablate=False)
    keys = handles["head_neuron_scores"].keys
    before = store.read("consistent_pairs_with_tokens", **keys)
    assert len(before) >= 1
    with pytest.raises(EmptyResultRefused, match="finds no consistent pairs .*keeps the stored rows"):
        steps.run_head_scores(handles["head_attributions"], HeadScoreSettings(consistent_min=0.99, consistent_max=0.99), store)
    after = store.read("consistent_pairs_with_tokens", **keys)
    assert after.equals(before)
    assert store.version("head_neuron_scores", handles["head_neuron_scores"].scope).data_version == handles["head_neuron_scores"].data_version


def test_a_first_empty_result_is_written_with_a_warning(tmp_path):
    _, store, handles = run_planted_chain(tmp_path / "circuit", head_scores=HeadScoreSettings(consistent_min=0.99, consistent_max=0.99), ablate=False)
    assert handles["head_neuron_scores"].stats["consistent_pairs"] == 0
    result = steps.run_ablations(handles["model"], handles["head_neuron_scores"], AblationSettings(), store)
    assert result.warning is None  # the step before said it: no warning for an empty input


def test_a_report_on_changed_tables_is_removed_until_rebuilt(tmp_path):
    _, store, handles = run_planted_chain(tmp_path / "circuit", ablate=False)
    attributions = handles["head_attributions"]
    page = report_path(store, attributions.model_id, attributions.prompt_set_id)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<html>built on the earlier tables</html>")
    steps.run_head_scores(attributions, HeadScoreSettings(), store)  # unchanged: skipped, the page stays
    assert page.exists()
    steps.run_head_scores(attributions, HeadScoreSettings(consistent_max=0.8), store)  # new pairs: the page goes
    assert not page.exists()
