"""`lookups query`: named queries and SQL on a read-only connection, parameters, refusals, the command line. The
store is filled by the real pipeline on the planted-circuit model (seconds; the output formats without a store:
tests/unit/store/test_queries.py)."""

import subprocess
import sys

import pytest
from chains import run_every_named_query

from lookups.pipeline.inputs import planted
from lookups.pipeline.store.queries import QueryError, run_query
from lookups.pipeline.store.sql_files import named_queries


def test_every_named_query_runs_with_its_parameters(filled):
    circuit, store = filled
    for name, frame in run_every_named_query(circuit, store).items():
        assert len(frame) > 0, name
    pairs = run_query("consistent_pairs", {}, store)
    assert (pairs["head"] == f"L{circuit.head_layer}H{circuit.head}").any()
    head = run_query("head", {"head_layer": str(circuit.head_layer), "head": str(circuit.head)}, store)  # text becomes numbers
    assert head[["layer", "neuron"]].values.tolist()[0] == [circuit.layer, circuit.neuron]
    # Which neurons the trigger in the context switches on, through which head: the planted pair, confirmed.
    reading = run_query("context_token", {"context_token": planted.TRIGGER}, store)
    assert reading[["layer", "neuron", "head_layer", "head"]].values.tolist()[0] == list(circuit.key) and reading["confirmed"][0]
    reads = run_query("head_reads", dict(zip(("layer", "neuron", "head_layer", "head"), circuit.key)), store)
    assert reads["token"][0].strip() == planted.TRIGGER


def test_sql_reads_and_writes_are_refused(filled):
    _, store = filled
    assert run_query("SELECT count(*) AS n FROM head_attributions", None, store)["n"][0] > 0
    assert len(run_query("FROM heads_by_layer", None, store)) == 3
    for statement in [
        "DROP TABLE neurons", "DELETE FROM neurons", "CREATE TABLE x AS SELECT 1", "SELECT 1; UPDATE neurons SET score = 0",
        "ATTACH 'x.db'", "COPY neurons TO 'x.csv'",
    ]:
        with pytest.raises(QueryError, match="only reads"):
            run_query(statement, None, store)
    assert store.query("SELECT count(*) AS n FROM neurons")["n"][0] > 0  # nothing was touched


def test_missing_parameters_unknown_names_and_bad_sql_are_clear(filled):
    _, store = filled
    with pytest.raises(QueryError, match=r"needs --param layer=\.\.\., --param neuron=\.\.\."):
        run_query("neuron", {}, store)
    with pytest.raises(QueryError, match="No named query 'nope'"):
        run_query("nope", {}, store)
    with pytest.raises(QueryError, match="does not parse"):
        run_query("SELEC 1", {}, store)


def test_the_command_line(filled, tmp_path):
    circuit, store = filled
    env = {"LOOKUPS_DATA_DIR": str(store.path.parent)}
    import os

    def lookups(*args):
        return subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "query", *args], capture_output=True, text=True, env={**os.environ, **env})

    listed = lookups("--list")
    assert listed.returncode == 0 and all(name in listed.stdout for name in named_queries())
    out = lookups("neurons_for_token", "--param", f"token={circuit.target_token}", "--format", "csv")
    assert out.returncode == 0 and out.stdout.splitlines()[1].startswith(f"{circuit.layer},{circuit.neuron},")
    refused = lookups("DROP TABLE neurons")
    assert refused.returncode == 2 and "only reads" in refused.stderr and "Traceback" not in refused.stderr
    help_text = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "query", "--help"], capture_output=True, text=True).stdout
    for flag in ("--list", "--param", "--format", "--output", "--model-id", "--limit"):
        assert flag in help_text


def test_views_answer_the_common_questions(filled):
    circuit, store = filled
    head = run_query("SELECT * FROM head_neurons", None, store)
    planted_row = head[(head["head_layer"] == circuit.head_layer) & (head["head"] == circuit.head)]
    assert planted_row["neuron_ids"].iloc[0][0] == f"L{circuit.layer}N{circuit.neuron}"
    strongest = run_query("SELECT * FROM strongest_neurons_per_layer WHERE layer = $layer AND rank_in_layer = 1", {"layer": circuit.layer}, store)
    assert strongest[["neuron", "token"]].values.tolist() == [[circuit.neuron, circuit.target_token]]
    by_layer = run_query("FROM heads_by_layer ORDER BY head_layer", None, store)
    assert by_layer["consistent_pairs"].sum() == run_query("SELECT count(*) AS n FROM consistent_pairs", None, store)["n"][0]
