"""Catalog math on small matrices (no model)."""

import numpy as np
import torch

from lookups.pipeline.config import CatalogSettings
from lookups.pipeline.science.catalog import catalog_frame, congruence_stats, qualifying_tokens, select_neurons


def test_congruence_stats_match_the_dense_product():
    gen = torch.Generator().manual_seed(0)
    W_out = torch.randn(3, 7, 5, generator=gen)
    W_U = torch.randn(5, 11, generator=gen)
    stats = congruence_stats(W_out, W_U, top=3, chunk=4)  # chunk smaller than a layer: crosses layers
    dense = torch.einsum("lnd,dv->lnv", W_out, W_U).numpy()
    np.testing.assert_allclose(stats.score, dense.max(-1), rtol=1e-5)
    np.testing.assert_array_equal(stats.token_id, dense.argmax(-1))
    np.testing.assert_allclose(stats.vocab_mean, dense.mean(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.vocab_std, dense.std(-1, ddof=1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(stats.top_ids, np.argsort(-dense, axis=-1)[..., :3])
    z = (dense.max(-1) - dense.mean(-1)) / dense.std(-1, ddof=1)
    np.testing.assert_allclose(stats.zscore, z, rtol=1e-4)


def test_qualifying_tokens_need_word_start_length_letters_and_not_denied():
    raw = ["Ġcat", "cat", "Ġa", "Ġ12", "▁dog", "ĠThe", "Ġthe", None, "Ġab"]
    got = qualifying_tokens(raw, min_chars=2, deny=["the"])
    assert got.tolist() == [True, False, False, False, True, False, False, False, True]


def test_select_neurons_takes_top_n_qualifying_in_the_last_layers():
    score = np.array([[5.0, 4.0, 3.0], [1.0, 9.0, 8.0], [7.0, 6.0, 2.0]])
    token = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1]])
    qualifies = np.array([True, False])  # token 1 does not qualify
    selected, rank = select_neurons(score, token, qualifies, per_layer=1, last_layers=2)
    assert selected.tolist() == [[False, False, False], [False, False, True], [True, False, False]]
    assert rank[1].tolist() == [1, -1, 0]


def test_default_selection_scales_the_paper_to_the_model():
    settings = CatalogSettings()
    assert settings.resolved_neurons_per_layer(5120) == 40  # GPT-2 large, the paper's
    assert settings.resolved_neurons_per_layer(1536) == 12  # SmolLM2-135M
    assert settings.resolved_last_layers(36) == 5  # GPT-2 large: layers 31-35
    assert settings.resolved_last_layers(30) == 4
    assert CatalogSettings(last_layers=50).resolved_last_layers(30) == 30


def test_catalog_frame_has_one_row_per_neuron():
    W_out = torch.randn(2, 4, 3)
    W_U = torch.randn(3, 6)
    stats = congruence_stats(W_out, W_U, top=2)
    qualifies = np.ones(6, dtype=bool)
    selected, rank = select_neurons(stats.score, stats.token_id, qualifies, 2, 1)
    frame = catalog_frame(stats, qualifies, selected, rank, [f" t{i}" for i in range(6)])
    assert len(frame) == 8
    assert frame[["layer", "neuron"]].drop_duplicates().shape[0] == 8
    assert frame["selected"].sum() == 2 and set(frame.loc[frame.selected, "layer"]) == {1}
    assert all(len(t) == 2 for t in frame["top_tokens"])
