"""Two partitions materialized at once, each run with Dagster's multiprocess executor (every step in its own
process), sharing one Dagster instance and one store: no lock error, and every row arrives, the same rows
as the two partitions run one after the other.

The graph is the smallest that proves it: the steps to the head attributions, with their checks, where the two
partitions share a prompt set (same corpus) and write the same tables (two models); every later step writes
the same way through the same store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookups.pipeline.inputs import planted
from lookups.pipeline.store.sql_files import TABLES
from lookups.pipeline.store.store import Store

REPO = Path(__file__).resolve().parents[2]

#: The assets run: model to head attributions (with their checks).
SELECTION = ["model", "neuron_catalog", "corpus", "prompt_set", "neuron_exemplars", "head_attributions"]
RUN = """
import json, sys
import dagster as dg
from lookups.assets.runner import run_partition, run_partition_multiprocess
run_config, selection, parallel = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "parallel"
with dg.DagsterInstance.get() as instance:
    if parallel:
        success, run_id = run_partition_multiprocess(instance, run_config, selection)
    else:
        result = run_partition(instance, run_config, selection=selection)
        success, run_id = result.success, result.run_id
print(json.dumps({"success": success, "run_id": run_id}))
sys.exit(0 if success else 1)
"""


def partition_config(circuit, corpus_path: str) -> dict:
    run_config = circuit.run_config()
    run_config["ops"]["corpus"]["config"]["source"] = corpus_path
    run_config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}
    return run_config


def counts(store: Store) -> dict:
    out = {}
    for table in TABLES:
        columns = set(store.query(f"SELECT * FROM {table} LIMIT 0").columns)
        if "model_id" in columns:
            frame = store.query(f"SELECT regexp_replace(model_id, '@.*', '') AS model, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1")
            out[table] = dict(zip(frame["model"], frame["n"]))
        else:
            out[table] = int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0])
    return out


@pytest.mark.slow
def test_two_partitions_in_parallel_with_the_multiprocess_executor(tmp_path):
    import json

    circuit = planted.build_planted_circuit(tmp_path / "planted")
    control = planted.build_planted_circuit(tmp_path / "control", planted=False)
    configs = [partition_config(circuit, circuit.corpus_path), partition_config(control, circuit.corpus_path)]  # same prompt set, two models

    def env_for(name: str) -> dict:
        home = tmp_path / name / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
        return {**os.environ, "DAGSTER_HOME": str(home), "LOOKUPS_DATA_DIR": str(tmp_path / name / "data")}

    parallel = env_for("parallel")
    # The instance's storage is created once, as `lookups ui` or a deployment does before runs start.
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().dispose()"], env=parallel, check=True)
    runs = [
        subprocess.Popen([sys.executable, "-c", RUN, json.dumps(c), json.dumps(SELECTION), "parallel"], env=parallel, cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in configs
    ]
    outputs = [r.communicate(timeout=900) for r in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
        assert "lock" not in err.lower(), err[-3000:]
    run_ids = [json.loads(out.strip().splitlines()[-1])["run_id"] for out, _ in outputs]
    assert len(set(run_ids)) == 2

    sequential = env_for("sequential")
    subprocess.run([sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().dispose()"], env=sequential, check=True)
    for config in configs:  # one after the other, each in one process
        out = subprocess.run(
            [sys.executable, "-c", RUN, json.dumps(config), json.dumps(SELECTION), "sequential"], env=sequential, cwd=REPO,
            capture_output=True, text=True, timeout=900,
        )
        assert out.returncode == 0, out.stderr[-3000:]

    got = counts(Store(tmp_path / "parallel" / "data" / "lookups.duckdb"))
    want = counts(Store(tmp_path / "sequential" / "data" / "lookups.duckdb"))
    assert got == want
    for table in ("models", "neurons", "neuron_exemplars", "head_attributions"):
        assert len(got[table]) == 2, (table, got[table])  # both models' rows
    written = ("models", "neurons", "neuron_exemplars", "head_attributions", "exemplar_decompositions")
    planted_rows = {table: sum(v for k, v in got[table].items() if k.endswith("planted-model")) for table in written}
    assert all(n > 0 for n in planted_rows.values()), planted_rows  # the planted partition reached every table it writes
    assert got["prompt_sets"] == want["prompt_sets"] == 1 and got["documents"] > 0  # one prompt set, shared
