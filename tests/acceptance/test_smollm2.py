"""The science on the real SmolLM2-135M (embedded GGUF, dequantized to fp32 once per machine; slow): model facts, a
local checkpoint folder as the same weights, the catalog against the raw weights, the fast reader against
TransformerLens's hook_post, exemplar activations recomputed with plain ``transformers``, the gated attribution's
identity, direct path and score formula, and the look-up terms recomputed from the raw weights. The model fixtures
are in tests/acceptance/conftest.py."""

import numpy as np
import pandas as pd
import pytest
import torch
from direct_path import direct_effect_of_head
from numerics import ACROSS_KERNELS_REL, U32, pre_activation_bound, rounding_bound

from lookups.pipeline.config import (
    DEFAULT_DENY_TOKENS,
    EMBEDDED_MODEL,
    AttributionSettings,
    CatalogSettings,
    ExemplarSettings,
    LookupSettings,
    PromptSetSettings,
)
from lookups.pipeline.inputs import checkpoints, corpora, models
from lookups.pipeline.inputs.runtime import load_runtime
from lookups.pipeline.science import attribution, catalog, exemplars, harvest

pytestmark = pytest.mark.slow

TEXTS = [
    "The river flooded the valley in the spring of 1911, and the villagers moved their cattle to the hills. "
    "When the water went down, they found the old bridge had been carried away.",
    "She opened the letter, read it twice, and then handed it to her brother without a word. He read it and laughed.",
    "In mathematics, a prime number is a natural number greater than one that is not a product of two smaller natural numbers.",
    "The committee met on Tuesday to discuss the budget for the new library. After a long debate, the members voted in favour.",
    "Paris is the capital and most populous city of France. The city is a major centre of finance, diplomacy and the arts.",
    "He was born in a small town in the north of England and moved to London at the age of twenty to study law.",
    "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to create oxygen and energy.",
    "The team won the championship in the final minute of the game, and thousands of fans celebrated in the streets.",
]


def test_model_facts_and_id(source, bridge):
    facts = models.model_facts(bridge)
    assert (facts.n_layers, facts.d_mlp, facts.n_heads, facts.n_kv_heads, facts.d_model) == (30, 1536, 9, 3, 576)
    assert facts.mlp_kind == "gated" and facts.d_vocab == 49152
    assert source.model_id.startswith("smollm2-135m-instruct@") and len(source.fingerprint) == 64


def test_catalog_tokens_match_raw_weights_with_the_final_norm_folded(bridge, hf_model):
    """The bridge's folded W_out·W_U argmax equals the one from raw Hugging Face weights (last two layers)."""
    W_U = (hf_model.lm_head.weight * hf_model.model.norm.weight).T.detach()  # final RMSNorm scale folded in
    for layer in (28, 29):
        W_out = hf_model.model.layers[layer].mlp.down_proj.weight.T.detach()  # [d_mlp, d_model]
        raw = catalog.congruence_stats(W_out[None], W_U)
        folded = catalog.congruence_stats(bridge.W_out[layer][None].detach(), bridge.W_U.detach())
        # Each folded choice is a raw maximum: its raw congruence (in float64) is the raw top one's, within the fp32
        # rounding of two 576-term dot products (the ids themselves may differ where two tokens tie within it;
        # measured: all 3,072 equal here).
        w_out, w_u = W_out.double(), W_U.double()
        at = {name: (w_out * w_u[:, stats.token_id[0]].T).sum(-1) for name, stats in (("raw", raw), ("folded", folded))}
        magnitude = (w_out.abs() * w_u.abs()[:, raw.token_id[0]].T).sum(-1)
        assert ((at["raw"] - at["folded"]).abs() <= 2 * rounding_bound(576) * magnitude).all(), layer
        assert (raw.token_id == folded.token_id).mean() > 0.999


def test_reader_matches_the_bridge_hook_post(source, bridge):
    """The fast reader (plain HF model, SDPA, early stop) reads what TransformerLens calls hook_post."""
    reader = harvest.NeuronReader(models.load_activation_model(source.local_dir), models.mlp_output_paths(bridge), [3, 29, 29], [10, 0, 1535])
    tokens = torch.tensor([[1] + bridge.tokenizer("The cat sat on the mat because it was warm.")["input_ids"]])
    got = reader(tokens)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("mlp.hook_post"))
    expected = torch.stack(
        [cache["blocks.3.mlp.hook_post"][..., 10], cache["blocks.29.mlp.hook_post"][..., 0], cache["blocks.29.mlp.hook_post"][..., 1535]], dim=-1
    )
    # Two implementations of one fp32 forward pass: forward rounding, relative to each neuron's activations over the
    # prompt (as in tests/integration/science/test_families.py; a wrong neuron, layer or position is off by a large fraction).
    assert ((got - expected).abs() <= 1e-3 * expected.abs().amax(-2, keepdim=True)).all()
    early = reader(tokens, stop_layer=3)  # stops after layer 3: deeper columns not computed
    torch.testing.assert_close(early[..., 0], got[..., 0])
    assert torch.isnan(early[..., 1:]).all()


def test_exemplar_activations_match_plain_transformers(bridge, arch, hf_model):
    """Stored activations recomputed with a forward hook on the Hugging Face MLP (no TransformerLens)."""
    catalog_settings = CatalogSettings(neurons_per_layer=2, last_layers=2, min_token_chars=2, deny_tokens=DEFAULT_DENY_TOKENS)
    frame = catalog.build_catalog(arch, bridge.tokenizer, catalog_settings)
    selected = frame[frame["selected"]]
    sources = pd.DataFrame({"source_id": [f"t{i}" for i in range(len(TEXTS))], "title": "", "text": TEXTS})
    prompt_set = corpora.build_prompt_set(sources, PromptSetSettings(max_documents=None, heldout_fraction=0.3))
    settings = ExemplarSettings(top_k=4, keep=3, window_tokens=32)
    runtime = load_runtime(checkpoints.resolve_model(EMBEDDED_MODEL).local_dir)
    rows, stats = exemplars.find_exemplars(runtime, selected, prompt_set.documents, settings)
    assert len(rows) > 0 and stats["neurons_with_exemplars"] == len(selected)
    assert (rows["act_ratio"] >= 0.8 - 1e-6).all() and (rows["prompt_n_tokens"] < 100).all()

    captured = {}

    def capture(module, args):
        captured["x"] = args[0].detach()

    doc_tokens = exemplars.tokenize_documents(bridge.tokenizer, prompt_set.documents.sort_values("doc_index")["text"].tolist())
    doc_index = dict(zip(prompt_set.documents["doc_id"], prompt_set.documents["doc_index"]))
    checked = 0
    for row in rows.sample(min(8, len(rows)), random_state=0).itertuples():
        handle = hf_model.model.layers[row.layer].mlp.down_proj.register_forward_pre_hook(capture)
        try:
            hf_model(torch.tensor([[1] + list(row.prompt_token_ids)]))
            prompt_act = captured["x"][0, -1, row.neuron].item()
            window = doc_tokens[doc_index[row.doc_id]][row.window_start : row.doc_max_pos + 1]
            hf_model(torch.tensor([[1] + window.tolist()]))
            doc_act = captured["x"][0, -1, row.neuron].item()
        finally:
            handle.remove()
        # A batched pass (the step's) against this one-prompt pass: forward rounding, orders of magnitude below 1e-3.
        assert prompt_act == pytest.approx(row.prompt_act, rel=1e-3, abs=1e-3)
        assert doc_act == pytest.approx(row.doc_max_act, rel=1e-3, abs=1e-3)
        checked += 1
    assert checked >= 4


def test_a_local_checkpoint_folder_is_a_model_too(source):
    """The non-embedded path (a Hugging Face checkpoint folder) resolves to the same weights fingerprint."""
    local = checkpoints.resolve_model(source.local_dir)
    assert local.origin == "local" and local.fingerprint == source.fingerprint
    assert local.model_id.endswith("@" + source.fingerprint[:12])


def test_gated_attribution_identity_direct_path_and_score_formula(bridge, arch, hf_model):
    """SwiGLU: gate and up decompositions each sum to their pre-activation; zeroing a head's output at the
    last position with every other path and the LN scale frozen changes the gate and up pre-activations by
    exactly its two contributions; the score is f'(g)·u·gate + f(g)·up at the operating point."""
    tok = bridge.tokenizer
    prompts = ["The capital of France is the city of", "She opened the letter and read it twice, then handed it to her"]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    rows = pd.DataFrame({"layer": [27, 29], "neuron": [100, 700], "doc_id": ["a", "b"], "split": "explain", "prompt_token_ids": ids})
    result = attribution.attribute_exemplars(arch, rows, 1, AttributionSettings())
    totals = result.totals.set_index("doc_id")
    bound = pre_activation_bound(30, 576)  # SmolLM2: 30 layers, d_model 576
    assert (totals["identity_rel_error"] <= bound).all()
    for side in ("gate", "in"):  # the same, recomputed from the stored sums and scales
        assert (np.abs(totals[f"sum_{side}"] - totals[f"pre_{side}"]) <= bound * totals[f"scale_{side}"]).all(), side
    # The model's own activation equals silu(gate) * up: three fp32 operations on the same g and u.
    np.testing.assert_allclose(
        totals["act"], torch.nn.functional.silu(torch.tensor(totals["pre_gate"].values)).numpy() * totals["pre_in"], rtol=16 * U32, atol=0
    )

    heads = result.heads.set_index(["doc_id", "head_layer", "head"])
    for row in rows.itertuples():
        tokens = torch.tensor([[1] + list(row.prompt_token_ids)])
        strongest = heads.loc[row.doc_id]["score"].abs().sort_values().index[-2:].tolist()
        for head_layer, head in strongest + [(row.layer, 4), (3, 0)]:
            effect = direct_effect_of_head(bridge, tokens, row.layer, row.neuron, head_layer, head)
            expected = heads.loc[(row.doc_id, head_layer, head)]
            # Two fp32 passes of the bridge (clean, head zeroed), each rounding a pre-activation by at most the bound.
            for key, column, side in (("pre", "gate_contribution", "gate"), ("pre_linear", "in_contribution", "in")):
                allowed = 2 * bound * totals.loc[row.doc_id, f"scale_{side}"]
                assert abs(effect[key] - expected[column]) <= allowed, (row.doc_id, head_layer, head, key, effect[key], expected[column])
        g, u = totals.loc[row.doc_id, "pre_gate"], totals.loc[row.doc_id, "pre_in"]
        sig = 1 / (1 + np.exp(-g))
        slope, value = sig * (1 + g * (1 - sig)), g * sig
        part = heads.loc[row.doc_id]
        np.testing.assert_allclose(part["score"], slope * u * part["gate_contribution"] + value * part["in_contribution"], rtol=1e-6, atol=1e-9)


def test_lookup_terms_recomputed_with_plain_transformers(bridge, arch, hf_model):
    """Look-ups on the real model: every prompt's terms sum to the head's attribution, and the strongest
    positions' terms equal a recomputation from the raw Hugging Face weights and hooks (attention weights from
    ``output_attentions``, values from ``v_proj``, ``o_proj``, the RMSNorm at its captured scale, the gate and
    up rows) — no TransformerLens, no ``Architecture``."""
    from lookups.pipeline.science import head_reads

    tok = bridge.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in TEXTS[:3]]
    exemplars = pd.DataFrame({"layer": 29, "neuron": 700, "doc_id": ["a", "b", "c"], "split": "explain", "prompt_token_ids": ids})
    heads = attribution.attribute_exemplars(arch, exemplars, 1, AttributionSettings()).heads
    strongest = heads.loc[heads.groupby("doc_id")["score"].idxmax()]
    rows = pd.concat([strongest, heads[(heads.head_layer == 20) & (heads["head"] == 3)]]).merge(exemplars, on=["layer", "neuron", "doc_id", "split"])
    terms = head_reads.head_lookups(arch, rows.assign(cohort="next_token"), LookupSettings(), 1).rows
    assert terms["identity_rel_error"].max() <= rounding_bound(max(len(i) for i in ids) + 2)  # the z = A·V product's rounding

    config = hf_model.config
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    d_head = config.hidden_size // n_heads
    for row in rows.itertuples():
        layer, source, head = int(row.layer), int(row.head_layer), int(row.head)
        tokens = torch.tensor([[1] + list(row.prompt_token_ids)])
        block, attn = hf_model.model.layers[layer], hf_model.model.layers[source].self_attn
        got = {}

        def keep(name, value, got=got):
            got.setdefault(name, value.detach()[0])

        hooks = [
            attn.v_proj.register_forward_hook(lambda m, a, out: keep("v", out)),
            block.post_attention_layernorm.register_forward_hook(lambda m, a, out: keep("norm_in", a[0][:, -1])),
        ]
        with torch.no_grad():
            pattern = hf_model(tokens, output_attentions=True).attentions[source][0, head, -1].double()
        for hook in hooks:
            hook.remove()
        v = got["v"].double().view(-1, n_kv, d_head)[:, head // (n_heads // n_kv)]  # [pos, d_head]; no value bias in Llama
        w_o = attn.o_proj.weight.detach().double()[:, head * d_head:(head + 1) * d_head]  # [d_model, d_head]
        x = got["norm_in"].double()
        rms = torch.sqrt(x.pow(2).mean() + block.post_attention_layernorm.variance_epsilon)
        gain = block.post_attention_layernorm.weight.detach().double()
        mine = terms[(terms.doc_id == row.doc_id) & (terms.head_layer == source) & (terms["head"] == head)].set_index("position")
        for position in mine["contribution"].abs().sort_values().index[-3:]:
            added = w_o @ (pattern[position] * v[position])  # what this position adds to the stream at the last position
            for projection, column in ((block.mlp.gate_proj, "gate_contribution"), (block.mlp.up_proj, "in_contribution")):
                reader = projection.weight.detach().double()[row.neuron] * gain / rms
                # This pass (one prompt, eager) and the look-ups' (a batch) differ by forward rounding: relative to
                # the most this position could add (Cauchy-Schwarz), as the look-up check measures it.
                allowed = ACROSS_KERNELS_REL * float(reader.norm() * added.norm())
                assert abs(float(reader @ added) - mine.loc[position, column]) <= allowed, (row.doc_id, position, column)
