"""QK attribution's pieces on their own, without a model: ranking terms, shares, the margin, the stored rows of a term
matrix, the lexical share, the rotary turn (every family on its tiny model: tests/integration/science/test_qk_attribution.py)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lookups.pipeline.inputs.architecture import Layer, rotate
from lookups.pipeline.science import qk_attribution as qk


def test_top_terms_rank_by_magnitude_and_keep_the_always_column():
    values = np.array([[0.1, -3.0, 2.0, 0.5], [1.0, 1.0, -1.0, 0.0]])
    row, column, rank = qk.top_terms(values, 2)
    assert row.tolist() == [0, 0, 1, 1] and column.tolist() == [1, 2, 0, 1] and rank.tolist() == [1, 2, 1, 2]  # ties: lower index first
    row, column, rank = qk.top_terms(values, 1, always=3)
    assert list(zip(row.tolist(), column.tolist(), rank.tolist())) == [(0, 1, 1), (0, 3, 3), (1, 0, 1), (1, 3, 4)]
    row, _, rank = qk.top_terms(values, 10)  # k beyond the width: every entry once
    assert len(row) == values.size and sorted(rank[row == 0].tolist()) == [1, 2, 3, 4]


def test_shares_are_terms_over_the_score_and_nan_without_one():
    shares = qk.shares(np.array([1.0, -2.0, 3.0]), np.array([4.0, 4.0, 0.0]))
    assert shares[:2].tolist() == [0.25, -0.5] and np.isnan(shares[2])


def test_the_margin_leaves_out_bos_the_edge_and_unseen_positions():
    scores = torch.tensor([[9.0, 1.0, 5.0, 2.0, 7.0], [9.0, 3.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    seen = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    position = torch.tensor([2, 1, 4])
    margin = qk.score_margin(scores, seen, position, scores[torch.arange(3), position])
    # Row 0: 5 against max(1, 2) (BOS's 9 and the unseen 7 left out); row 1: nothing else seen; row 2: 4 against 3.
    assert margin[0] == 3.0 and torch.isnan(margin[1]) and margin[2] == 1.0


def test_component_names_are_the_stream_entering_the_layer():
    arch = SimpleNamespace(pos_embed=None, n_heads=2)
    assert qk.component_names(arch, 0) == ["embed", "bias"]
    assert qk.component_names(arch, 2) == ["embed", "L0H0", "L0H1", "MLP0", "L1H0", "L1H1", "MLP1", "bias"]
    assert qk.component_names(SimpleNamespace(pos_embed="wpe", n_heads=1), 1) == ["embed", "pos_embed", "L0H0", "MLP0", "bias"]


def _edges(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "cohort": "next_token", "layer": 2, "neuron": 5, "head_layer": 1, "head": 0, "doc_id": [f"d{i}" for i in range(n)],
        "split": "explain", "active": True, "position": 3, "lookup_rank": 1,
    })


def test_the_stored_rows_of_a_term_matrix():
    names = ["embed", "L0H0", "MLP0", "bias"]
    terms = torch.tensor([[[4.0, 0.5, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    score = terms.sum(dim=(1, 2))
    found = qk.EdgeTerms(
        edges=np.array([0]), components=names, terms=terms, score=score, magnitude=torch.tensor([10.0], dtype=torch.float64),
        attention=torch.tensor([0.7], dtype=torch.float64), described_attention=torch.tensor([0.7 + 1e-6], dtype=torch.float64),
        margin=torch.tensor([1.5], dtype=torch.float64), token_id=np.array([42]),
    )
    rows = qk._frame(_edges(1), found, 2)
    assert list(rows.columns) == qk.QK_COLUMNS
    by_side = {side: part.set_index("rank") for side, part in rows.groupby("side")}
    # Query side: q_c · k_total, rows of the matrix: embed 4.5, L0H0 -1, MLP0 0.25 -> the top 2.
    assert by_side["query"]["component"].tolist() == ["embed", "L0H0"] and by_side["query"]["term"].tolist() == [4.5, -1.0]
    # Key side: columns (embed 3, L0H0 0.5, MLP0 0.25): the top 2, embed always among them.
    assert by_side["key"]["component"].tolist() == ["embed", "L0H0"] and by_side["key"]["key_component"].isna().all()
    assert by_side["pair"][["component", "key_component"]].values.tolist() == [["embed", "embed"], ["L0H0", "embed"]]
    assert np.allclose(rows["share"], rows["term"] / 3.75) and (rows["score"] == 3.75).all()
    assert (rows["identity_abs_error"] == 0).all() and rows["attention_abs_error"].iloc[0] == pytest.approx(1e-6)
    assert (rows["token_id"] == 42).all() and (rows["margin"] == 1.5).all()


def test_the_key_sides_embed_is_kept_whatever_its_rank_and_gives_the_lexical_share():
    names = ["embed", "L0H0", "bias"]
    terms = torch.tensor([[[0.1, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    found = qk.EdgeTerms(
        edges=np.array([0]), components=names, terms=terms, score=terms.sum(dim=(1, 2)), magnitude=torch.ones(1, dtype=torch.float64),
        attention=torch.ones(1, dtype=torch.float64), described_attention=torch.ones(1, dtype=torch.float64),
        margin=torch.ones(1, dtype=torch.float64), token_id=np.array([7]),
    )
    rows = qk._frame(_edges(1), found, 1)
    key = rows[rows["side"] == "key"]
    assert key["component"].tolist() == ["L0H0", "embed"] and key["rank"].tolist() == [1, 2]
    lexical = qk.lexical_share(rows)
    assert len(lexical) == 1 and lexical["lexical_share"][0] == pytest.approx(0.1 / 3.1) and lexical["embed_rank"][0] == 2


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotate_is_a_rotation_of_the_leading_dims_and_linear(interleaved):
    """The turn keeps each pair's length, leaves the dims past rotary_dim alone and is linear (so it turns each
    component alike); at position 0 (cos 1, sin 0) it is the identity."""
    spec = Layer("o", "i", None, "out", None, None, None, rotary_dim=4, rotary_interleaved=interleaved)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 6, generator=generator, dtype=torch.float64), torch.randn(3, 6, generator=generator, dtype=torch.float64)
    angle = torch.tensor([0.3, 1.1], dtype=torch.float64)
    angle = angle.repeat_interleave(2) if interleaved else angle.repeat(2)
    cos, sin = angle.cos(), angle.sin()
    turned = rotate(spec, x, cos, sin)
    assert torch.allclose(turned[:, 4:], x[:, 4:]) and torch.allclose(turned.norm(dim=-1), x.norm(dim=-1))
    assert torch.allclose(rotate(spec, x + 2 * y, cos, sin), turned + 2 * rotate(spec, y, cos, sin))
    assert torch.equal(rotate(spec, x, torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)), x)
    pairs = [(0, 1), (2, 3)] if interleaved else [(0, 2), (1, 3)]
    for a, b in pairs:  # each pair turns by its angle
        assert torch.allclose(turned[:, a], x[:, a] * cos[a] - x[:, b] * sin[a])
