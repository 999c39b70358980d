"""Head attribution on the planted-circuit model (fast, 3 layers): the decomposition identity, the direct-path
intervention, and batched == one prompt at a time (the formulas without a model: tests/unit/science/test_attribution.py)."""

import numpy as np
import pandas as pd
import pytest
import torch
from direct_path import direct_effect_of_head
from numerics import BATCHED_REL, assert_frames_close, pre_activation_bound

from lookups.pipeline.config import AttributionSettings
from lookups.pipeline.inputs import architecture, models, planted
from lookups.pipeline.science import attribution


@pytest.fixture(scope="module")
def planted_model(planted_circuit):
    bridge = models.load_bridge(planted_circuit.model_dir)
    arch = architecture.load_architecture(planted_circuit.model_dir)
    texts = ["people wizard walked near town", "old spell street", "river wizard", "quiet light games school wizard friends", "green spell"]
    ids = [bridge.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = pd.DataFrame(
        {
            "layer": planted_circuit.layer,
            "neuron": planted_circuit.neuron,
            "doc_id": [f"d{i}" for i in range(len(ids))],
            "split": "explain",
            "prompt_token_ids": ids,
        }
    )
    # A second neuron of another layer on the same prompts: several layers per batch.
    rows = pd.concat([rows, rows.assign(layer=1, neuron=5)], ignore_index=True)
    return bridge, arch, rows


def test_decomposition_sums_to_the_pre_activation(planted_model, planted_circuit):
    bridge, arch, rows = planted_model
    result = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings())
    assert len(result.totals) == len(rows)
    totals, bound = result.totals, pre_activation_bound(planted.N_LAYERS, planted.D_MODEL)
    assert totals["identity_rel_error"].max() <= bound
    assert (np.abs(totals["sum_in"] - totals["pre_in"]) <= bound * totals["scale_in"]).all()  # recomputed from the columns
    parts = totals[["heads_in", "mlps_in", "embed_in", "bias_in"]].sum(axis=1)
    np.testing.assert_allclose(parts, totals["sum_in"], rtol=1e-12, atol=0)  # float64 sums of the same parts
    # Candidate heads are those of layers 0..L: 3 layers x 4 heads for layer 2, 2 x 4 for layer 1.
    counts = result.heads.groupby(["layer", "doc_id"]).size()
    assert set(counts[planted_circuit.layer]) == {12} and set(counts[1]) == {8}
    planted_rows = result.heads[
        (result.heads.layer == planted_circuit.layer) & (result.heads.head_layer == planted_circuit.head_layer)
        & (result.heads["head"] == planted_circuit.head)
    ]
    assert planted_rows.set_index("doc_id")["active"].to_dict() == {"d0": True, "d1": False, "d2": True, "d3": True, "d4": False}


def test_attribution_equals_the_direct_path_intervention(planted_model, planted_circuit):
    """Zeroing only the head's output at the last position, with every other path and the LN scale frozen,
    changes the pre-activation by exactly the head's attribution."""
    bridge, arch, rows = planted_model
    result = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings())
    heads = result.heads.set_index(["layer", "doc_id", "head_layer", "head"])
    scales = result.totals.set_index(["layer", "doc_id"])["scale_in"]
    for i in (0, 1, 3):
        row = rows.iloc[i]
        tokens = torch.tensor([[0] + list(row.prompt_token_ids)])
        for head_layer, head in [(planted_circuit.head_layer, planted_circuit.head), (0, 1), (2, 3)]:
            effect = direct_effect_of_head(bridge, tokens, int(row.layer), int(row.neuron), head_layer, head)
            expected = heads.loc[(row.layer, row.doc_id, head_layer, head), "in_contribution"]
            # Two fp32 passes (clean, head zeroed), each rounding the pre-activation by at most the bound of its scale.
            allowed = 2 * pre_activation_bound(planted.N_LAYERS, planted.D_MODEL) * scales.loc[(row.layer, row.doc_id)]
            assert abs(effect["pre"] - expected) <= allowed, (row.doc_id, head_layer, head, effect["pre"], expected)


def test_batched_equals_one_prompt_at_a_time(planted_model, planted_circuit):
    """On a float64 copy of the model, so that no rounding can hide a batching error (tests/numerics.py)."""
    bridge, _, rows = planted_model
    arch = architecture.describe(bridge, models.load_activation_model(planted_circuit.model_dir).double())
    batched = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings())
    single = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings(batch_tokens=1))
    assert single.stats["forward_batches"] == single.stats["prompts"] > batched.stats["forward_batches"]
    assert_frames_close(batched.heads, single.heads, BATCHED_REL)
    assert_frames_close(batched.totals, single.totals, BATCHED_REL, exclude=("identity_abs_error", "identity_rel_error"))
