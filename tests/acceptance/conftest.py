"""Fixtures of the acceptance tier (tests/acceptance/): the real SmolLM2-135M (the embedded model), resolved and
loaded once per module. A module on another real model defines its own fixtures of the same names, which take
precedence there (tests/acceptance/test_gemma3.py: ``source`` and ``arch`` are Gemma 3's)."""

from __future__ import annotations

import pytest
import torch

from lookups.pipeline.config import EMBEDDED_MODEL
from lookups.pipeline.inputs import architecture, checkpoints, models


@pytest.fixture(scope="module")
def source():
    return checkpoints.resolve_model(EMBEDDED_MODEL)


@pytest.fixture(scope="module")
def bridge(source):
    return models.load_bridge(source.local_dir)


@pytest.fixture(scope="module")
def arch(source):
    return architecture.load_architecture(source.local_dir)


@pytest.fixture(scope="module")
def hf_model(source):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source.local_dir, dtype=torch.float32, attn_implementation="eager")
    return model.eval()
