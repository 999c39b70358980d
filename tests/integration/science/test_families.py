"""Every supported model family, on a tiny random checkpoint built offline (tests/tiny_models.py): the
architecture description is verified, and each step that reads the residual stream is exact on it, checked
against a computation that does not use the description's arithmetic:

- attribution: the identity (components sum to the pre-activation), the direct-path intervention on the
  plain Hugging Face model, batched == one prompt at a time;
- ablation: the batched Hugging Face path == TransformerLens zeroing the head's ``z``;
- catalog: each neuron's top tokens == its output weight pushed through the model's own post-MLP norm,
  final norm and unembedding;
- exemplar reading: ``NeuronReader`` == the bridge's ``hook_post``;
- look-ups: each source position's terms sum to the head's attribution, batched == one prompt at a time, and a
  position's term equals lowering the head's output by that position's part (attention weight and value read
  from plain ``transformers`` with ``output_attentions``) in the direct-path intervention.

And families the steps cannot decompose are refused in one line.
"""

import numpy as np
import pandas as pd
import pytest
import tiny_models
import torch
from direct_path import direct_effect_hf
from numerics import (
    ACROSS_KERNELS_REL,
    BATCHED_REL,
    BATCHED_REL_FAMILY,
    activation_tolerance,
    assert_frames_close,
    pre_activation_bound,
    rounding_bound,
)

from lookups.pipeline.config import AblationSettings, AttributionSettings, CatalogSettings, LookupSettings
from lookups.pipeline.inputs import architecture, models
from lookups.pipeline.science import ablation, attribution, batching, catalog, harvest, head_reads

FAMILIES = list(tiny_models.FAMILIES)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_root):
    folder = str(tiny_models.build_tiny(request.param, tiny_root / request.param))
    return request.param, folder, architecture.load_architecture(folder)


@pytest.fixture(scope="module")
def family64(family):
    """The same checkpoint in float64: batched against one at a time then differs only by what the Hugging
    Face code computes in float32 whatever the dtype (tests/numerics.py), so a batching error cannot hide."""
    name, folder, _ = family
    return name, architecture.describe(models.load_bridge(folder), models.load_activation_model(folder).double())


def _prompts(vocab: int, n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(rng.integers(5, 14))).tolist() for _ in range(n)]


def _last(value: torch.Tensor) -> torch.Tensor:
    """The last position of a one-prompt batch (OPT flattens batch and position around its MLP)."""
    return value.reshape(-1, value.shape[-1])[-1]


def _exemplars(arch) -> pd.DataFrame:
    prompts = _prompts(arch.model.config.vocab_size, 4)
    rows = [
        {"layer": layer, "neuron": neuron, "doc_id": f"d{i}", "split": "explain", "prompt_token_ids": ids}
        for layer in range(len(arch.layers)) for neuron in (3, 41) for i, ids in enumerate(prompts)
    ]
    return pd.DataFrame(rows)


def _attribution_bound(arch) -> float:
    return pre_activation_bound(len(arch.layers), arch.model.config.hidden_size)


def test_identity_and_batched_equals_one_at_a_time(family, family64):
    name, _, arch = family
    rows = _exemplars(arch)
    batched = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings())
    totals = batched.totals
    assert len(totals) == len(rows) and totals["identity_rel_error"].max() <= _attribution_bound(arch), name
    assert totals["pre_in"].abs().mean() > 0.1 and totals["heads_in"].abs().mean() > 0.01  # not a trivial model
    per_layer = batched.heads.groupby("layer")["head_layer"].nunique().to_dict()
    assert per_layer == {layer: len(arch.heads_feeding(layer)) for layer in range(len(arch.layers)) if len(arch.heads_feeding(layer))}
    _, arch64 = family64
    batched = attribution.attribute_exemplars(arch64, rows, 0, AttributionSettings())
    single = attribution.attribute_exemplars(arch64, rows, 0, AttributionSettings(batch_tokens=1))
    assert_frames_close(batched.heads, single.heads, BATCHED_REL_FAMILY.get(name, BATCHED_REL))


def test_attribution_equals_the_direct_path_intervention(family):
    name, _, arch = family
    rows = _exemplars(arch)
    rows = rows[(rows.layer == len(arch.layers) - 1) & (rows.neuron == 41)].head(2)
    result = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings())
    heads = result.heads.set_index(["doc_id", "head_layer", "head"])
    scales = result.totals.set_index("doc_id")
    for row in rows.itertuples():
        tokens = torch.tensor([[0] + list(row.prompt_token_ids)])
        part = heads.loc[row.doc_id]
        checked = part["in_contribution"].abs().sort_values().index[-2:].tolist() + [(0, 1), (1, 3)]
        for head_layer, head in checked:
            effect = direct_effect_hf(arch, tokens, row.layer, row.neuron, head_layer, head)
            expected = part.loc[(head_layer, head)]
            # The effect is the difference of two fp32 passes' pre-activations, each rounded by at most the bound.
            for side, column in (("in", "in_contribution"), ("gate", "gate_contribution")):
                if side in effect:
                    allowed = 2 * _attribution_bound(arch) * scales.loc[row.doc_id, f"scale_{side}"]
                    assert abs(effect[side] - expected[column]) <= allowed, (name, side, head_layer, head, effect[side], expected[column])


def _lookup_rows(arch) -> pd.DataFrame:
    rows = _exemplars(arch)
    heads = attribution.attribute_exemplars(arch, rows, 0, AttributionSettings()).heads.merge(rows, on=["layer", "neuron", "doc_id", "split"])
    return heads.assign(cohort="next_token")


def test_lookup_terms_sum_to_the_attribution_and_batched_equals_one_at_a_time(family, family64):
    name, _, arch = family
    rows = _lookup_rows(arch)
    batched = head_reads.head_lookups(arch, rows, LookupSettings(), 0)
    longest = max(len(ids) for ids in rows["prompt_token_ids"]) + 1
    # The terms against this pass's own z: the rounding of the model's z = A·V product over the positions.
    assert batched.stats["pair_prompts"] == len(rows) and batched.stats["identity_max_rel_error"] <= rounding_bound(longest + 1), name
    assert batched.stats["attribution_max_rel_error"] <= ACROSS_KERNELS_REL, name  # against attribute_exemplars' pass
    per_prompt = batched.rows.groupby(["layer", "neuron", "head_layer", "head", "doc_id"])
    # The last query's attention over every source sums to 1 within the softmax's rounding.
    assert np.allclose(per_prompt["attention"].sum(), 1.0, rtol=0, atol=rounding_bound(longest + 1))
    assert (per_prompt["rank"].min() == 1).all() and (batched.rows["distance"] >= 0).all()
    share = batched.rows["contribution"] / per_prompt["contribution"].transform("sum")
    assert np.allclose(batched.rows["share"].dropna(), share[batched.rows["share"].notna()], rtol=1e-12, atol=0)  # its definition
    _, arch64 = family64
    rows64 = _lookup_rows(arch64)
    batched, single = head_reads.head_lookups(arch64, rows64, LookupSettings(), 0), head_reads.head_lookups(arch64, rows64, LookupSettings(batch_tokens=1), 0)
    # share is a ratio to the head's score, ill-conditioned where that is near 0 (its definition is checked above);
    # the error columns measure rounding itself.
    assert_frames_close(batched.rows, single.rows, BATCHED_REL_FAMILY.get(name, BATCHED_REL), exclude=("share", *head_reads.ERROR_COLUMNS))
    # The counterfactual's shortcut (the head's total from its z, the model's own attention kernel) == the terms' sum.
    tokens, lengths = batching.pad_right([np.asarray([0, *ids]) for ids in rows["prompt_token_ids"]], 0)
    row_b = np.arange(len(rows))
    split = head_reads.source_terms(arch, tokens, lengths, rows, row_b, next_token_ids=np.full(len(rows), 5))
    total = head_reads.source_terms(arch, tokens, lengths, rows, row_b, next_token_ids=np.full(len(rows), 5), by_position=False)
    assert ((split.head_score - total.head_score).abs() <= ACROSS_KERNELS_REL * split.parts["score"].magnitude).all(), name
    # Probabilities: a logit moved by δ moves log p by at most 2δ; the logits differ by forward rounding only.
    torch.testing.assert_close(split.prob, total.prob, rtol=1e-4, atol=1e-7)


def test_a_lookup_term_equals_the_direct_path_of_that_position(family):
    name, _, arch = family
    rows = _lookup_rows(arch)
    scales = attribution.attribute_exemplars(arch, _exemplars(arch), 0, AttributionSettings()).totals.set_index(["layer", "neuron", "doc_id"])
    last_layer = len(arch.layers) - 1
    row = rows[(rows.layer == last_layer) & (rows.neuron == 41) & (rows.doc_id == "d1")]
    row = row.loc[row["in_contribution"].abs().idxmax()]
    terms = head_reads.head_lookups(arch, pd.DataFrame([row]), LookupSettings(), 0).rows.set_index("position")
    tokens = torch.tensor([[0] + list(row.prompt_token_ids)])
    s, h = int(row["head_layer"]), int(row["head"])
    model = arch.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            pattern = model(tokens, output_attentions=True).attentions[s][0, h, -1].double()  # plain transformers
    finally:
        model.set_attn_implementation(before)
    values = {}
    handle = model.get_submodule(arch.layers[s].value).register_forward_hook(lambda m, a, out: values.setdefault("v", out.detach().clone()))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    v = arch.head_values(s, values["v"].double())[0, :, h] - arch.layers[s].value_bias.double().view(arch.n_heads, arch.d_head)[h]
    scale = scales.loc[(int(row["layer"]), int(row["neuron"]), row["doc_id"])]
    for position in terms["in_contribution"].abs().sort_values().index[-2:]:
        effect = direct_effect_hf(arch, tokens, int(row["layer"]), int(row["neuron"]), s, h, z_delta=pattern[position] * v[position])
        # Two fp32 passes (clean and lowered), each rounding the pre-activation by at most the bound of its scale;
        # the term is formed in float64 from the same pattern and values.
        for side, column in (("in", "in_contribution"), ("gate", "gate_contribution")):
            if side in effect:
                allowed = 2 * _attribution_bound(arch) * scale[f"scale_{side}"]
                assert abs(effect[side] - terms.loc[position, column]) <= allowed, (name, side, position, effect[side], terms.loc[position, column])


def test_batched_ablation_equals_zeroing_z_in_transformer_lens(family):
    name, folder, arch = family
    bridge = models.load_bridge(folder)
    last = len(arch.layers) - 1
    prompts = _prompts(arch.model.config.vocab_size, 3, seed=1)
    rows = pd.DataFrame(
        [
            {"layer": last, "neuron": 7, "doc_id": f"d{i}", "split": "explain", "head_layer": hl, "head": h, "active": True,
             "prompt_token_ids": ids, "next_token_id": 11}
            for i, ids in enumerate(prompts) for hl, h in [(0, 1), (last - 1, 2)]
        ]
    )
    out = ablation.ablate_pairs(ablation.Intervener(arch), rows, AblationSettings(batch_tokens=40), bos_id=0, pad_id=0)
    # Two implementations of one fp32 forward pass (HF with hooks, the TransformerLens bridge): the activations may
    # differ by the rounding of their pre-activations, through the activation function (tests/numerics.py).
    totals = attribution.attribute_exemplars(arch, rows.drop_duplicates("doc_id"), 0, AttributionSettings()).totals
    allowed = dict(zip(totals["doc_id"], activation_tolerance(arch.act_fn, totals, _attribution_bound(arch))))
    hook = f"blocks.{last}.mlp.hook_post"
    for r in out.itertuples():
        tokens = torch.tensor([[0] + prompts[int(r.doc_id[1:])]])

        def zero(z, hook, head=r.head):
            z[:, :, head] = 0.0
            return z

        clean_logits, clean = bridge.run_with_cache(tokens, names_filter=lambda n: n == hook)
        with bridge.hooks(fwd_hooks=[(f"blocks.{r.head_layer}.attn.hook_z", zero)]):
            ablated_logits, ablated = bridge.run_with_cache(tokens, names_filter=lambda n: n == hook)
        assert abs(r.clean_act - _last(clean[hook])[7].item()) <= allowed[r.doc_id], name
        # The ablated pass reads one head less: its rounding scale is at most the clean one's.
        assert abs(r.ablated_act - _last(ablated[hook])[7].item()) <= allowed[r.doc_id], name
        # A logit moved by δ moves log p by at most 2δ; the two implementations' logits differ by forward rounding,
        # which no bound covers tightly: measured at most 5.6e-6 relative on three CPU kernel paths (a wrong token or
        # position is off by a large fraction).
        assert r.clean_prob == pytest.approx(torch.softmax(clean_logits[0, -1].double(), -1)[11].item(), rel=1e-3), name
        assert r.ablated_prob == pytest.approx(torch.softmax(ablated_logits[0, -1].double(), -1)[11].item(), rel=1e-3), name
    assert (out["act_drop"].abs() > 1e-4).any()  # the ablations did something


def test_catalog_tokens_equal_those_from_the_model_modules(family):
    name, folder, arch = family
    tokenizer = models.load_bridge(folder).tokenizer
    frame = catalog.build_catalog(arch, tokenizer, CatalogSettings(neurons_per_layer=4, last_layers=3, min_token_chars=0, deny_tokens=[], top_tokens=5))
    model = arch.model
    final_norm = model.get_submodule(arch.final_norm.path)
    for layer_index, layer in enumerate(arch.layers):
        out_proj = model.get_submodule(layer.mlp_out)
        weight = out_proj.weight.detach()
        rows = weight if type(out_proj).__name__ == "Conv1D" else weight.T  # [d_mlp, d_model]
        for neuron in (0, 17, 58):
            vectors = torch.stack([rows[neuron], torch.zeros_like(rows[neuron])])[:, None]  # [2, 1, d_model]
            if layer.post_mlp_norm:
                vectors = model.get_submodule(layer.post_mlp_norm.path)(vectors)
            logits = model.get_output_embeddings()(final_norm(vectors))[:, 0].double()
            direct = logits[0] - logits[1]  # the neuron's direct effect; no bias, no norm offset
            got = frame[(frame.layer == layer_index) & (frame.neuron == neuron)].iloc[0]
            # Rank by rank, the tokens chosen have the expected direct effects: two fp32 computations may order
            # tokens whose effects tie within rounding differently, so the effects are compared, not the ids.
            expected = direct.topk(5).values
            tolerance = 1e-4 * float(direct.abs().max())  # fp32 products over d_model and the norms (measured: equal on three paths)
            assert torch.allclose(direct[list(got["top_token_ids"])], expected, rtol=0, atol=tolerance), (name, layer_index, neuron)


def test_exemplar_reading(family):
    name, folder, arch = family
    bridge = models.load_bridge(folder)
    tokens = torch.tensor([[0] + ids for ids in _prompts(arch.model.config.vocab_size, 1, seed=2)])
    reader = harvest.NeuronReader(arch.model, models.mlp_output_paths(bridge), [0, 2, 2], [5, 1, 90])
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("mlp.hook_post"))
    post = {layer: cache[f"blocks.{layer}.mlp.hook_post"].reshape(tokens.shape[1], -1) for layer in (0, 2)}  # OPT's is [pos, d_mlp]
    expected = torch.stack([post[0][:, 5], post[2][:, 1], post[2][:, 90]], -1)
    # Two implementations of one fp32 forward pass (the plain HF model, the bridge): forward rounding, relative to
    # each neuron's activations over the prompt (measured at most 8.1e-6 of that scale on three CPU kernel paths; a
    # wrong neuron, layer or position is off by a large fraction).
    scale = expected.abs().amax(0)
    assert ((reader(tokens)[0] - expected).abs() <= 1e-3 * scale).all(), name


def test_post_layernorm_opt_is_refused_at_the_model_step_in_one_line(tiny_root):
    from lookups.pipeline import steps
    from lookups.pipeline.config import ModelSettings
    from lookups.pipeline.store.store import Store

    folder = str(tiny_models.build_tiny("opt", tiny_root / "opt-post-ln", do_layer_norm_before=False))
    store = Store()
    with pytest.raises(architecture.UnsupportedModel) as refused:
        steps.run_model(ModelSettings(name=folder), store)
    message = str(refused.value)
    assert "'opt'" in message and "post-LayerNorm" in message and "Supported families:" in message and "\n" not in message
    assert store.query("SELECT count(*) AS n FROM models", require_results=False)["n"].iloc[0] == 0  # nothing written for it


def test_a_family_outside_the_tested_list_is_refused(tiny_root, monkeypatch):
    folder = str(tiny_models.build_tiny("gpt2", tiny_root / "gpt2-unlisted", seed=3))
    monkeypatch.delitem(architecture.SUPPORTED_FAMILIES, "gpt2")
    with pytest.raises(architecture.UnsupportedModel, match="Model family 'gpt2' is not supported: its blocks have not been tested"):
        architecture.describe(models.load_bridge(folder), models.load_activation_model(folder))
