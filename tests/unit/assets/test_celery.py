"""The Celery executor's wiring (docs/workers.md), without a broker: LOOKUPS_EXECUTOR=celery picks it with the
settings' broker and backend, and every step's op names its queue (the model's steps `gpu`, the others `dagster`)."""

from __future__ import annotations

import pytest

from lookups.assets import core, definitions
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import celery_settings
from lookups.pipeline.steps import STEPS


def test_the_steps_that_load_the_model_go_to_the_gpu_queue_and_the_others_to_dagster():
    job = definitions.defs.resolve_job_def("lookups")
    queues = {node.name: node.tags.get(core.QUEUE_TAG) for node in job.nodes}
    assert {name: queues[name] for name in STEPS} == {name: "gpu" if step.loads_model else "dagster" for name, step in STEPS.items()}
    assert {"model", "neuron_exemplars", "head_attributions", "explanations"} <= {n for n, q in queues.items() if q == "gpu"}
    assert {"corpus", "prompt_set", "head_neuron_scores"} <= {n for n, q in queues.items() if q == "dagster"}
    checks = [name for name in queues if name not in STEPS]
    assert checks and all(queues[name] is None for name in checks)  # checks: dagster-celery's default queue


def test_needs_model_overrides_what_the_inputs_say():
    import dataclasses

    lookups = STEPS["head_lookups"]
    assert lookups.loads_model and not dataclasses.replace(lookups, needs_model=False).loads_model
    assert not STEPS["atlas_report"].loads_model  # it takes the model handle for the tokenizer only
    assert not STEPS["head_neuron_scores"].loads_model and dataclasses.replace(STEPS["head_neuron_scores"], needs_model=True).loads_model


def test_a_model_steps_pod_requests_its_gpus_under_the_k8s_executor(monkeypatch):
    tags = core.op_tags(STEPS["neuron_exemplars"])
    assert tags[core.QUEUE_TAG] == "gpu"
    assert tags[core.K8S_TAG] == {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}
    assert core.K8S_TAG not in core.op_tags(STEPS["corpus"])
    monkeypatch.setenv("LOOKUPS_K8S_STEP_GPUS", "0")
    assert core.K8S_TAG not in core.op_tags(STEPS["neuron_exemplars"])
    monkeypatch.setenv("LOOKUPS_K8S_STEP_GPUS", "two")
    with pytest.raises(LookupsError, match="LOOKUPS_K8S_STEP_GPUS='two'"):
        core.op_tags(STEPS["neuron_exemplars"])


def test_the_celery_executor_reads_its_broker_and_backend_from_the_settings(monkeypatch):
    monkeypatch.setenv("LOOKUPS_EXECUTOR", "celery")
    monkeypatch.setenv("LOOKUPS_CELERY_BROKER", "redis://broker.internal:6380/2")
    executor = definitions.executor()
    assert executor.name == "celery"
    config = executor.apply_config_mapping({}).value["config"]  # configured: a run gives no execution block
    assert config["broker"] == config["backend"] == "redis://broker.internal:6380/2"
    assert config["config_source"]["task_acks_late"] is True
    monkeypatch.setenv("LOOKUPS_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="multiprocess, in_process, celery, k8s"):
        definitions.executor()


def test_celery_settings(monkeypatch):
    monkeypatch.delenv("LOOKUPS_CELERY_BROKER", raising=False)
    monkeypatch.delenv("LOOKUPS_CELERY_VISIBILITY_TIMEOUT", raising=False)
    settings = celery_settings()
    assert settings["broker"] == settings["backend"] == "redis://127.0.0.1:6379/0"
    source = settings["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"] and source["worker_prefetch_multiplier"] == 1
    assert source["broker_transport_options"]["visibility_timeout"] == 6 * 3600
    monkeypatch.setenv("LOOKUPS_CELERY_BACKEND", "redis://127.0.0.1:6379/1")
    monkeypatch.setenv("LOOKUPS_CELERY_VISIBILITY_TIMEOUT", "12")
    settings = celery_settings()
    assert settings["backend"] == "redis://127.0.0.1:6379/1"
    assert settings["config_source"]["broker_transport_options"]["visibility_timeout"] == 12
    assert settings["config_source"]["broker_transport_options"]["unacked_restore_interval"] == 3
    monkeypatch.setenv("LOOKUPS_CELERY_VISIBILITY_TIMEOUT", "1h")
    with pytest.raises(LookupsError, match="LOOKUPS_CELERY_VISIBILITY_TIMEOUT='1h' is not a number of seconds"):
        celery_settings()
