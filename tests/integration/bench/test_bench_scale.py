"""The scale benchmark runs end to end on a tiny shape (seconds), so it cannot rot between GPU sessions: every
step reports tokens and memory, and its attribution holds the identity. Its figures are printed, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_scale_runs_every_step_on_a_tiny_parallel_model(tmp_path):
    out = tmp_path / "scale.json"
    tiny = ["--set", "num_hidden_layers=2", "--set", "hidden_size=64", "--set", "num_attention_heads=4", "--set", "intermediate_size=128",
            "--set", "vocab_size=600"]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_scale.py"), "--config", "pythia-160m", *tiny, "--docs", "2", "--neurons", "2",
         "--doc-tokens", "64", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and "parallel attention and MLP" in done.stdout
    for step in ("bare forward", "harvest", "truncation", "attribution", "ablation"):
        assert report["steps"][step]["tokens"] > 0 and report["steps"][step]["peak_mb"] > 0, step
    assert report["attribution"]["identity_max_rel_error"] < 1e-5
    assert report["ablation"]["rows"] > 0
