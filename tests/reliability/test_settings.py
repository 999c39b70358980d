"""Bad settings and bad inputs: every setting has a valid range, a whole run's settings are checked before any
step starts (one message naming each bad field), a step never replaces a non-empty result with an empty one,
a report built on tables that changed is removed until rebuilt, and user errors reach the terminal as one or
two lines (docs/operations.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from chains import run_planted_chain

from lookups.pipeline import steps
from lookups.pipeline.config import AblationSettings, HeadScoreSettings, SettingsError, check_run_settings, settings_problems
from lookups.pipeline.steps.base import EmptyResultRefused, report_path

#: Every step's settings class, by step name (the step registry's).
SETTINGS_OF_ASSET = steps.settings_of_steps()
CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")


def _constraints(info) -> set[str]:
    found = set()
    for item in info.metadata:
        found |= {name for name in CONSTRAINTS if getattr(item, name, None) is not None}
    return found


@pytest.mark.parametrize("asset", list(SETTINGS_OF_ASSET))
def test_every_setting_has_its_valid_range(asset):
    """Numbers have bounds, strings a minimum length, a pattern or a fixed set of values; lists and flags are
    checked by their type (and a validator where the items are a fixed set)."""
    cls = SETTINGS_OF_ASSET[asset]
    unconstrained = []
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        base = {a for a in typing.get_args(annotation) if a is not type(None)} or {annotation}
        if base <= {bool} or typing.get_origin(annotation) is list or typing.get_origin(annotation) is typing.Literal:
            continue
        if not _constraints(info):
            unconstrained.append(name)
    assert not unconstrained, f"{cls.__name__}: no valid range on {unconstrained}"


def test_the_defaults_are_valid():
    assert settings_problems({asset: {"config": {}} for asset in SETTINGS_OF_ASSET}, SETTINGS_OF_ASSET) == []


def test_every_bad_field_is_named_at_once():
    ops = {
        "neuron_exemplars": {"config": {"act_ratio": 5, "top_k": 0, "top_kk": 3}},
        "head_neuron_scores": {"config": {"consistent_min": 0.9, "consistent_max": 0.1}},
        "head_attributions": {"config": {"batch_tokens": -5}},
        "head_ablations": {"config": {"splits": ["explain", "test"]}},
        "prompt_set": {"config": {"heldout_fraction": 1.0}},
        "explanations": {"config": {"backend": "gpt"}},
        "nope": {"config": {}},
    }
    with pytest.raises(SettingsError) as caught:
        check_run_settings(ops, SETTINGS_OF_ASSET, "my.yaml")
    message = str(caught.value)
    for expected in (
        "neuron_exemplars.act_ratio", "neuron_exemplars.top_k", "'top_kk'", "consistent_min (0.9) must be at most consistent_max (0.1)",
        "head_attributions.batch_tokens", "unknown split 'test'", "prompt_set.heldout_fraction", "explanations.backend", "nope: no such asset",
    ):
        assert expected in message
    assert "my.yaml" in message and "Traceback" not in message


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


def ranges_table() -> str:
    """The markdown table of every setting's valid range, as docs/configuration.md shows it."""
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    rows = ["| setting | valid values |", "|---|---|"]
    for asset, cls in SETTINGS_OF_ASSET.items():
        for name, info in cls.model_fields.items():
            parts = []
            for item in info.metadata:
                parts += [f"{symbols[k]} {getattr(item, k)}" for k in symbols if getattr(item, k, None) is not None]
                if getattr(item, "min_length", None) is not None:
                    parts.append("at least one item" if typing.get_origin(info.annotation) is list else "not empty")
                if getattr(item, "pattern", None) is not None:
                    parts.append(f"matches `{item.pattern}`".replace("|", "\\|"))
            if typing.get_origin(info.annotation) is typing.Literal:
                parts.append("one of " + ", ".join(f"`{v}`" for v in typing.get_args(info.annotation)))
            if type(None) in typing.get_args(info.annotation):
                parts.append("or none")
            kind = "true or false" if info.annotation is bool else "a list" if typing.get_origin(info.annotation) is list else "any"
            rows.append(f"| `{asset}.{name}` | {', '.join(parts) or kind} |")
    return "\n".join(rows)


def test_the_docs_list_every_range():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    assert ranges_table() in docs, "docs/configuration.md's table of valid values is out of date: paste tests.reliability.test_settings.ranges_table()"
