"""`lookups keys`: the registered model and corpus keys, whether each resolves, and removing those that never
will (docs/operations.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[3]


def lookups(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def registered() -> dict[str, list[str]]:
    with dg.DagsterInstance.get() as instance:
        return {d: instance.get_dynamic_partitions(d) for d in ("model", "corpus")}


def test_keys_lists_what_resolves_and_removes_what_does_not(data_folder, tmp_path, planted_circuit, monkeypatch):
    gone_model, gone_corpus = tmp_path / "deleted-checkpoint", tmp_path / "moved.jsonl"
    gone_model.mkdir()
    shutil.copytree(planted_circuit.model_dir, gone_model, dirs_exist_ok=True)
    shutil.copyfile(planted_circuit.corpus_path, gone_corpus)
    home = data_folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance `lookups` uses
    with dg.DagsterInstance.get() as instance:  # as runs registered them, when the files were there
        instance.add_dynamic_partitions("model", [planted_circuit.model_dir, str(gone_model)])
        instance.add_dynamic_partitions("corpus", [planted_circuit.corpus_path, str(gone_corpus)])
    shutil.rmtree(gone_model)
    gone_corpus.unlink()

    listed = lookups("keys")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[1]: line for line in listed.stdout.splitlines() if line.startswith(("model ", "corpus "))}
    assert lines[planted_circuit.model_dir].split()[0] == "model" and lines[planted_circuit.model_dir].endswith("resolves")
    assert lines[planted_circuit.corpus_path].split()[0] == "corpus" and lines[planted_circuit.corpus_path].endswith("resolves")
    assert f"does not resolve: Model folder {gone_model} does not exist" in lines[str(gone_model)]
    assert f"does not resolve: {gone_corpus} does not exist" in lines[str(gone_corpus)]
    assert "lookups keys remove --model KEY" in listed.stdout

    typo = lookups("keys", "remove", "--model", str(gone_model), "--corpus", str(tmp_path / "never-registered.jsonl"))
    assert typo.returncode == 2 and typo.stderr.startswith("lookups: No corpus key") and "Traceback" not in typo.stderr, typo.stderr
    assert str(gone_model) in registered()["model"]  # a mistyped key removes nothing

    # A relative path names the key it registered (as `lookups run --corpus moved.jsonl` did from tmp_path).
    removed = lookups("keys", "remove", "--model", str(gone_model), "--corpus", "moved.jsonl", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.count("Removed ") == 2
    assert registered() == {"model": [planted_circuit.model_dir], "corpus": [planted_circuit.corpus_path]}
    again = lookups("keys")
    assert again.returncode == 0 and "does not resolve" not in again.stdout, again.stdout


def test_keys_on_a_fresh_data_folder_says_there_are_none(data_folder):
    listed = lookups("keys")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("No model or corpus keys are registered yet")
    missing = lookups("keys", "remove")
    assert missing.returncode == 2 and "needs --model KEY or --corpus KEY" in missing.stderr
