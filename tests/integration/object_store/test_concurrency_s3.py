"""Writers and readers of one S3 prefix at once, in separate processes (moto's S3 server): no write is lost or
seen in part, the last write of each slot is what the log names, and a writer killed mid-upload leaves the
previous rows whole (docs/object_store.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from store_rows import WRITER, doc_rows

from lookups.pipeline.store.object_manifest import LOG
from lookups.pipeline.store.store import Store


def test_two_writer_processes_and_a_reader_lose_nothing_and_see_whole_writes(s3, tmp_path):
    path = tmp_path / "x.duckdb"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "20", "shared"], env=s3.env) for name in ("left", "right")]
    store, reads = Store(path), 0
    while any(w.poll() is None for w in writers):
        sizes = store.query("SELECT prompt_set_id, count(*) AS n FROM documents GROUP BY 1", require_results=False)
        assert set(sizes["n"]) <= {50}  # whole keys only
        reads += 1
    assert [w.returncode for w in writers] == [0, 0] and reads > 0
    final = store.query("SELECT prompt_set_id, count(*) AS n, max(text) AS text FROM documents GROUP BY 1 ORDER BY 1")
    assert set(final["n"]) == {50}
    own = dict(zip(final["prompt_set_id"], final["text"], strict=True))
    for name in ("left", "right"):
        for k in range(5):
            assert own[f"{name}-{k}"] == f"{name} {max(i for i in range(20) if i % 5 == k)}"
    assert store.query("SELECT count(*) AS n FROM llm_calls")["n"][0] == 40
    # The log, folded in id order: each shared slot names the file of its last commit.
    last: dict[str, str] = {}
    for key, _ in store.location.list(LOG):
        for slot, entry in json.loads(store.location.read_bytes(key)).get("set", {}).items():
            last[slot] = entry["file"]
    entries = store.entries()
    assert {slot: e.file for slot, e in entries.items()} == last
    assert len(store.location.list(LOG)) == 2 * 20 * 3 and Store(path).verify().damaged == []


KILLED = """
import sys, os, random, string, pandas as pd
from lookups.pipeline.store import location
from lookups.pipeline.store.store import Store
original = location.Location.upload
def upload(self, relative, local_file):
    print("uploading", os.path.getsize(local_file), flush=True)
    original(self, relative, local_file)
    print("uploaded", flush=True)
location.Location.upload = upload
random.seed(1)
n = 250_000
text = ["".join(random.choices(string.ascii_letters, k=120)) for _ in range(n)]
rows = pd.DataFrame({"doc_id": [f"d{j}" for j in range(n)], "doc_index": range(n), "source_id": "s", "title": "x",
                     "passage_index": 0, "split": "explain", "text": text, "n_chars": 1})
Store(sys.argv[1]).replace("documents", {"prompt_set_id": "a"}, rows)
"""


def test_a_writer_killed_mid_upload_leaves_the_previous_rows_and_the_next_write_succeeds(s3, tmp_path):
    import boto3

    path = tmp_path / "x.duckdb"
    store = Store(path)
    store.replace("documents", {"prompt_set_id": "a"}, doc_rows(50, "before"))
    before = store.entries()
    writer = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], env=s3.env, stdout=subprocess.PIPE, text=True)
    line = writer.stdout.readline()
    assert line.startswith("uploading"), line
    size = int(line.split()[1])
    client = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    deadline = time.monotonic() + 20
    while not client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")  # the upload has begun: parts are arriving
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert writer.stdout.read() == "" and size > 20_000_000  # killed before the upload completed
    reader = Store(path)
    assert reader.entries() == before  # no commit names the half-uploaded file
    rows = reader.query("SELECT text, count(*) AS n FROM documents GROUP BY 1")
    assert rows.values.tolist() == [["before", 50]]
    for key, stat in reader.location.list("documents"):  # no object of the killed write, not even in part
        assert key.endswith("_schema.parquet") or key == before[next(iter(before))].file, (key, stat)
    assert reader.verify().damaged == []
    reader.replace("documents", {"prompt_set_id": "a"}, doc_rows(7, "after"))  # the next write succeeds
    assert Store(path).query("SELECT text, count(*) AS n FROM documents GROUP BY 1").values.tolist() == [["after", 7]]
