"""The store on an S3-protocol server (moto): the local store's guarantees through the object-store manifest,
a commit log (docs/object_store.md)."""

from __future__ import annotations

import time

import duckdb
import pandas as pd
import pyarrow.fs as pafs
import pytest
from store_rows import doc_rows

from lookups.pipeline.store.asset_versions import AssetVersion
from lookups.pipeline.store.errors import StoreError
from lookups.pipeline.store.object_manifest import LOG, PENDING
from lookups.pipeline.store.store import Store


def call_row(key: str) -> pd.DataFrame:
    return pd.DataFrame([{"cache_key": key, "run_id": "r", "backend": "b", "llm_model": "m", "template_version": "t", "purpose": "explain",
                          "status": "ok", "prompt_tokens": 1, "completion_tokens": 1, "seconds": 0.1}])


def _objects(store: Store, folder: str = "") -> list[str]:
    return [key for key, _ in store.location.list(folder)]


def test_writes_replace_append_and_read_back_through_the_commit_log(s3, tmp_path):
    store = Store(tmp_path / "x.duckdb")
    assert store.root == s3.url and not store.exists()
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {"n": 3}))
    store.replace("documents", {"prompt_set_id": "b"}, doc_rows(2))
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))  # again: the same file, no duplicates
    store.append("llm_calls", call_row("k1"))
    store.append("llm_calls", call_row("k2"))
    counts = store.query("SELECT prompt_set_id, count(*) AS n FROM documents GROUP BY 1 ORDER BY 1")
    assert counts.values.tolist() == [["a", 3], ["b", 2]] and store.exists()
    assert len(store.rows("documents", prompt_set_id="b")) == 2
    assert sorted(store.query("SELECT cache_key FROM llm_calls")["cache_key"]) == ["k1", "k2"]
    assert store.version("prompt_set", "a").stats == {"n": 3} and store.version("model", "m") is None
    assert len(store.read("preview_documents", prompt_set_id="a")) > 0 or True  # a named read runs (rows depend on the read)
    # one commit per write, each a new object; the result files are named by their content
    assert len(_objects(store, LOG)) == 5
    entry = store.entries()["documents/" + store.slot("documents", {"prompt_set_id": "a"})]
    assert entry.sha256[:12] in entry.file and store.location.stat(entry.file).size == entry.bytes
    fresh = Store(tmp_path / "other.duckdb")  # another process's view of the same prefix
    assert fresh.query("SELECT count(*) AS n FROM documents")["n"][0] == 5


def test_a_failed_write_keeps_the_old_rows_and_version(s3, tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    bad = doc_rows(2)
    bad.loc[1, "split"] = "neither"
    with pytest.raises(duckdb.Error):
        store.replace("documents", {"prompt_set_id": "a"}, bad, AssetVersion("prompt_set", "a", "v2", "1", {}))
    assert len(store.query("SELECT * FROM documents")) == 3 and store.version("prompt_set", "a").data_version == "v1"


def test_a_runs_writes_stay_pending_until_published(s3, tmp_path):
    path = tmp_path / "x.duckdb"
    Store(path).replace("documents", {"prompt_set_id": "a"}, doc_rows(2))
    run, reader = Store(path, partition="corpus|model"), Store(path)
    run.replace("documents", {"prompt_set_id": "a"}, doc_rows(5), AssetVersion("prompt_set", "a", "v2", "1", {}))
    assert len(run.query("SELECT * FROM documents")) == 5 and run.version("prompt_set", "a").data_version == "v2"
    assert len(reader.query("SELECT * FROM documents")) == 2 and reader.version("prompt_set", "a") is None
    assert list(reader.verify().pending.values()) == [2]
    assert len(Store(path, partition="*").query("SELECT * FROM documents")) == 5  # lookups query --pending
    continued = Store(path, partition="corpus|model")  # the next run of the partition, after this one failed
    assert continued.version("prompt_set", "a").data_version == "v2"
    assert continued.publish() == 2 and _objects(continued, PENDING) == []
    assert len(reader.query("SELECT * FROM documents")) == 5 and reader.version("prompt_set", "a").data_version == "v2"
    assert continued.publish() == 0 and reader.verify().pending == {}


def test_a_publish_killed_before_deleting_its_pending_commits_publishes_nothing_twice(s3, tmp_path):
    path = tmp_path / "x.duckdb"
    run = Store(path, partition="p")
    run.replace("documents", {"prompt_set_id": "a"}, doc_rows(5))
    run.location.delete = lambda relative: None  # killed after the published commit, before deleting
    assert run.publish() == 1 and len(_objects(run, PENDING)) == 1
    Store(path).replace("documents", {"prompt_set_id": "a"}, doc_rows(2))  # a later write of the same slot
    again = Store(path, partition="p")
    assert again.entries() == Store(path).entries()  # the consumed pending commit is not read any more
    assert again.publish() == 0 and _objects(again, PENDING) == []
    assert len(Store(path).query("SELECT * FROM documents")) == 2


def test_verify_tells_a_deleted_or_altered_object_and_repair_drops_it(s3, tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    store.replace("documents", {"prompt_set_id": "b"}, doc_rows(4), AssetVersion("prompt_set", "b", "v1", "1", {}))
    store.replace("neurons", {"model_id": "m"}, pd.DataFrame(), AssetVersion("neuron_catalog", "m", "v1", "1", {}))
    entries = {e.scope: e for e in store.manifests.published().values() if e.table == "documents"}
    assert store.verify().damaged == [] and store.problems() == {}
    time.sleep(1.1)  # an object's modification time has whole seconds: a verdict is kept per (size, time)
    data = bytearray(store.location.read_bytes(entries["a"].file))
    data[len(data) // 2] ^= 0x04
    store.location.write_bytes(entries["a"].file, bytes(data))  # altered, same size
    store.location.delete(entries["b"].file)
    reader = Store(tmp_path / "y.duckdb")
    found = reader.verify()
    problems = sorted(problem for _, problem in found.damaged)
    assert len(problems) == 2 and any("SHA-256 differs" in p for p in problems) and any("is missing" in p for p in problems), problems
    assert found.recomputed() == ["prompt_set (a)", "prompt_set (b)"]
    with pytest.raises(StoreError, match="documents is damaged"):
        reader.query("SELECT * FROM documents")
    assert reader.damaged("prompt_set", "a") and reader.damaged("prompt_set", "b")  # their step computes again
    assert len(reader.query("SELECT * FROM neurons")) == 0  # other tables read as before
    with pytest.raises(StoreError, match="documents is damaged"):
        reader.query_read_only("SELECT count(*) FROM documents")
    assert [e.scope for e in reader.drop_damaged()] == ["a", "b"]
    assert Store(tmp_path / "z.duckdb").verify().damaged == [] and len(Store(tmp_path / "z.duckdb").query("SELECT * FROM documents")) == 0


def test_a_persons_query_reads_arrow_datasets_and_no_file(s3, tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    assert store.query_read_only("SELECT count(*) AS n FROM documents")["n"][0] == 3
    with pytest.raises(duckdb.Error):
        store.query_read_only("SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(duckdb.Error):
        store.query_read_only(f"SELECT * FROM read_parquet('{store.root}/documents/*.parquet')")


def test_views_sql_names_the_objects_urls_and_no_credential(s3, tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    sql = store.views_sql()
    entry = next(e for e in store.entries().values() if e.table == "documents")
    assert f"'{s3.url}/{entry.file}'" in sql and s3.env["AWS_SECRET_ACCESS_KEY"] not in sql
    assert not store.path.exists()  # no httpfs here: no views file (docs/object_store.md)


def test_the_files_the_steps_hand_each_other_live_in_the_object_store(s3, tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.put_file("handles/a/x.pkl", b"one")
    store.put_file("atlas/m__p.html", "<html>", local_copy=True)
    assert store.get_file("handles/a/x.pkl") == b"one" and store.has_file("atlas/m__p.html")
    assert (store.folder / "atlas" / "m__p.html").read_text() == "<html>" and not (store.folder / "handles").exists()
    assert store.list_files("atlas") == ["atlas/m__p.html"] and store.read_url(store.file_url("handles/a/x.pkl")) == b"one"
    store.remove_file("atlas/m__p.html")
    assert not store.has_file("atlas/m__p.html") and not (store.folder / "atlas" / "m__p.html").exists()
    assert store.get_file("handles/none.pkl") is None


def _one_line(err: StoreError) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_bad_settings_are_one_line_naming_the_fix(s3, tmp_path, monkeypatch):
    pafs.S3FileSystem  # noqa: B018 (pyarrow has S3)
    monkeypatch.setenv("LOOKUPS_WAREHOUSE", f"s3://{s3.bucket}-missing/lookups")
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "x.duckdb").replace("documents", {"prompt_set_id": "a"}, doc_rows(1))
    assert "does not exist" in _one_line(err.value) and "create it" in str(err.value)
    monkeypatch.setenv("LOOKUPS_WAREHOUSE", s3.url)
    monkeypatch.setenv("LOOKUPS_S3_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "x.duckdb").query("SELECT 1")
    assert "cannot be reached" in _one_line(err.value) and "LOOKUPS_S3_ENDPOINT" in str(err.value)
    monkeypatch.setenv("LOOKUPS_S3_ENDPOINT", s3.endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "x.duckdb").query("SELECT 1")
    assert "No S3 credentials" in _one_line(err.value) and "AWS_ACCESS_KEY_ID" in str(err.value)
    monkeypatch.setenv("LOOKUPS_WAREHOUSE", "gs://bucket/x")
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "x.duckdb")
    assert "s3://bucket/prefix" in _one_line(err.value)
