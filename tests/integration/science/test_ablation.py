"""Zero-ablation on the planted model: the batched Hugging Face path (per-row head masks) equals
TransformerLens zeroing the head's z at every position (the KS summary without a model: tests/unit/science/test_ablation.py)."""

import pandas as pd
import pytest
import torch
from numerics import activation_tolerance, pre_activation_bound

from lookups.pipeline.config import AblationSettings, AttributionSettings
from lookups.pipeline.inputs import architecture, models, planted
from lookups.pipeline.science import ablation, attribution


def test_batched_ablation_equals_zeroing_z_in_transformer_lens(planted_circuit):
    bridge = models.load_bridge(planted_circuit.model_dir)
    ablator = ablation.Intervener(architecture.load_architecture(planted_circuit.model_dir))
    tok = bridge.tokenizer
    texts = ["people wizard walked near town", "old spell street", "river wizard quiet", "green spell"]
    token_id = tok.convert_tokens_to_ids("Ġmagic")
    rows = []
    for i, text in enumerate(texts):
        for head_layer, head in [(1, 2), (0, 3), (2, 0)]:
            rows.append({"layer": 2, "neuron": 77, "doc_id": f"d{i}", "split": "explain", "head_layer": head_layer, "head": head,
                         "active": "wizard" in text, "prompt_token_ids": tok(text, add_special_tokens=False)["input_ids"], "next_token_id": token_id})
    out = ablation.ablate_pairs(ablator, pd.DataFrame(rows), AblationSettings(batch_tokens=64), bos_id=0, pad_id=0)  # several batches, mixed heads
    # Our batched pass and the bridge's, both fp32: activations within the rounding of their pre-activations.
    arch = ablator.arch
    totals = attribution.attribute_exemplars(arch, pd.DataFrame(rows).drop_duplicates("doc_id"), 0, AttributionSettings()).totals
    allowed = dict(zip(totals["doc_id"], activation_tolerance(arch.act_fn, totals, pre_activation_bound(planted.N_LAYERS, planted.D_MODEL))))
    for r in out.itertuples():
        tokens = torch.tensor([[0] + tok(texts[int(r.doc_id[1:])], add_special_tokens=False)["input_ids"]])

        def zero(z, hook, head=r.head):
            z[:, :, head] = 0.0
            return z

        names = {"blocks.2.mlp.hook_post"}
        clean_logits, clean = bridge.run_with_cache(tokens, names_filter=lambda n, names=names: n in names)
        with bridge.hooks(fwd_hooks=[(f"blocks.{r.head_layer}.attn.hook_z", zero)]):
            ablated_logits, ablated = bridge.run_with_cache(tokens, names_filter=lambda n, names=names: n in names)
        assert abs(r.clean_act - clean["blocks.2.mlp.hook_post"][0, -1, 77].item()) <= allowed[r.doc_id]
        assert abs(r.ablated_act - ablated["blocks.2.mlp.hook_post"][0, -1, 77].item()) <= allowed[r.doc_id]
        # Probabilities: relative, as in tests/integration/science/test_families.py (forward rounding of the logits).
        assert r.clean_prob == pytest.approx(torch.softmax(clean_logits[0, -1].double(), -1)[token_id].item(), rel=1e-3)
        assert r.ablated_prob == pytest.approx(torch.softmax(ablated_logits[0, -1].double(), -1)[token_id].item(), rel=1e-3)
    plant = out[(out.head_layer == 1) & (out["head"] == 2)]
    assert (plant[plant.active]["act_drop"] > 3).all() and (plant[~plant.active]["act_drop"].abs() < 0.2).all()
