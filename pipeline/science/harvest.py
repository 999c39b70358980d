"""Step 2 of docs/method.md: one batched pass over the corpus, keeping each neuron's max-activating documents.

Memory stays flat in corpus size: activations are read only for the selected neurons (hooks on the
layers that hold them, forward stopped after the last of those layers), reduced to a per-window max in
the batch, and merged into a fixed-size streaming top-k per neuron.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.inputs.capture import capture
from lookups.pipeline.science.batching import pack_batches, pad_right


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


class NeuronReader:
    """Reads the post-activation of a fixed set of MLP neurons (TransformerLens' ``blocks.L.mlp.hook_post``).

    It captures (``capture``) the input of each needed layer's MLP output projection in a plain Hugging Face
    model (SDPA attention: 1.4x the bridge's eager forward here), and stops the forward pass after the last
    needed layer, so no later layer and no unembedding is computed. Columns are ordered as the given
    ``(layers, neurons)``; ``models.mlp_output_paths`` maps layers to modules from the bridge.
    """

    def __init__(self, hf_model, module_paths: Sequence[str], layers: Sequence[int], neurons: Sequence[int]):
        self.model = hf_model
        self.device = next(hf_model.parameters()).device
        modules = dict(hf_model.named_modules())
        self.layer_of_column = np.asarray(layers, dtype=np.int64)
        neurons = np.asarray(neurons, dtype=np.int64)
        self.n_columns = len(self.layer_of_column)
        self._by_layer = []  # (layer, module path, column positions, neuron indices)
        for layer in sorted(set(self.layer_of_column.tolist())):
            cols = np.nonzero(self.layer_of_column == layer)[0]
            path = module_paths[layer]
            if path not in modules:
                raise KeyError(path)
            self._by_layer.append((layer, path, torch.as_tensor(cols, device=self.device), torch.as_tensor(neurons[cols], device=self.device)))

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, stop_layer: int | None = None) -> torch.Tensor:
        """tokens ``[batch, pos]`` -> activations ``[batch, pos, n_columns]`` on the model's device (callers
        reduce them there and copy only the result); columns of layers after ``stop_layer`` (default: the last
        needed layer) are left NaN."""
        stop_layer = int(self.layer_of_column.max()) if stop_layer is None else stop_layer
        needed = [(f"L{layer}", path, cols, idx) for layer, path, cols, idx in self._by_layer if layer <= stop_layer]
        wanted = {key: (path, "input") for key, path, _, _ in needed}  # the input of the output projection: the post-activation [batch, pos, d_mlp]
        picks = {key: lambda value, idx=idx: value[:, :, idx] for key, _, _, idx in needed}
        got = capture(self.model, tokens, wanted, stop_after=f"L{stop_layer}", picks=picks)
        out = torch.full((tokens.shape[0], tokens.shape[1], self.n_columns), float("nan"), dtype=torch.float32, device=self.device)
        for key, _, cols, _ in needed:
            out[:, :, cols] = got[key].float()
        return out

    def at_positions(self, rows: Sequence[np.ndarray], queries: np.ndarray, bos_id: int, batch_tokens: int, pad_id: int) -> np.ndarray:
        """Activations asked for by ``queries`` ``[n, 3]`` = (row, token index in the row, column), each row
        run as ``BOS + row``: ``[n]``. Rows are grouped by the deepest layer they need, then batched by length."""
        out = np.empty(len(queries), dtype=np.float32)
        by_row = np.argsort(queries[:, 0], kind="stable")
        bounds = np.searchsorted(queries[by_row, 0], np.arange(len(rows) + 1))
        row_layer = np.full(len(rows), -1, dtype=np.int64)
        np.maximum.at(row_layer, queries[:, 0], self.layer_of_column[queries[:, 2]])
        for stop_layer in np.unique(row_layer[row_layer >= 0]):
            members = np.nonzero(row_layer == stop_layer)[0]
            for batch in pack_batches([len(rows[i]) + 1 for i in members], batch_tokens):
                batch = members[batch]
                tokens, _ = pad_right([np.concatenate([[bos_id], rows[i]]) for i in batch], pad_id)
                acts = self(tokens, int(stop_layer))  # [batch, pos, n_columns]
                picked = [by_row[bounds[r] : bounds[r + 1]] for r in batch]
                local = np.concatenate([np.full(len(p), j) for j, p in enumerate(picked)])
                idx = np.concatenate(picked)
                q = queries[idx]
                at = torch.as_tensor(np.stack([local, q[:, 1] + 1, q[:, 2]]), device=acts.device)
                out[idx] = acts[at[0], at[1], at[2]].cpu().numpy()
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
    progress: Progress | None = None,
) -> StreamingTopK:
    """Run every window (BOS prepended) through ``reader`` and keep each column's top-k documents.

    reader: tokens ``[batch, pos]`` -> activations ``[batch, pos, n_columns]``. Positions are document token
    positions; BOS and padding never count. ``progress('harvest', tokens done, tokens in all)``.
    """
    top = StreamingTopK(n_columns, k)
    total = sum(w.length for w in windows)
    done = 0
    for batch in pack_batches([w.length + 1 for w in windows], batch_tokens):
        rows = [np.concatenate([[bos_id], doc_tokens[windows[i].doc_index][windows[i].start : windows[i].end]]) for i in batch]
        tokens, lengths = pad_right(rows, pad_id)
        acts = reader(tokens)  # [batch, pos, n_columns], on the reader's device: reduced there, only the max copied
        positions = torch.arange(tokens.shape[1], device=acts.device)
        valid = (positions[None, :] >= 1) & (positions[None, :] < lengths.to(acts.device)[:, None])  # not BOS, not padding
        acts = acts.masked_fill(~valid[:, :, None], float("-inf"))
        values, argmax = acts.max(dim=1)  # [batch, n_columns]
        starts = np.array([windows[i].start for i in batch], dtype=np.int64)
        docs = np.array([windows[i].doc_index for i in batch], dtype=np.int64)
        top.merge(values.cpu().numpy(), docs, argmax.cpu().numpy() - 1 + starts[:, None], starts)
        done += sum(windows[i].length for i in batch)
        if progress:
            progress("harvest", done, total)
    return top
