"""The reports over every shape of store a user's settings can produce: the summary, the atlas and the
``explanation_findings`` query must not crash after the work is done, whichever cohort is absent, whichever
result table is empty, whichever value is NULL (a store with no results at all: tests/unit/report/test_report_shapes.py).

Real runs of the planted circuit under several catalog settings (one, two and three neurons per layer, with
and without random-baseline neurons) give the starting stores; hypothesis then removes a cohort's rows
and empties result tables from copies of them, which is what other settings, budgets and corpora leave.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from chains import data_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookups.assets.runner import run_partition
from lookups.pipeline.config import AtlasSettings
from lookups.pipeline.inputs import planted
from lookups.pipeline.report.atlas import render_atlas
from lookups.pipeline.report.summary import print_summary
from lookups.pipeline.steps.atlas import load_atlas_data
from lookups.pipeline.store.manifest import MANIFEST_FILE, Manifests
from lookups.pipeline.store.sql_files import SCHEMA_FILE, TABLES
from lookups.pipeline.store.store import Store

#: (neurons per layer, random neurons per layer); the run that crashed the summary was (3, default).
CATALOGS = [(1, 0), (2, 3), (3, 3)]
#: Tables emptied by hypothesis: everything after the inputs (an empty `models` is "no model yet", tested apart).
EMPTIABLE = [t for t in TABLES if t not in ("models", "prompt_sets", "documents", "corpus_reads", "llm_calls")]


@pytest.fixture(scope="module", params=CATALOGS, ids=[f"{n}-per-layer-{r}-random" for n, r in CATALOGS])
def finished_run(request, tmp_path_factory):
    """A finished planted run (contrastive explainer) under one catalog setting: its data folder and keys."""
    folder = tmp_path_factory.mktemp("run")
    neurons, random_neurons = request.param
    circuit = planted.build_planted_circuit(folder / "planted")
    config = circuit.run_config()
    config["ops"]["neuron_catalog"]["config"].update(neurons_per_layer=neurons, random_per_layer=random_neurons)
    config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}
    with data_dir(folder / "data"), dg.DagsterInstance.ephemeral() as instance:
        assert run_partition(instance, config).success
        keys = Store().query("SELECT model_id, prompt_set_id FROM prompt_sets, models").iloc[0].to_dict()
    return folder / "data", keys


def _rewrite(tables: Path, table: str, keep) -> None:
    """Rewrite each file of ``table`` the manifest names keeping the rows ``keep(frame)`` selects (its schema file
    stays); the store adopts the edited files as they are once the manifest is gone (``_adopt_edits``)."""
    for entry in Manifests(tables).published().values():
        if entry.table == table:
            frame = pd.read_parquet(tables / entry.file)
            frame[keep(frame)].to_parquet(tables / entry.file, index=False)


def _adopt_edits(tables: Path) -> None:
    """Files edited by hand no longer hold what was written: without a manifest the store adopts them as they are."""
    (tables / MANIFEST_FILE).unlink()


def _drop_cohort(tables: Path, cohort: str) -> None:
    for table in TABLES:
        columns = pd.read_parquet(tables / table / SCHEMA_FILE).columns
        if "cohort" in columns:
            _rewrite(tables, table, lambda f: f["cohort"] != cohort)
    if cohort == "random":
        _rewrite(tables, "neurons", lambda f: ~f["random_baseline"].fillna(False))
    else:
        _rewrite(tables, "neurons", lambda f: ~f["selected"])


def _report(data: Path, keys: dict) -> str:
    """The three reports on the store in ``data``; the summary's text."""
    with data_dir(data):
        store = Store()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            print_summary(store, keys["model_id"], keys["prompt_set_id"])
        findings = store.named_query("explanation_findings", **keys)
        assert set(findings.columns) >= {"explainer", "scorer", "measure", "baseline", "n", "mean", "difference", "permutation_p", "signal"}
        atlas = load_atlas_data(store, keys["model_id"], keys["prompt_set_id"])
        page = render_atlas(atlas, lambda ids: [f"<{i}>" for i in ids], AtlasSettings(), {})
        assert page.startswith("<!DOCTYPE html>") and keys["prompt_set_id"] in page
    return out.getvalue()


def test_the_finished_runs_report(finished_run):
    data, keys = finished_run
    text = _report(data, keys)
    assert "strongest next-token neurons" in text and "look-ups" in text and "explanations contrastive" in text


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dropped=st.sets(st.sampled_from(["next_token", "random"])), emptied=st.sets(st.sampled_from(EMPTIABLE), max_size=6))
def test_any_cohort_missing_and_any_table_empty_still_reports(finished_run, dropped, emptied):
    data, keys = finished_run
    with tempfile.TemporaryDirectory() as copy:
        copied = Path(copy) / "data"
        shutil.copytree(data / "lookups_tables", copied / "lookups_tables")
        for cohort in dropped:
            _drop_cohort(copied / "lookups_tables", cohort)
        for table in emptied:
            _rewrite(copied / "lookups_tables", table, lambda f: f.index < 0)
        _adopt_edits(copied / "lookups_tables")
        text = _report(copied, keys)
    assert "model        " in text and "results      " in text and "Traceback" not in text
