"""Batching for every forward pass: rows packed by length under a token budget, right-padded (no mask
needed for causal models: the positions read are never after a row's end), and the residual stream read at
each row's last position with the forward stopped after the last hook needed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lookups.pipeline.inputs.architecture import StopForward


def pack_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group row indices, sorted by length so padding is small, into batches of at most ``batch_tokens``
    padded tokens (a longer row forms a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_right(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch, max_len]`` token tensor and ``[batch]`` lengths. Right padding needs no attention mask for a
    causal model: real positions never attend to the padding after them, and positions stay 0..n-1."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out, lengths


def capture_last_positions(bridge, tokens: torch.Tensor, lengths: torch.Tensor, names, stop_after: str, pick=None) -> dict[str, torch.Tensor]:
    """Run ``tokens`` ``[batch, pos]`` (right-padded; row b has ``lengths[b]`` real tokens) through a
    TransformerLens bridge and keep, for each hook in ``names``, only each row's last real position:
    ``pick(value, rows, last)``, by default ``value[rows, last]`` (``[batch, ...]``). The forward stops once
    the hook ``stop_after`` has fired. Right padding needs no mask in a causal model."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    last = (lengths - 1).to(device=tokens.device, dtype=torch.long)
    pick = pick or (lambda value, rows, last: value[rows, last])
    captured: dict[str, torch.Tensor] = {}

    def save(value, hook):
        captured[hook.name] = pick(value, rows, last).detach().clone()
        if hook.name == stop_after:
            raise StopForward
        return value

    with torch.no_grad(), bridge.hooks(fwd_hooks=[(name, save) for name in names]):
        try:
            bridge(tokens)
        except StopForward:
            pass
    return captured
