"""Results that cannot be damaged silently: files named by their content and never rewritten, a manifest that
records what each held, runs whose writes readers see only once the run succeeded, and damaged files told,
contained to their table, and recomputed by the step that wrote them (docs/data.md, "What a reader sees")."""

import json
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookups.pipeline.steps.base import Computed, PartitionHandle, run_step
from lookups.pipeline.store.asset_versions import AssetVersion
from lookups.pipeline.store.errors import StoreError
from lookups.pipeline.store.manifest import MANIFEST_FILE, Manifests, sha256_of
from lookups.pipeline.store.store import Store

from .test_store import doc_rows


def _entries(store: Store, table: str) -> list:
    return [e for e in store.manifests.published().values() if e.table == table]


def _flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def test_a_write_is_a_new_file_named_by_its_content_and_recorded_with_its_size_rows_and_hash(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    [first] = _entries(store, "documents")
    path = Path(store.root) / first.file
    assert first.rows == 3 and first.bytes == path.stat().st_size and first.sha256 == sha256_of(path)
    assert (first.step, first.scope) == ("prompt_set", "a") and first.sha256[:12] in path.name
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(4, "u"), AssetVersion("prompt_set", "a", "v2", "1", {}))
    [second] = _entries(store, "documents")
    assert second.file != first.file and path.exists()  # the old file is never rewritten: a reader of it reads it whole
    assert len(store.query("SELECT * FROM documents")) == 4  # and the manifest names only the new one


def test_files_no_manifest_names_are_not_read_and_go_after_the_grace_period(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3))
    stray = Path(store.table_dir("documents")) / "part-stray.parquet"
    pq.write_table(pa.Table.from_pandas(doc_rows(5).assign(prompt_set_id="z")), stray)
    assert store.query("SELECT DISTINCT prompt_set_id FROM documents")["prompt_set_id"].tolist() == ["a"]
    os.utime(stray, (time.time() - 7200, time.time() - 7200))
    with store.manifests.locked():
        assert store.manifests.remove_unreferenced() == [stray]


def test_a_runs_writes_are_seen_by_its_steps_and_by_everyone_once_published(tmp_path):
    path = tmp_path / "x.duckdb"
    Store(path).replace("documents", {"prompt_set_id": "a"}, doc_rows(2))  # an earlier, completed run
    run, reader = Store(path, partition="corpus|model"), Store(path)
    run.replace("documents", {"prompt_set_id": "a"}, doc_rows(5), AssetVersion("prompt_set", "a", "v2", "1", {}))
    assert len(run.query("SELECT * FROM documents")) == 5 and run.version("prompt_set", "a").data_version == "v2"
    assert len(reader.query("SELECT * FROM documents")) == 2 and reader.version("prompt_set", "a") is None
    continued = Store(path, partition="corpus|model")  # the next run of the partition, after this one failed
    assert continued.version("prompt_set", "a").data_version == "v2"
    assert continued.publish() == 2 and not list(Path(run.manifests.pending_folder).glob("*.json"))
    assert len(reader.query("SELECT * FROM documents")) == 5 and reader.version("prompt_set", "a").data_version == "v2"


def test_the_views_file_names_the_published_files_only(tmp_path):
    import duckdb

    path = tmp_path / "x.duckdb"
    Store(path).replace("documents", {"prompt_set_id": "a"}, doc_rows(2))
    run = Store(path, partition="p")
    run.replace("documents", {"prompt_set_id": "a"}, doc_rows(6))
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 2
    run.publish()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM documents").fetchone()[0] == 6


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_a_damaged_file_fails_only_reads_of_its_table_in_one_line_and_its_step_computes_again(tmp_path, damage):
    store = Store(tmp_path / "x.duckdb")
    computes = []

    def compute(rows: int) -> Computed:
        computes.append(rows)
        return Computed([("documents", {"prompt_set_id": "a"}, doc_rows(rows))], {"documents": rows})

    def handle(version, stats):
        return PartitionHandle(data_version=version, stats=stats, model_id="m", prompt_set_id="a")

    def step():
        return run_step(store, "prompt_set", "a", ("f",), lambda: compute(40), handle)

    step()
    store.replace("ablation_tests", {"model_id": "m", "prompt_set_id": "a"}, pd.DataFrame([{"metric": "act_drop", "n_active": 1, "n_inactive": 1}]))
    assert step().skipped
    [entry] = _entries(store, "documents")
    path = Path(store.root) / entry.file
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: entry.bytes // 2])
    else:
        _flip_bit(path, entry.bytes // 3)
    with pytest.raises(StoreError) as err:
        Store(store.path).query("SELECT count(*) FROM documents")
    message = str(err.value)
    assert "\n" not in message and entry.file in message and "`lookups run` recomputes it" in message
    assert len(Store(store.path).query("SELECT * FROM ablation_tests")) == 1  # other tables read as before
    assert Store(store.path).damaged("prompt_set", "a")
    again = step()
    assert not again.skipped and computes == [40, 40] and entry.file in again.warning and "computes again" in again.warning
    assert not store.damaged("prompt_set", "a") and len(Store(store.path).query("SELECT * FROM documents")) == 40


def test_a_damaged_version_record_makes_its_step_compute_again(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(1), AssetVersion("prompt_set", "a", "v1", "1", {}))
    [entry] = _entries(store, "asset_versions")
    (Path(store.root) / entry.file).write_bytes(b"PAR1")
    assert store.version("prompt_set", "a") is None


def test_the_files_carry_parquet_page_checksums(tmp_path):
    """DuckDB does not check them; pyarrow readers (`lookups query`, a notebook) do, so a flipped bit in a page
    is an error there even without the manifest."""
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3000, "some text " * 20))
    [entry] = _entries(store, "documents")
    path = Path(store.root) / entry.file
    meta = pq.ParquetFile(path).metadata.row_group(0)
    column = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "doc_id")
    _flip_bit(path, column.data_page_offset + column.total_compressed_size // 2)
    with pytest.raises(OSError, match="CRC"):
        pq.read_table(path, page_checksum_verification=True)


def test_verify_lists_the_damage_and_repair_drops_it_with_the_version_records_that_depend_on_it(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    store.replace("documents", {"prompt_set_id": "b"}, doc_rows(2), AssetVersion("prompt_set", "b", "v1", "1", {}))
    clean = store.verify()
    assert clean.files == 4 and not clean.damaged and clean.bytes > 0
    [a] = [e for e in _entries(store, "documents") if e.scope == "a"]
    (Path(store.root) / a.file).unlink()
    found = Store(store.path).verify()
    assert [entry.file for entry, _ in found.damaged] == [a.file] and found.recomputed() == ["prompt_set (a)"]
    Store(store.path).drop_damaged()
    after = Store(store.path)
    assert after.query("SELECT DISTINCT prompt_set_id FROM documents")["prompt_set_id"].tolist() == ["b"]
    assert after.version("prompt_set", "a") is None and after.version("prompt_set", "b") is not None


def test_a_store_written_before_manifests_is_adopted_as_it_is(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    root = Path(store.root)
    for entry in store.manifests.published().values():  # the older layout: part-<key hash>.parquet, no manifest
        (root / entry.file).rename(root / entry.table / (entry.file.split("/")[1].split(".")[0] + ".parquet"))
    (root / MANIFEST_FILE).unlink()
    adopted = Store(store.path)
    assert len(adopted.query("SELECT * FROM documents")) == 3 and adopted.version("prompt_set", "a").data_version == "v1"
    assert json.loads((root / MANIFEST_FILE).read_text())["entries"]


def test_manifests_name_partitions_of_any_shape(tmp_path):
    manifests = Manifests(tmp_path)
    odd = "corpus with spaces/and:colons|model@/tmp/x y"
    manifests.record({}, odd)
    assert list(manifests.pending_partitions()) == [odd]


def test_a_damaged_log_file_is_left_out_of_reads_listed_by_verify_and_dropped_by_repair_alone(tmp_path):
    store = Store(tmp_path / "x.duckdb")
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(3), AssetVersion("prompt_set", "a", "v1", "1", {}))
    for key in ("k1", "k2"):
        store.append("llm_calls", pd.DataFrame([{"cache_key": key, "run_id": "r", "backend": "b", "llm_model": "m", "template_version": "t",
                                                 "purpose": "explain", "status": "ok", "prompt_tokens": 1, "completion_tokens": 1, "seconds": 0.1}]))
    first = next(e for e in _entries(store, "llm_calls") if "k1" in pd.read_parquet(Path(store.root) / e.file)["cache_key"].tolist())
    (Path(store.root) / first.file).unlink()
    reader = Store(store.path)
    assert reader.query("SELECT cache_key FROM llm_calls")["cache_key"].tolist() == ["k2"]  # a cache reads well without the lost rows
    assert [entry.file for entry in reader.verify().unowned()] == [first.file]
    reader.drop_damaged()
    assert not Store(store.path).verify().damaged and Store(store.path).version("prompt_set", "a") is not None
