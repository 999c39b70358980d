"""Catalog math on small matrices (no model)."""

import numpy as np
import torch
from numerics import rounding_bound

from lookups.pipeline.config import CatalogSettings
from lookups.pipeline.science import catalog
from lookups.pipeline.science.catalog import catalog_frame, congruence_stats, neuron_roles, qualifying_tokens, select_neurons


def test_congruence_stats_match_the_dense_product():
    gen = torch.Generator().manual_seed(0)
    W_out = torch.randn(3, 7, 5, generator=gen)
    W_U = torch.randn(5, 11, generator=gen)
    stats = congruence_stats(W_out, W_U, top=3, chunk=4)  # chunk smaller than a layer: crosses layers
    dense = torch.einsum("lnd,dv->lnv", W_out.double(), W_U.double()).numpy()  # the exact products, to float64 rounding
    # fp32 products of 5 terms: off by at most rounding_bound(5) of the sum of the terms' magnitudes.
    magnitude = torch.einsum("lnd,dv->lnv", W_out.abs().double(), W_U.abs().double()).numpy().max(-1)
    assert (np.abs(stats.score - dense.max(-1)) <= rounding_bound(5) * magnitude).all()
    np.testing.assert_array_equal(stats.token_id, dense.argmax(-1))  # (no two entries of these rows tie within that)
    # Means and variances over 11 such products: a few tens of u of the magnitude, far inside these tolerances.
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
    assert set(frame["role"]) <= {"prediction", "suppression", "other"}
    assert (frame["bottom_score"] <= frame["score"]).all()
    assert frame["bottom_token"].tolist() == [f" t{i}" for i in frame["bottom_token_id"]]


def direct_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skewness and excess kurtosis of each row, straight from their definitions, in float64 (no scipy)."""
    rows = rows.astype(np.float64)
    d = rows - rows.mean(axis=-1, keepdims=True)
    m2, m3, m4 = ((d**k).mean(axis=-1) for k in (2, 3, 4))
    return m3 / m2**1.5, m4 / m2**2 - 3.0


def test_vocab_skew_and_kurtosis_equal_the_direct_computation(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    W_out = torch.randn(3, 7, 5, generator=gen) + 0.5  # an offset: the congruence rows' means are not zero
    W_U = torch.randn(5, 41, generator=gen) ** 3  # heavy-tailed unembeddings: skews and kurtoses far from 0
    monkeypatch.setattr(catalog, "MOMENT_PIECE_ELEMENTS", 16)  # pieces of the vocabulary, accumulated across
    stats = congruence_stats(W_out, W_U, top=3, chunk=4)  # and chunks that cross layers
    dense = torch.einsum("lnd,dv->lnv", W_out.double(), W_U.double()).numpy()
    skew, kurtosis = direct_moments(dense)
    assert np.abs(kurtosis).max() > 1.0 and np.abs(skew).max() > 0.5
    np.testing.assert_allclose(stats.vocab_skew, skew, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats.vocab_kurtosis, kurtosis, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(stats.bottom_id, dense.argmin(-1))
    magnitude = torch.einsum("lnd,dv->lnv", W_out.abs().double(), W_U.abs().double()).numpy().max(-1)
    assert (np.abs(stats.bottom_score - dense.min(-1)) <= rounding_bound(5) * magnitude).all()  # fp32 products of 5 terms


def test_a_neuron_that_writes_nothing_has_no_shape():
    W_out = torch.zeros(1, 2, 4)
    W_out[0, 1] = torch.tensor([1.0, -2.0, 0.5, 3.0])
    stats = congruence_stats(W_out, torch.randn(4, 30, generator=torch.Generator().manual_seed(2)))
    assert stats.vocab_skew[0, 0] == 0.0 and stats.vocab_kurtosis[0, 0] == 0.0
    assert np.isfinite(stats.vocab_skew).all() and np.isfinite(stats.vocab_kurtosis).all()


def test_planted_prediction_and_suppression_neurons_get_their_roles():
    """A neuron that writes one token's unembedding predicts it; one that writes minus it suppresses it. As in the
    planted circuit, each of the two tokens has a direction of its own in the residual stream."""
    gen = torch.Generator().manual_seed(3)
    d_model, d_vocab = 64, 2000
    W_U = 0.1 * torch.randn(d_model, d_vocab, generator=gen)
    W_U[:2] = 0.0
    W_U[0, 17], W_U[1, 42] = 3.0, 3.0
    W_out = 0.02 * torch.randn(1, 4, d_model, generator=gen)  # neurons 2 and 3: small random rows
    W_out[0, 0] = W_U[:, 17]  # prediction: raises token 17
    W_out[0, 1] = -W_U[:, 42]  # suppression: lowers token 42
    stats = congruence_stats(W_out, W_U, top=2)
    roles = neuron_roles(stats.vocab_skew, stats.vocab_kurtosis).tolist()[0]
    assert roles == ["prediction", "suppression", "other", "other"], (stats.vocab_skew, stats.vocab_kurtosis)
    assert stats.token_id[0, 0] == 17 and stats.bottom_id[0, 1] == 42
    assert stats.vocab_kurtosis[0, 0] > 100 and stats.vocab_skew[0, 0] > 5 and stats.vocab_skew[0, 1] < -5
    frame = catalog_frame(stats, np.ones(d_vocab, dtype=bool), np.ones((1, 4), dtype=bool), np.zeros((1, 4), dtype=int), [f"t{i}" for i in range(d_vocab)])
    assert frame["role"].tolist() == roles and frame.loc[1, "bottom_token"] == "t42"


def test_role_thresholds():
    skew, kurtosis = np.array([3.0, -3.0, 3.0, 0.2]), np.array([20.0, 20.0, 5.0, 20.0])
    assert neuron_roles(skew, kurtosis).tolist() == ["prediction", "suppression", "other", "prediction"]
    assert neuron_roles(skew, kurtosis, kurtosis_min=4.0, skew_min=0.5).tolist() == ["prediction", "suppression", "prediction", "other"]
    assert CatalogSettings().role_kurtosis_min == 7.0  # Gurnee et al.'s kurtosis > 10 (3 for a Gaussian)
