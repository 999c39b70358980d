"""The real Dagster webserver loads workspace.yaml with no errors and serves the asset graph."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes { assetKey { path } dependencyKeys { path } }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@pytest.mark.slow
def test_webserver_serves_the_asset_graph(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError("webserver did not start:\n" + (server.stdout.read() if server.poll() is not None else ""))
                time.sleep(1)
        data = graphql(port, QUERY)
        [location] = data["workspaceOrError"]["locationEntries"]
        assert location["name"] == "lookups"
        assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", location
        edges = {node["assetKey"]["path"][0]: {d["path"][0] for d in node["dependencyKeys"]} for node in data["assetNodes"]}
        assert edges == {
            "model": set(),
            "neuron_catalog": {"model"},
            "corpus": set(),
            "prompt_set": {"corpus"},
            "neuron_exemplars": {"model", "neuron_catalog", "prompt_set"},
            "head_attributions": {"model", "neuron_exemplars"},
            "head_neuron_scores": {"head_attributions"},
            "head_ablations": {"model", "head_neuron_scores"},
            "atlas_report": {"model", "head_ablations"},
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
