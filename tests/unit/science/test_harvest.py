"""Windows, batching and the streaming top-k, on a fake activation function (no model)."""

import numpy as np
import torch

from lookups.pipeline.science.batching import pack_batches, pad_right
from lookups.pipeline.science.harvest import StreamingTopK, harvest_top_k, make_windows


def fake_reader(weights):
    """Activation of column c at a position = weights[token, c] (a position-wise fake model)."""

    def read(tokens):
        return torch.as_tensor(weights)[tokens]

    return read


def test_windows_cover_each_document_once():
    windows = make_windows([5, 0, 12], 4)
    assert [(w.doc_index, w.start, w.end) for w in windows] == [(0, 0, 4), (0, 4, 5), (2, 0, 4), (2, 4, 8), (2, 8, 12)]


def test_pack_batches_respects_the_token_budget_and_covers_all_rows():
    lengths = [3, 10, 2, 7, 7, 1, 30]
    batches = pack_batches(lengths, 20)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or max(lengths[i] for i in batch) * len(batch) <= 20


def test_pad_right():
    tokens, lengths = pad_right([np.array([1, 2, 3]), np.array([4])], pad_id=0)
    assert tokens.tolist() == [[1, 2, 3], [4, 0, 0]] and lengths.tolist() == [3, 1]


def test_streaming_top_k_keeps_one_entry_per_document():
    top = StreamingTopK(n_columns=1, k=2)
    top.merge(np.array([[5.0], [4.0]]), np.array([0, 1]), np.array([[3], [1]]), np.array([0, 0]))
    top.merge(np.array([[6.0], [1.0]]), np.array([0, 2]), np.array([[9], [0]]), np.array([8, 0]))  # doc 0 again
    assert top.docs[0].tolist() == [0, 1]
    assert top.values[0].tolist() == [6.0, 4.0]
    assert top.positions[0].tolist() == [9, 1] and top.window_starts[0].tolist() == [8, 0]


def test_harvest_matches_brute_force_and_ignores_bos_and_padding():
    rng = np.random.default_rng(0)
    vocab, columns, k = 100_000, 3, 4  # large vocabulary: no ties between documents
    weights = rng.normal(size=(vocab, columns)).astype(np.float32)
    bos, pad = 0, 1
    weights[bos] = weights[pad] = 100.0  # BOS and padding would win if they counted
    docs = [rng.integers(2, vocab, size=rng.integers(1, 40)) for _ in range(25)]
    windows = make_windows([len(d) for d in docs], 16)
    top = harvest_top_k(fake_reader(weights), docs, windows, columns, k, bos, pad, batch_tokens=64)
    for c in range(columns):
        best = sorted(((weights[d, c].max(), i, int(weights[d, c].argmax())) for i, d in enumerate(docs)), reverse=True)[:k]
        assert top.docs[c].tolist() == [i for _, i, _ in best]
        np.testing.assert_allclose(top.values[c], [v for v, _, _ in best])
        assert top.positions[c].tolist() == [p for _, _, p in best]
