"""The DuckDB store: schema, idempotent keyed writes, atomicity, versions, read-only access."""

import subprocess
import sys
from contextlib import contextmanager

import duckdb
import pandas as pd
import pytest

from lookups.pipeline.store import AssetVersion, Store, StoreError, named_queries, sql_text


def doc_rows(n, text="t"):
    return pd.DataFrame(
        {"doc_id": [f"d{i}" for i in range(n)], "doc_index": range(n), "source_id": "s", "title": "x", "passage_index": 0, "split": "explain", "text": text, "n_chars": 1}
    )


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


@contextmanager
def file_held_by_another_process(path, seconds: float):
    """A second process opens the DuckDB file and holds it for ``seconds`` (then closes it)."""
    Store(path).query("SELECT 1", read_only=False)
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


def test_a_locked_database_is_a_clear_error(tmp_path):
    path = tmp_path / "x.duckdb"
    with file_held_by_another_process(path, 60):
        with pytest.raises(StoreError, match="locked by another process"):
            Store(path, lock_wait_s=0.5).query("SELECT 1", read_only=False)
        with pytest.raises(StoreError, match="locked by another process"):
            Store(path, lock_wait_s=0.5).query("SELECT 1")


def test_a_write_waits_while_another_process_holds_the_file_briefly(tmp_path):
    """Parallel steps of one run (e.g. ablation and explanations) each hold the file only for a short write:
    a step that finds it held waits, and its rows arrive."""
    path = tmp_path / "x.duckdb"
    with file_held_by_another_process(path, 2):
        frame = pd.DataFrame([{"name": "m", "origin": "local", "fingerprint": "f", "n_layers": 1, "n_heads": 1, "n_kv_heads": 1, "d_model": 1, "d_head": 1,
                               "d_mlp": 1, "d_vocab": 1, "n_ctx": 1, "act_fn": "gelu", "mlp_kind": "ungated", "normalization": "LN", "bos_token_id": 0}])
        Store(path, lock_wait_s=30).replace("models", {"model_id": "m@1"}, frame)
        assert Store(path).query("SELECT model_id FROM models")["model_id"].tolist() == ["m@1"]

