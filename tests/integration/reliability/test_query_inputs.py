"""What a person types at `lookups query` on a real store (the planted chain, explained and scored): `--output` never
replaces a results file or the views file; a parameter that looks like a number stays text unless the query needs a
number (and a number that is not one is one line); the summary's `duckdb -readonly` hint survives a path with spaces.
Where `--output` may write, without a store: tests/unit/store/test_query_output.py."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lookups.pipeline.report.summary import print_summary
from lookups.pipeline.store.queries import QueryError, run_query
from lookups.pipeline.store.store import Store

LOOKUPS = Path(sys.executable).with_name("lookups")


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def data_copy(filled, tmp_path):
    """A copy of the filled data folder, in a folder whose name has a space, and the command run on it."""
    _, store = filled
    data = tmp_path / "my results" / "data"
    shutil.copytree(store.path.parent, data)
    env = {**os.environ, "LOOKUPS_DATA_DIR": str(data)}

    def lookups(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(LOOKUPS), *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)

    assert lookups("query", "SELECT count(*) AS n FROM neurons").returncode == 0  # the views file follows the copy
    return data, lookups


def test_output_into_the_results_or_the_views_file_is_refused(data_copy, tmp_path):
    data, lookups = data_copy
    part = sorted((data / "lookups_tables" / "neurons").glob("part-*.parquet"))[0]
    before = _snapshot(data)
    for target in [part, data / "lookups.duckdb", data / "lookups_tables" / "neurons" / "part-new.parquet", data / "dagster_home" / "x.csv"]:
        refused = lookups("query", "SELECT 1 AS x", "--format", "parquet", "--output", str(target))
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("lookups: --output") and refused.stderr.count("\n") == 1, refused.stderr
    link = tmp_path / "innocent.parquet"
    link.symlink_to(part)
    refused = lookups("query", "SELECT 1 AS x", "--format", "parquet", "--output", str(link))
    assert refused.returncode == 2 and "resolves to" in refused.stderr, refused.stderr
    assert _snapshot(data) == before
    written = lookups("query", "SELECT 1 AS x", "--format", "parquet", "--output", str(tmp_path / "rows.parquet"))
    assert written.returncode == 0 and (tmp_path / "rows.parquet").exists(), written.stderr


@pytest.mark.parametrize("name, param, value", [
    ("neurons_for_token", "token", "42"),
    ("neurons_for_token", "token", "nan"),
    ("neurons_for_token", "token", "1e3"),
    ("context_token", "context_token", " 1990"),
])
def test_a_text_parameter_that_looks_like_a_number_stays_text(filled, name, param, value):
    _, store = filled
    frame = run_query(name, {param: value}, store)
    assert frame.empty  # no such token in the planted vocabulary: no rows, and no Binder error


def test_a_numeric_parameter_still_becomes_a_number(filled):
    circuit, store = filled
    frame = run_query("neuron", {"layer": f" {circuit.layer}", "neuron": str(circuit.neuron)}, store)
    assert len(frame) > 0
    assert len(run_query("strongest_neurons", {"limit": "1"}, store)) == 1


@pytest.mark.parametrize("value", ["abc", "1.5", "nan", ""])
def test_a_numeric_parameter_that_is_not_a_number_is_one_line(filled, value):
    circuit, store = filled
    with pytest.raises(QueryError) as refused:
        run_query("neuron", {"layer": value, "neuron": str(circuit.neuron)}, store)
    message = str(refused.value)
    assert "\n" not in message and "--param layer=" in message and "whole number" in message, message


def test_the_command_line_types_parameters_as_the_query_needs(data_copy):
    _, lookups = data_copy
    for args in (["neurons_for_token", "--param", "token=42"], ["context_token", "--param", "context_token= 1990"]):
        result = lookups("query", *args)
        assert result.returncode == 0 and "Binder" not in result.stderr, result.stderr
    bad = lookups("query", "neuron", "--param", "layer=abc", "--param", "neuron=0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "layer" in bad.stderr, bad.stderr


def test_the_summary_quotes_the_views_file_in_its_duckdb_hint(data_copy):
    data, _ = data_copy
    store = Store(data / "lookups.duckdb", lock_wait_s=10.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(store)
    hint = next(line for line in out.getvalue().splitlines() if "duckdb -readonly" in line)
    words = shlex.split(hint)
    assert words[:2] == ["duckdb", "-readonly"] and words[2] == str(store.path), hint
    assert " " in words[2]  # the case that needs the quotes
