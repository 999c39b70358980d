"""DESIGN step 2: one batched pass over the corpus, keeping each neuron's max-activating documents.

Memory stays flat in corpus size: activations are read only for the selected neurons (hooks on the
layers that hold them, forward stopped after the last of those layers), reduced to a per-window max in
the batch, and merged into a fixed-size streaming top-k per neuron.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

ProgressFn = Callable[[int, int], None]  # (done, total) in tokens


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` of document ``doc_index`` (document tokens, BOS not counted)."""

    doc_index: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def make_windows(doc_lengths: Sequence[int], window_tokens: int, doc_indices: Iterable[int] | None = None) -> list[Window]:
    """Split each document into consecutive windows of at most ``window_tokens`` tokens."""
    indices = range(len(doc_lengths)) if doc_indices is None else doc_indices
    out = []
    for doc in indices:
        n = doc_lengths[doc]
        for start in range(0, n, window_tokens):
            out.append(Window(doc, start, min(n, start + window_tokens)))
    return out


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


class NeuronReader:
    """Reads the post-activation of a fixed set of MLP neurons from a TransformerLens bridge.

    Columns are ordered as the ``(layers, neurons)`` given. Only ``blocks.L.mlp.hook_post`` of the needed
    layers is hooked, and the forward pass stops after the last needed layer (no unembedding).
    """

    def __init__(self, bridge, layers: Sequence[int], neurons: Sequence[int]):
        self.bridge = bridge
        layers = np.asarray(layers, dtype=np.int64)
        neurons = np.asarray(neurons, dtype=np.int64)
        self.n_columns = len(layers)
        self._by_layer = []  # (layer, column positions, neuron indices)
        for layer in sorted(set(layers.tolist())):
            cols = np.nonzero(layers == layer)[0]
            self._by_layer.append((layer, torch.as_tensor(cols), torch.as_tensor(neurons[cols])))
        self.stop_at_layer = int(layers.max()) + 1 if len(layers) else 0

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[batch, pos]`` -> activations ``[batch, pos, n_columns]``."""
        out = torch.empty(tokens.shape[0], tokens.shape[1], self.n_columns, dtype=torch.float32)

        def hook_for(cols, idx):
            def hook(act, hook):  # act: [batch, pos, d_mlp]
                out[:, :, cols] = act[:, :, idx].float()
                return act

            return hook

        hooks = [(f"blocks.{layer}.mlp.hook_post", hook_for(cols, idx)) for layer, cols, idx in self._by_layer]
        self.bridge.run_with_hooks(tokens.to(self.bridge.cfg.device), fwd_hooks=hooks, stop_at_layer=self.stop_at_layer)
        return out

    def at_positions(self, rows: Sequence[np.ndarray], queries: np.ndarray, bos_id: int, batch_tokens: int, pad_id: int) -> np.ndarray:
        """Activations asked for by ``queries`` ``[n, 3]`` = (row, token index in the row, column), each row
        run as ``BOS + row``, rows batched by length: ``[n]``."""
        out = np.empty(len(queries), dtype=np.float32)
        by_row = np.argsort(queries[:, 0], kind="stable")
        bounds = np.searchsorted(queries[by_row, 0], np.arange(len(rows) + 1))
        for batch in pack_batches([len(r) + 1 for r in rows], batch_tokens):
            tokens, _ = pad_right([np.concatenate([[bos_id], rows[i]]) for i in batch], pad_id)
            acts = self(tokens)  # [batch, pos, n_columns]
            picked = [by_row[bounds[r] : bounds[r + 1]] for r in batch]
            local = np.concatenate([np.full(len(p), j) for j, p in enumerate(picked)])
            idx = np.concatenate(picked)
            if len(idx):
                q = queries[idx]
                out[idx] = acts[torch.as_tensor(local), torch.as_tensor(q[:, 1] + 1), torch.as_tensor(q[:, 2])].numpy()
        return out


class StreamingTopK:
    """Per column (neuron), the ``k`` documents with the highest max activation, one entry per document."""

    def __init__(self, n_columns: int, k: int):
        self.k = k
        self.values = np.full((n_columns, k), -np.inf, dtype=np.float32)
        self.docs = np.full((n_columns, k), -1, dtype=np.int64)
        self.positions = np.full((n_columns, k), -1, dtype=np.int64)
        self.window_starts = np.full((n_columns, k), -1, dtype=np.int64)

    def merge(self, values: np.ndarray, docs: np.ndarray, positions: np.ndarray, window_starts: np.ndarray) -> None:
        """values, positions: ``[n_rows, n_columns]``; docs, window_starts: ``[n_rows]``. A document seen again
        (another window) keeps only its best entry."""
        for col in range(self.values.shape[0]):
            vals = np.concatenate([self.values[col], values[:, col]])
            dcs = np.concatenate([self.docs[col], docs])
            pos = np.concatenate([self.positions[col], positions[:, col]])
            wst = np.concatenate([self.window_starts[col], window_starts])
            order = np.argsort(-vals, kind="stable")
            _, first = np.unique(dcs[order], return_index=True)  # best entry of each document
            best = order[np.sort(first)][: self.k]
            best = best[np.argsort(-vals[best], kind="stable")]
            n = len(best)
            self.values[col, :n], self.docs[col, :n] = vals[best], dcs[best]
            self.positions[col, :n], self.window_starts[col, :n] = pos[best], wst[best]
            self.values[col, n:], self.docs[col, n:] = -np.inf, -1


def harvest_top_k(
    reader: Callable[[torch.Tensor], torch.Tensor],
    doc_tokens: Sequence[np.ndarray],
    windows: Sequence[Window],
    n_columns: int,
    k: int,
    bos_id: int,
    pad_id: int,
    batch_tokens: int,
    progress: ProgressFn | None = None,
) -> StreamingTopK:
    """Run every window (BOS prepended) through ``reader`` and keep each column's top-k documents.

    reader: tokens ``[batch, pos]`` -> activations ``[batch, pos, n_columns]``. Positions are document token
    positions; BOS and padding never count.
    """
    top = StreamingTopK(n_columns, k)
    total = sum(w.length for w in windows)
    done = 0
    for batch in pack_batches([w.length + 1 for w in windows], batch_tokens):
        rows = [np.concatenate([[bos_id], doc_tokens[windows[i].doc_index][windows[i].start : windows[i].end]]) for i in batch]
        tokens, lengths = pad_right(rows, pad_id)
        acts = reader(tokens)  # [batch, pos, n_columns]
        positions = torch.arange(tokens.shape[1])
        valid = (positions[None, :] >= 1) & (positions[None, :] < lengths[:, None])  # not BOS, not padding
        acts = acts.masked_fill(~valid[:, :, None], float("-inf"))
        values, argmax = acts.max(dim=1)  # [batch, n_columns]
        starts = np.array([windows[i].start for i in batch], dtype=np.int64)
        docs = np.array([windows[i].doc_index for i in batch], dtype=np.int64)
        top.merge(values.numpy(), docs, argmax.numpy() - 1 + starts[:, None], starts)
        done += sum(windows[i].length for i in batch)
        if progress:
            progress(done, total)
    return top
