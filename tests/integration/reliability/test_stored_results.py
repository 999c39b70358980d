"""Stored results, damaged or half-replaced, on a finished planted run (docs/data.md, "What a reader sees"):
a rerun recomputes exactly the damaged steps and ends with the tables of the run never damaged; a damaged file
fails only the reads of its table; a failed run leaves every reader on the last completed run, and the next run
continues it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from chains import data_dir
from store_rows import tables_as_text

from lookups.assets.runner import run_partition
from lookups.pipeline.inputs import planted
from lookups.pipeline.store.store import Store


def _config(circuit, **explanations) -> dict:
    config = circuit.run_config()
    config["ops"]["explanations"] = {"config": {"backend": "contrastive", **explanations}}
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished planted run: (circuit, its data folder, its tables)."""
    folder = tmp_path_factory.mktemp("finished")
    circuit = planted.build_planted_circuit(folder / "planted")
    with data_dir(folder / "data"), dg.DagsterInstance.ephemeral() as instance:
        assert run_partition(instance, _config(circuit)).success
        tables = tables_as_text(Store())
    return circuit, folder / "data", tables


def _copy(data: Path, tmp_path: Path) -> Path:
    copied = tmp_path / "copy"
    shutil.copytree(data, copied)
    return copied


def _damage(store: Store, table: str, how: str) -> str:
    entry = next(e for e in store.manifests.published().values() if e.table == table)
    path = Path(store.root) / entry.file
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: entry.bytes // 2])
    else:  # three flipped bits, as a bad disk or a bad copy makes
        data = bytearray(path.read_bytes())
        for offset in (entry.bytes // 4, entry.bytes // 2, 3 * entry.bytes // 4):
            data[offset] ^= 0x10
        path.write_bytes(bytes(data))
    return entry.file


def _skipped(result) -> dict[str, bool]:
    """Each materialized asset's 'skipped (unchanged inputs)'."""
    out = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = materialization.metadata["skipped (unchanged inputs)"].value
    return out


@pytest.mark.parametrize("table, how, step", [
    ("head_attributions", "delete", "head_attributions"),
    ("head_attributions", "truncate", "head_attributions"),
    ("neurons", "flip", "neuron_catalog"),
    ("neuron_exemplars", "truncate", "neuron_exemplars"),
])
def test_a_rerun_recomputes_the_damaged_step_and_ends_with_the_undamagedtables_as_text(finished, tmp_path, table, how, step):
    circuit, data, tables = finished
    copied = _copy(data, tmp_path)
    with data_dir(copied), dg.DagsterInstance.ephemeral() as instance:
        damaged = _damage(Store(), table, how)
        with pytest.raises(Exception, match=f"{table} is damaged: {damaged}"):
            Store().query(f"SELECT count(*) FROM {table}")
        assert len(Store().query("SELECT * FROM models")) == 1  # the other tables read as before
        result = run_partition(instance, _config(circuit))
        assert result.success  # every blocking check too (lookups_identity reads the attributions)
        skipped = _skipped(result)
        assert not skipped[step] and skipped["model"] and skipped["explanation_scores"]
        assert Store().damaged(step, Store().manifests.published()[next(
            s for s, e in Store().manifests.published().items() if e.table == table)].scope) == []
        after = tables_as_text(Store())
    assert after == tables


def test_the_summary_of_a_store_with_a_damaged_file_is_one_line_and_verify_says_what_a_rerun_recomputes(finished, tmp_path):
    _, data, _ = finished
    copied = _copy(data, tmp_path)
    with data_dir(copied):
        damaged = _damage(Store(), "head_attributions", "truncate")
    env = {"LOOKUPS_DATA_DIR": str(copied), "PATH": str(Path(sys.executable).parent)}
    summary = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "summary"], capture_output=True, text=True, env=env)
    assert summary.returncode == 2 and "Traceback" not in summary.stderr
    assert summary.stderr.strip().count("\n") == 0 and damaged in summary.stderr
    verify = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "verify"], capture_output=True, text=True, env=env)
    assert verify.returncode == 1 and damaged in verify.stdout and "computes again: head_attributions (" in verify.stdout


def test_a_failed_run_leaves_readers_on_the_last_completed_run_and_the_next_run_continues_it(finished, tmp_path, monkeypatch):
    circuit, data, tables = finished
    copied = _copy(data, tmp_path)
    monkeypatch.delenv("LOOKUPS_LLM_BASE_URL", raising=False)
    with data_dir(copied), dg.DagsterInstance.ephemeral() as instance:
        changed = _config(circuit, backend="openai")  # fails at the explanations: no endpoint
        changed["ops"]["prompt_set"]["config"]["max_documents"] = 30  # another prompt set: new rows in every table after it
        failed = run_partition(instance, changed)
        assert not failed.success
        assert _skipped(failed)["neuron_exemplars"] is False  # computed for the new prompt set, then the run failed
        assert tables_as_text(Store()) == tables  # every reader: the last completed run, whole
        assert Store().verify().pending  # the failed run's finished steps wait for its next run
        changed["ops"]["explanations"]["config"]["backend"] = "contrastive"
        continued = run_partition(instance, changed)
        assert continued.success
        skipped = _skipped(continued)
        assert skipped["neuron_exemplars"] and skipped["head_attributions"] and not skipped["explanations"]
        assert not Store().verify().pending
        documents = Store().query("SELECT prompt_set_id, count(*) AS n FROM documents GROUP BY 1 ORDER BY n")
    assert documents["n"].tolist() == [30, 48]  # both prompt sets, each whole


def test_a_copied_data_folders_views_file_names_the_copys_files_after_any_command_reads_it(finished, tmp_path):
    import duckdb

    _, data, _ = finished
    copied = _copy(data, tmp_path)
    env = {"LOOKUPS_DATA_DIR": str(copied), "PATH": str(Path(sys.executable).parent)}

    def views_sql() -> str:
        with duckdb.connect(str(copied / "lookups.duckdb"), read_only=True) as con:
            return " ".join(sql for (sql,) in con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall())

    assert str(data) in views_sql()  # as copied: the original's files
    query = subprocess.run([sys.executable, "-m", "lookups.pipeline.cli", "query", "SELECT count(*) AS n FROM neurons"],
                           capture_output=True, text=True, env=env)
    assert query.returncode == 0, query.stderr
    assert str(data) + "/" not in views_sql() and str(copied) in views_sql()


def test_a_run_launched_without_lookups_run_is_published_by_the_run_status_sensor(finished, tmp_path):
    """The UI and the automation sensor launch runs that `lookups run` does not wrap: the sensor publishes them."""
    from lookups.assets.automation import publish_successful_runs
    from lookups.assets.definitions import defs
    from lookups.assets.runner import prepare_partition

    circuit, data, _ = finished
    copied = _copy(data, tmp_path)
    with data_dir(copied), dg.DagsterInstance.ephemeral() as instance:
        config = _config(circuit)
        config["ops"]["prompt_set"]["config"]["max_documents"] = 20  # a new prompt set
        run_config, key = prepare_partition(instance, config)
        result = defs.resolve_job_def("lookups").execute_in_process(run_config=run_config, instance=instance, partition_key=key)
        assert result.success
        sizes = "SELECT count(DISTINCT prompt_set_id) AS n FROM documents"
        assert Store().query(sizes)["n"][0] == 1  # not published yet: readers see the last completed run
        [success] = [e.dagster_event for e in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)]
        context = dg.build_run_status_sensor_context(
            sensor_name="publish_successful_runs", dagster_event=success, dagster_instance=instance, dagster_run=result.dagster_run,
        )
        publish_successful_runs(context)
        assert Store().query(sizes)["n"][0] == 2 and not Store().verify().pending
