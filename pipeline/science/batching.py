"""Batching for every forward pass: rows packed by length under a token budget, right-padded (no mask
needed for causal models: the positions read are never after a row's end), identical prompts run once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


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


@dataclass
class PromptBatches:
    """Rows (exemplars, pairs on prompts) that share a prompt run it once: ``prompts`` the distinct token
    sequences (BOS prepended), ``prompt_of_row[r]`` each row's prompt, ``batches`` lists of prompt indices,
    grouped by the deepest layer their rows need so each forward pass stops as early as it can."""

    prompts: list[np.ndarray]
    prompt_of_row: np.ndarray
    rows_of_prompt: dict[int, list[int]]
    batches: list[np.ndarray]

    def rows(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the batch's prompts, each row's position in the batch)."""
        rows = np.array([r for p in batch for r in self.rows_of_prompt[p]], dtype=np.int64)
        position = {p: b for b, p in enumerate(batch)}
        return rows, np.array([position[self.prompt_of_row[r]] for r in rows], dtype=np.int64)


def group_prompts(token_ids: Sequence, layers: np.ndarray, bos_id: int, batch_tokens: int) -> PromptBatches:
    """``token_ids[r]``: row r's prompt (BOS not included); ``layers[r]``: the layer it reads."""
    prompt_index: dict[tuple, int] = {}
    prompt_of_row = np.empty(len(token_ids), dtype=np.int64)
    for i, ids in enumerate(token_ids):
        prompt_index.setdefault(key := tuple(int(t) for t in ids), len(prompt_index))
        prompt_of_row[i] = prompt_index[key]
    prompts = [np.asarray((bos_id,) + key, dtype=np.int64) for key in prompt_index]
    rows_of_prompt: dict[int, list[int]] = defaultdict(list)
    for row, p in enumerate(prompt_of_row):
        rows_of_prompt[int(p)].append(row)
    deepest = np.array([layers[rows_of_prompt[p]].max() for p in range(len(prompts))], dtype=np.int64)
    batches = []
    for layer in np.unique(deepest):
        members = np.nonzero(deepest == layer)[0]
        batches += [members[b] for b in pack_batches([len(prompts[p]) for p in members], batch_tokens)]
    return PromptBatches(prompts, prompt_of_row, rows_of_prompt, batches)


def pad_right(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch, max_len]`` token tensor and ``[batch]`` lengths. Right padding needs no attention mask for a
    causal model: real positions never attend to the padding after them, and positions stay 0..n-1."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out, lengths
