"""The planted circuit end to end (`lookups run`, then `lookups query`, `lookups verify`) with the warehouse on an
S3-protocol server (moto's, an emulator), against the same run on a local warehouse: every step and blocking
check passes, the atlas is built, the tables are equal row for row, and no credential lands anywhere
(docs/object_store.md). The two wall times are printed (`pytest -s`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from store_rows import tables_as_text

from lookups.pipeline.inputs import planted
from lookups.pipeline.store.sql_files import TABLES
from lookups.pipeline.store.store import Store

from .conftest import SECRET_KEY, create_bucket, s3_environment

LOOKUPS = str(Path(sys.executable).with_name("lookups"))
CLEARED = ("LOOKUPS_WAREHOUSE", "LOOKUPS_S3_ENDPOINT", "LOOKUPS_S3_CREDENTIALS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE")


@pytest.fixture(scope="module")
def runs(moto_server, tmp_path_factory):
    """The planted run on a local warehouse, then on s3://<bucket>/lookups: (outputs, wall times, environments)."""
    folder = tmp_path_factory.mktemp("planted-run")
    circuit = planted.build_planted_circuit(folder / "planted")
    config = circuit.run_config()
    config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}
    (folder / "run.yaml").write_text(yaml.safe_dump(config))
    bucket = f"lookups-{uuid.uuid4().hex[:12]}"
    create_bucket(moto_server, bucket)
    base = {name: value for name, value in os.environ.items() if name not in CLEARED}
    envs = {
        "local": {**base, "LOOKUPS_DATA_DIR": str(folder / "local")},
        "s3": {**base, "LOOKUPS_DATA_DIR": str(folder / "s3"), **s3_environment(moto_server, bucket)},
    }
    outputs, seconds = {}, {}
    for name, env in envs.items():
        started = time.perf_counter()
        outputs[name] = subprocess.run([LOOKUPS, "run", "--config", str(folder / "run.yaml")], env=env, capture_output=True, text=True, timeout=1800)
        seconds[name] = time.perf_counter() - started
    print(f"\nplanted run wall time: local warehouse {seconds['local']:.1f} s, S3 warehouse (moto) {seconds['s3']:.1f} s")
    return SimpleNamespace(folder=folder, bucket=bucket, envs=envs, outputs=outputs, seconds=seconds, endpoint=moto_server)


def _store(runs, name: str, monkeypatch) -> Store:
    for variable in CLEARED:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in runs.envs[name].items():
        if variable.startswith(("LOOKUPS_", "AWS_")):
            monkeypatch.setenv(variable, value)
    return Store(Path(runs.envs[name]["LOOKUPS_DATA_DIR"]) / "lookups.duckdb")


def test_the_planted_run_on_s3_passes_and_ends_with_the_local_runstables_as_text(runs, monkeypatch):
    for name, out in runs.outputs.items():
        assert out.returncode == 0, f"{name}: {out.stderr[-3000:]}"
        assert "strongest consistent (neuron, head) pairs" in out.stdout, name
    versions = "SELECT asset, scope, data_version, complete FROM asset_versions ORDER BY ALL"
    local_store = _store(runs, "local", monkeypatch)
    local, local_versions = tables_as_text(local_store), local_store.query(versions)
    store = _store(runs, "s3", monkeypatch)
    assert store.location.local is False and store.root.startswith("s3://")
    remote = tables_as_text(store)
    assert [t for t in TABLES if local[t] != remote[t]] == []
    remote_versions = store.query(versions)  # every step ran, completed, and computed what the local run did
    assert len(remote_versions) > 10 and remote_versions.equals(local_versions) and remote_versions["complete"].all()
    assert store.verify().damaged == [] and store.verify().pending == {}
    # the atlas: in the object store, and the page a person opens on this machine
    pages = store.list_files("atlas")
    assert len(pages) == 1 and b"<html" in store.get_file(pages[0])[:2000].lower()
    assert (store.folder / pages[0]).is_file()
    assert not (store.folder / "handles").exists() and not (store.folder / "corpora").exists()  # in the object store
    assert store.list_files("corpora") and store.location.list("_files/handles")
    print(f"\nplanted run wall time: local warehouse {runs.seconds['local']:.1f} s, S3 warehouse (moto) {runs.seconds['s3']:.1f} s")


def test_lookups_query_and_verify_answer_on_s3(runs):
    env = runs.envs["s3"]
    query = subprocess.run([LOOKUPS, "query", "SELECT count(*) AS n FROM neurons WHERE selected"], env=env, capture_output=True, text=True, timeout=300)
    assert query.returncode == 0 and query.stdout.split()[-1].isdigit() and int(query.stdout.split()[-1]) > 0, query.stderr
    pairs = subprocess.run([LOOKUPS, "query", "consistent_pairs"], env=env, capture_output=True, text=True, timeout=300)
    assert pairs.returncode == 0 and len(pairs.stdout.strip().splitlines()) > 1, pairs.stderr  # a named query
    verify = subprocess.run([LOOKUPS, "verify"], env=env, capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    views = subprocess.run([LOOKUPS, "views-sql"], env=env, capture_output=True, text=True, timeout=300)
    assert views.returncode == 0 and f"s3://{runs.bucket}/lookups/neurons/part-" in views.stdout
    runs.outputs.update(query=query, pairs=pairs, verify=verify, views=views)


def test_an_unreachable_endpoint_is_one_line(runs, tmp_path):
    env = {**runs.envs["s3"], "LOOKUPS_S3_ENDPOINT": "http://127.0.0.1:9"}
    out = subprocess.run([LOOKUPS, "query", "SELECT 1"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "cannot be reached" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_secret_key_is_in_no_table_object_file_or_output(runs):
    import boto3

    secret = SECRET_KEY.encode()
    client = boto3.client("s3", endpoint_url=runs.endpoint, aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=runs.bucket) for o in page.get("Contents", [])]
    assert len(keys) > 50 and any(k.endswith(".json") for k in keys) and any(k.endswith(".parquet") for k in keys)
    for key in keys:  # every Parquet file, manifest commit, handle, corpus and page
        assert secret not in client.get_object(Bucket=runs.bucket, Key=key)["Body"].read(), key
    for path in (runs.folder / "s3").rglob("*"):  # the data folder: views file (if any), atlas copy, Dagster's instance
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for name, out in runs.outputs.items():
        assert SECRET_KEY not in out.stdout and SECRET_KEY not in out.stderr, name
