"""The intervention benchmark runs end to end on the planted circuit's store (seconds), so it cannot rot: it prints
the resumed ablation against the one from the embedding, the knockout's and the QK attribution's cost against the
look-ups'. Its figures are printed, never asserted."""

import os
import subprocess
import sys
from pathlib import Path

from chains import data_folder, explained_store

from lookups.pipeline.config import database_path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_interventions_runs_on_a_real_store(tmp_path):
    explained_store(tmp_path)
    with data_folder(tmp_path):
        database = database_path()
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_interventions.py"), "--database", str(database), "--pairs", "3"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "LOOKUPS_DATA_DIR": str(tmp_path / "data")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in ("resumed / full:", "knockout, truncated:", "knockout, untruncated:", "QK attribution:"):
        assert line in done.stdout, done.stdout
