"""The model as every step uses it (docs/architecture.md, "The model runtime"): one ``ModelRuntime`` per
checkpoint and device in a process, holding the plain Hugging Face model on the configured device with its
verified description, the tokenizer and the typed facts.

The weights are loaded once, on the device the settings name. TransformerLens only names the modules (the
description reads its component mapping): its bridge is booted on the CPU for that and let go, so no copy of
the weights stays beside the model, and none is ever put on a GPU. A step that needs only the tokenizer (the
atlas) loads nothing else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from lookups.pipeline.inputs import architecture, models
from lookups.pipeline.inputs.architecture import Architecture
from lookups.pipeline.inputs.checkpoints import ModelError
from lookups.pipeline.inputs.models import ModelFacts


@dataclass
class ModelRuntime:
    """A checkpoint ready to compute with. ``arch`` and ``facts`` load the weights on first use (together);
    ``tokenizer`` loads only the tokenizer."""

    local_dir: str
    device: str = "cpu"
    _loaded: tuple[Architecture, ModelFacts] | None = field(default=None, repr=False)

    @property
    def tokenizer(self):
        return models.load_tokenizer(self.local_dir)

    @property
    def arch(self) -> Architecture:
        return self._load()[0]

    @property
    def facts(self) -> ModelFacts:
        return self._load()[1]

    @property
    def bos_id(self) -> int:
        return self.facts.bos_token_id

    @property
    def pad_id(self) -> int:
        """What right padding is filled with (``models.pad_token_id``)."""
        return models.pad_token_id(self.tokenizer, self.bos_id)

    def special_ids(self) -> set[int]:
        """BOS and every special token of the tokenizer."""
        return {self.bos_id, *map(int, self.tokenizer.all_special_ids)}

    def decode_each(self, ids) -> list[str]:
        """Each token id decoded on its own (what a position shows)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def _load(self) -> tuple[Architecture, ModelFacts]:
        if self._loaded is None:
            bridge = models.boot_bridge(self.local_dir, "cpu")
            try:
                # Refuses, in one line, a model whose MLP inputs the steps cannot decompose exactly.
                arch = architecture.describe(bridge, models.load_activation_model(self.local_dir, self.device))
                self._loaded = (arch, models.model_facts(bridge))
            finally:
                del bridge
        return self._loaded


def check_device(device: str) -> str:
    """``device`` (the ``model.device`` setting), refused in one line when this machine's torch cannot use it,
    rather than with torch's own assertion at the first tensor moved there."""
    import torch

    fix = "set model.device to 'cpu' (the run config's `model: {config: {device: cpu}}`), or run where that device is"
    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"model.device is '{device}', but torch here has no CUDA GPU (torch.cuda.is_available() is False): {fix}.")
        if index and int(index) >= torch.cuda.device_count():
            raise ModelError(f"model.device is '{device}', but torch here sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0: {fix}.")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"model.device is 'mps', but torch here has no Apple GPU (torch.backends.mps.is_available() is False): {fix}.")
    return device


@functools.lru_cache(maxsize=2)
def load_runtime(local_dir: str, device: str = "cpu") -> ModelRuntime:
    """The runtime of ``local_dir`` on ``device``, one per process (its weights load on first use); a device this
    machine does not have is refused first (``check_device``)."""
    return ModelRuntime(local_dir, check_device(device))
