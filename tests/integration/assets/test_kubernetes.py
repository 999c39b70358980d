"""The documented Kubernetes deployment (deploy/kubernetes/dagster.yaml, docs/operations.md "Scale-out"), checked
as far as a machine without a cluster allows: the instance loads its ``K8sRunLauncher``, and launching a run of
the main job sends the Kubernetes API the pod spec that run would get: the image, a GPU from the run tags
(``LOOKUPS_RUN_TAGS``), the warehouse settings passed through by name, the credentials only as a secret
reference, and Dagster's own command to execute the run.

The API server is a stand-in on a loopback port that records what the real ``kubernetes`` client sends it (the
whole launch path, serialization included, is dagster-k8s's own); it schedules nothing.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
import yaml

dagster_k8s = pytest.importorskip("dagster_k8s")

from dagster._core.test_utils import create_run_for_test, in_process_test_workspace, instance_for_test  # noqa: E402
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin  # noqa: E402

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes" / "dagster.yaml"
SECRET = "not-a-real-secret-6b1f0c"
GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers the Kubernetes API's create-job call with the job it was sent, and keeps it."""

    jobs: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.jobs.append((self.path, body))
        reply = json.dumps(body).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_server(tmp_path):
    _Recorder.jobs = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
        "clusters": [{"name": "loopback", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "tester", "user": {"token": "loopback-token"}}],
        "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "tester", "namespace": "lookups"}}],
    }))
    yield kubeconfig, _Recorder.jobs
    server.shutdown()


def _instance_config(kubeconfig: Path) -> dict:
    """The documented instance, pointed at the loopback API server instead of the in-cluster one."""
    config = yaml.safe_load(DEPLOY.read_text())
    config["run_launcher"]["config"] |= {"load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    return config


def test_documented_instance_loads_the_k8s_run_launcher(api_server):
    kubeconfig, _ = api_server
    with instance_for_test(overrides=_instance_config(kubeconfig)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, dagster_k8s.K8sRunLauncher)
        assert launcher.job_namespace == "lookups"
        assert launcher.env_secrets == ["lookups-s3-credentials"]


def test_a_run_gets_a_gpu_pod_with_the_warehouse_settings(api_server, monkeypatch, tmp_path):
    kubeconfig, jobs = api_server
    monkeypatch.setenv("LOOKUPS_RUN_TAGS", json.dumps(GPU_TAGS))
    monkeypatch.setenv("LOOKUPS_WAREHOUSE", "s3://lab-results/lookups")
    monkeypatch.setenv("LOOKUPS_S3_ENDPOINT", "https://s3.lab.example")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # the launching process has it; the pod spec must not
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    from lookups.assets.automation import MAIN_JOB, run_tags

    image = "registry.example/lookups:latest"
    with instance_for_test(overrides=_instance_config(kubeconfig)) as instance:
        origin = LoadableTargetOrigin(module_name="lookups.assets.definitions")
        with in_process_test_workspace(instance, origin, container_image=image) as workspace:
            location = workspace.get_code_location(workspace.code_location_names[0])
            repository = next(iter(location.get_repositories().values()))
            job = repository.get_full_job(MAIN_JOB)
            tags = {**job.tags, **run_tags(), "dagster/partition": "gensim-wiki|smollm2-135m-instruct"}
            run = create_run_for_test(
                instance, job_name=MAIN_JOB, tags=tags,
                remote_job_origin=job.get_remote_origin(), job_code_origin=job.get_python_origin(),
            )
            instance.launch_run(run.run_id, workspace)
            stored = instance.get_run_by_id(run.run_id)

    assert len(jobs) == 1
    path, body = jobs[0]
    assert path == "/apis/batch/v1/namespaces/lookups/jobs"
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image and stored.tags["dagster/image"] == image
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}  # from LOOKUPS_RUN_TAGS
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["LOOKUPS_WAREHOUSE"] == "s3://lab-results/lookups"
    assert env["LOOKUPS_S3_ENDPOINT"] == "https://s3.lab.example"
    assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home"
    assert {"secretRef": {"name": "lookups-s3-credentials"}} in container["envFrom"]
    assert pod["serviceAccountName"] == "lookups"
    # Dagster's own run worker command, for this run of this job.
    assert container["args"][:3] == ["dagster", "api", "execute_run"]
    assert run.run_id in container["args"][3] and MAIN_JOB in container["args"][3]
    assert body["metadata"]["labels"]["dagster/run-id"] == run.run_id
    # The credentials stay in the secret: not in the job sent to the cluster, not in the run's tags.
    assert SECRET not in json.dumps(body)
    assert SECRET not in json.dumps(stored.tags)


def test_under_the_k8s_executor_a_model_steps_pod_gets_a_gpu_and_the_others_none(monkeypatch):
    """``LOOKUPS_EXECUTOR=k8s``: each step a pod (dagster-k8s's ``k8s_job_executor``); the pod spec of a step is
    built from its op's tags as the executor's step handler builds it."""
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    from lookups.assets import definitions
    from lookups.assets.automation import MAIN_JOB

    monkeypatch.setenv("LOOKUPS_EXECUTOR", "k8s")
    job = definitions.build_definitions(definitions.ALL_ASSETS).resolve_job_def(MAIN_JOB)
    assert job.executor_def is dagster_k8s.k8s_job_executor
    launcher = yaml.safe_load(DEPLOY.read_text())["run_launcher"]["config"]
    job_config = DagsterK8sJobConfig(
        job_image=launcher["job_image"], dagster_home=launcher["dagster_home"], instance_config_map=launcher["instance_config_map"],
        env_secrets=launcher["env_secrets"],
    )
    nodes = {node.name: node for node in job.nodes}

    def limits(step: str) -> dict | None:
        spec = construct_dagster_k8s_job(
            job_config, ["dagster", "api", "execute_step"], f"step-{step}".replace("_", "-"),
            user_defined_k8s_config=get_user_defined_k8s_config(nodes[step].tags), component="step_worker",
        ).to_dict()
        (container,) = spec["spec"]["template"]["spec"]["containers"]
        assert container["image"] == launcher["job_image"]
        return (container["resources"] or {}).get("limits")

    assert limits("neuron_exemplars") == {"nvidia.com/gpu": "1"}
    assert limits("explanations") == {"nvidia.com/gpu": "1"}
    assert limits("corpus") is None and limits("head_neuron_scores") is None
