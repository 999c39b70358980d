"""The `lookups` command run for real: the planted keys resolve to the planted circuit and its settings, a bad
model is a clear one-line error that keeps what was computed, and `lookups run` on the planted circuit prints the
found pair (help and run config from flags, without running anything: tests/unit/cli/test_cli.py)."""

import subprocess
import sys
from pathlib import Path

import yaml

from lookups.pipeline.cli import build_parser, run_config_from_args
from lookups.pipeline.inputs import checkpoints, planted


def test_the_planted_keys_run_the_planted_circuit_with_its_settings(tmp_path, monkeypatch):
    """`lookups run --model planted --corpus planted`: the circuit is built once under the cache folder, the
    keys resolve to it, and the run starts from its settings (a flag or config file still wins)."""
    from lookups.pipeline.inputs import sources

    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    args = build_parser().parse_args(["run", "--model", "planted", "--corpus", "planted", "--max-documents", "20"])
    ops = run_config_from_args(args)["ops"]
    assert ops["neuron_exemplars"]["config"] == planted.EXEMPLAR_CONFIG and ops["neuron_catalog"]["config"] == planted.CATALOG_CONFIG
    assert ops["prompt_set"]["config"]["max_documents"] == 20
    source = checkpoints.resolve_model("planted")
    assert source.origin == "planted" and Path(source.local_dir) == tmp_path / "cache" / "planted" / "model"
    corpus = Path(sources.corpus_source("planted"))
    assert corpus.is_file() and len(corpus.read_text().splitlines()) == 48
    assert checkpoints.resolve_model("planted").model_id == source.model_id  # built once, the same weights


def test_bad_model_is_one_clear_line_and_keeps_what_was_computed(tmp_path, data_folder):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("A short document about rivers and bridges.")
    missing = subprocess.run(
        [sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", str(tmp_path / "no-such-model") + "/", "--corpus", str(corpus)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2  # refused before the run: a key that never resolves is never registered
    assert missing.stderr.strip().startswith("lookups: The model path") and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"")
    out = subprocess.run(
        [sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", str(broken), "--corpus", str(corpus)], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "model: " in out.stderr and "config.json is not valid JSON" in out.stderr
    assert "Traceback" not in out.stderr
    # The corpus branch did not depend on the model: its result is stored.
    assert any((data_folder / "corpora").glob("*.parquet"))


def test_run_on_the_planted_circuit_prints_the_found_pair(tmp_path, planted_circuit):
    """`lookups run` end to end (through the Dagster runner) on the planted model: the summary names the
    planted head as the neuron's strongest consistent head and prints the ablation test."""
    config = tmp_path / "planted.yaml"
    config.write_text(yaml.safe_dump({"ops": {"neuron_exemplars": {"config": planted.EXEMPLAR_CONFIG}}}))  # the rest from flags
    out = subprocess.run(
        [sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", planted_circuit.model_dir, "--corpus", planted_circuit.corpus_path,
         "--max-documents", "0", "--neurons-per-layer", "1", "--last-layers", "1", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = out.stdout[out.stdout.index("strongest consistent (neuron, head) pairs") :]
    first_pair = summary.splitlines()[2].split()
    assert first_pair[:4] == [
        str(planted_circuit.layer), str(planted_circuit.neuron), planted_circuit.target_token.strip(), f"L{planted_circuit.head_layer}H{planted_circuit.head}"
    ]
    assert "consistent pairs by head layer: " in out.stdout and f"L{planted_circuit.head_layer}: " in out.stdout
    assert "ablation     act_drop: active" in out.stdout and "KS 1.000" in out.stdout
