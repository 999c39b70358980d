"""The DuckDB store: schema, idempotent keyed writes, atomicity, versions, read-only access."""

import subprocess
import sys
from contextlib import contextmanager

import duckdb
import pandas as pd
import pytest
from store_rows import WRITER, doc_rows

from lookups.pipeline.store.asset_versions import AssetVersion
from lookups.pipeline.store.errors import StoreError
from lookups.pipeline.store.sql_files import named_queries, sql_text
from lookups.pipeline.store.store import Store


def test_replace_is_idempotent_and_keyed(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    store.replace("documents", {"prompt_set_id": "b"}, doc_rows(2))
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))  # again: same rows, no duplicates
    counts = store.query("SELECT prompt_set_id, count(*) AS n FROM documents GROUP BY 1 ORDER BY 1")
    assert counts.values.tolist() == [["a", 3], ["b", 2]]


def test_failed_write_keeps_the_old_rows_and_version(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    bad = doc_rows(2)
    bad.loc[1, "split"] = "neither"  # violates the CHECK constraint mid-insert
    with pytest.raises(duckdb.Error):
        store.replace("documents", {"prompt_set_id": "a"}, bad, AssetVersion("prompt_set", "a", "v2", "1", {}))
    assert len(store.query("SELECT * FROM documents")) == 3
    assert store.version("prompt_set", "a").data_version == "v1"


def test_versions_round_trip(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    assert store.version("model", "m") is None
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(1), AssetVersion("prompt_set", "a", "v1", "1", {"n": 1}))
    assert store.version("prompt_set", "a").stats == {"n": 1}


def test_read_only_without_a_database_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="No results yet"):
        Store(tmp_path / "missing.duckdb").query("SELECT 1")


def test_sql_files_ship_with_the_package():
    assert "CREATE TABLE IF NOT EXISTS neuron_exemplars" in sql_text("schema.sql")
    assert {"summary_counts", "strongest_neurons"} <= set(named_queries())
    with pytest.raises(StoreError):
        sql_text("nope.sql")


MODEL_ROW = {"name": "m", "origin": "local", "fingerprint": "f", "n_layers": 1, "n_heads": 1, "n_kv_heads": 1, "d_model": 1, "d_head": 1,
             "d_mlp": 1, "d_vocab": 1, "n_ctx": 1, "act_fn": "gelu", "mlp_kind": "ungated", "normalization": "LN", "bos_token_id": 0}


@contextmanager
def file_held_by_another_process(path, seconds: float):
    """A second process opens the DuckDB views file for writing and holds it for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('open', flush=True); time.sleep({seconds}); c.close()"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_a_client_holding_the_views_file_blocks_neither_writes_nor_queries(tmp_path):
    """Steps write Parquet files and query through an in-memory DuckDB: a notebook or duckdb CLI holding the
    views file open for writing stops neither. Refreshing the views file itself says why it cannot."""
    path = tmp_path / "x.duckdb"
    store = Store(path)
    store.replace("models", {"model_id": "m@1"}, pd.DataFrame([MODEL_ROW]))
    with file_held_by_another_process(path, 60):
        Store(path).replace("models", {"model_id": "m@2"}, pd.DataFrame([MODEL_ROW]))
        assert sorted(Store(path).query("SELECT model_id FROM models")["model_id"]) == ["m@1", "m@2"]
        with pytest.raises(StoreError, match="locked by another process"):
            Store(path).refresh_views_file(wait_s=0.5)


def test_the_views_file_answers_sql_from_other_clients(tmp_path):
    path = tmp_path / "x.duckdb"
    store = Store(path)
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    store.replace("documents", {"prompt_set_id": "b"}, doc_rows(2))  # written after the views file exists
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 5
        assert con.execute("SELECT count(*) FROM heads_by_layer").fetchone()[0] == 0  # views.sql, over empty tables




def test_parallel_writers_lose_nothing_and_readers_see_whole_files(tmp_path):
    """Two processes write the same tables at once (different keys, as two partitions do) while this one
    reads: no lock error, every row arrives, and every read sees whole 50-row keys."""
    path = tmp_path / "x.duckdb"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "40", "own"]) for name in ("left", "right")]
    store = Store(path)
    while any(w.poll() is None for w in writers):
        sizes = store.query("SELECT prompt_set_id, count(*) AS n FROM documents GROUP BY 1", require_results=False)
        assert set(sizes["n"]) <= {50}
    assert [w.returncode for w in writers] == [0, 0]
    final = store.query("SELECT prompt_set_id, count(*) AS n, max(text) AS text FROM documents GROUP BY 1 ORDER BY 1")
    assert final["prompt_set_id"].tolist() == [f"{n}-{k}" for n in ("left", "right") for k in range(5)]
    assert set(final["n"]) == {50} and set(final["text"]) == {
        "left 39", "right 39", "left 38", "right 38", "left 37", "right 37", "left 36", "right 36", "left 35", "right 35"
    }
    assert store.query("SELECT count(*) AS n FROM llm_calls")["n"][0] == 80


def test_the_views_sql_makes_any_duckdb_a_reader_of_the_results(tmp_path):
    """What `lookups views-sql` prints (for MotherDuck or a notebook) answers like the store."""
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    with duckdb.connect() as con:
        con.execute(store.views_sql())
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 3
        assert con.execute("SELECT count(*) FROM explanation_findings").fetchone()[0] == 0


def test_every_connection_runs_the_setup_sql(tmp_path, monkeypatch):
    """LOOKUPS_DUCKDB_SETUP (credentials for an object store, say) runs on every connection the store opens."""
    monkeypatch.setenv("LOOKUPS_DUCKDB_SETUP", "CREATE MACRO lookups_setup_ran() AS 42")
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(1))
    assert store.query("SELECT lookups_setup_ran() AS n")["n"][0] == 42


def test_a_version_record_is_read_on_a_connection_that_is_closed(tmp_path, monkeypatch):
    """Reading a step's version record opens one connection and closes it: a step that checks its version
    on every run leaks nothing."""
    from lookups.pipeline.store import store as store_module

    store = Store(tmp_path / "x.duckdb")
    store.replace_many([], AssetVersion("prompt_set", "a", "v1", "1", {"n": 1}, complete=False))
    opened = []
    real = store_module.connect

    def counting(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(store_module, "connect", counting)
    for _ in range(3):
        found = store.version("prompt_set", "a")
    assert found.data_version == "v1" and found.stats == {"n": 1} and found.complete is False
    assert len(opened) == 3
    for con in opened:
        with pytest.raises(duckdb.ConnectionException):
            con.execute("SELECT 1")


def test_named_reads_take_their_parameters_and_rows_take_only_key_columns(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    assert store.read("prompt_set_documents", prompt_set_id="a", model_id="ignored")["doc_id"].tolist() == ["d0", "d1", "d2"]
    assert len(store.rows("documents", prompt_set_id="a")) == 3 and len(store.rows("documents", prompt_set_id="b")) == 0
    with pytest.raises(StoreError, match="no key column text"):
        store.rows("documents", text="x")
    with pytest.raises(ValueError, match="prompt_set_id"):
        store.read("prompt_set_documents")
