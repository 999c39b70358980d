"""A ``model.device`` this machine's torch cannot use is one line naming the setting and the fix, before any
weight loads, instead of torch's "AssertionError: Torch not compiled with CUDA enabled" at the first tensor moved."""

import pytest
import torch

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.inputs.runtime import check_device, load_runtime


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA or Apple GPUs, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_a_missing_device_is_one_line_naming_the_setting(no_gpu, tmp_path, device):
    with pytest.raises(LookupsError) as refused:
        load_runtime(str(tmp_path / "any-model"), device)
    message = str(refused.value)
    assert "\n" not in message and f"model.device is '{device}'" in message and "'cpu'" in message, message


def test_a_gpu_index_past_the_last_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == "cuda:0"
    with pytest.raises(LookupsError, match="sees 1 CUDA GPU"):
        check_device("cuda:1")


def test_the_cpu_is_always_there(no_gpu):
    assert check_device("cpu") == "cpu"


def test_without_a_gpu_torch_itself_fails_with_a_traceback_worth_avoiding():
    """What the check stands in front of, on this machine (no GPU): torch's own error, not a LookupsError."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1).to("cuda")
