"""The real Dagster webserver loads workspace.yaml with no errors and serves the asset graph."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port, graphql, wait_until_serving

REPO = Path(__file__).resolve().parents[2]
QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } } } }
  assetNodes { assetKey { path } dependencyKeys { path } }
}
"""


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
        wait_until_serving(port, server)
        data = graphql(port, QUERY)
        [location] = data["workspaceOrError"]["locationEntries"]
        assert location["name"] == "lookups"
        assert location["locationOrLoadError"]["__typename"] == "RepositoryLocation", location
        edges = {node["assetKey"]["path"][0]: {d["path"][0] for d in node["dependencyKeys"]} for node in data["assetNodes"]}
        assert edges == {
            "model_weights": set(),
            "corpus_files": set(),
            "model": {"model_weights"},
            "neuron_catalog": {"model"},
            "corpus": {"corpus_files"},
            "prompt_set": {"corpus"},
            "neuron_exemplars": {"model", "neuron_catalog", "prompt_set"},
            "head_attributions": {"model", "neuron_exemplars"},
            "head_neuron_scores": {"head_attributions"},
            "head_ablations": {"model", "head_neuron_scores"},
            "head_lookups": {"model", "head_neuron_scores"},
            "explanations": {"model", "head_neuron_scores", "head_lookups"},
            "lookup_interventions": {"model", "head_lookups", "explanations"},
            "explanation_scores": {"model", "explanations"},
            "lookup_knockouts": {"model", "head_lookups", "explanations"},
            "qk_attributions": {"model", "head_lookups", "explanations"},
            "atlas_report": {"model", "head_ablations", "explanation_scores", "lookup_interventions", "lookup_knockouts", "qk_attributions"},
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
