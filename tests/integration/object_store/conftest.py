"""An S3-protocol server for the object-store tests: moto's standalone server (an emulator, not AWS S3), started
as a subprocess on a free loopback port with fake credentials, one bucket per test (docs/object_store.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest

#: The fake credentials: the secret is searched for in everything a run writes and prints.
ACCESS_KEY = "AKIALOOKUPSTESTKEY01"
SECRET_KEY = "lookups-secret-9f3c1e7a5b2d4c6e8a0b"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    """``http://127.0.0.1:<port>`` of a moto S3 server for this module; stopped after it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        server.kill()


def s3_environment(endpoint: str, bucket: str) -> dict[str, str]:
    """The environment of a process whose warehouse is ``s3://<bucket>/lookups`` on ``endpoint``."""
    return {
        "LOOKUPS_WAREHOUSE": f"s3://{bucket}/lookups", "LOOKUPS_S3_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    }


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)


@pytest.fixture
def s3(moto_server, monkeypatch):
    """A fresh bucket on the module's server, and this test's environment pointed at it."""
    bucket = f"lookups-{uuid.uuid4().hex[:12]}"
    create_bucket(moto_server, bucket)
    env = s3_environment(moto_server, bucket)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "LOOKUPS_S3_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    return SimpleNamespace(endpoint=moto_server, bucket=bucket, url=env["LOOKUPS_WAREHOUSE"], env={**os.environ, **env})
