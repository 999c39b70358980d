"""QK attribution (pipeline/science/qk_attribution.py) on every supported family's tiny random checkpoint and on the
planted circuit: each looked-up edge's pre-softmax score split into (query component, key component) terms.

- the identity: the terms sum to the score formed from the q and k the model computed in the same pass;
- the agreement: the softmax of the decomposed scores gives the model's own (eager) attention weight;
- batched equals one prompt at a time, and the full term matrix sums to the score;
- an independent recomputation (Llama with grouped-query attention and rotary; GPT-2 with LayerNorm, a fused qkv
  and learned positions) from plain ``transformers`` modules: the score and the key-side ``embed`` term;
- the planted head finds the trigger by its embedding, from the constant every token's embedding carries;
- a wrong description, or an edge OLMo's clip_qkv clips, is refused in one line.
"""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import tiny_models
import torch
from numerics import BATCHED_REL, BATCHED_REL_FAMILY

from lookups.pipeline.config import QKSettings
from lookups.pipeline.inputs import architecture, models, planted
from lookups.pipeline.inputs.architecture import UnsupportedModel
from lookups.pipeline.science import qk_attribution as qk

FAMILIES = list(tiny_models.FAMILIES)
#: The identity relative to |q|·|k|·scaling: fp32 rounding of the model's own stream, norm and projection (measured
#: at most 2.1e-7 on every tiny family).
IDENTITY_REL = 1e-5


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-qk")


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tiny_root):
    folder = str(tiny_models.build_tiny(request.param, tiny_root / request.param))
    return request.param, folder, architecture.load_architecture(folder)


def _edges(arch, n_prompts: int = 4, seed: int = 0) -> pd.DataFrame:
    """Edges of prompts of different lengths (5-13 tokens): every head layer, two heads (two key heads under
    grouped-query attention), the first, a middle and the last position."""
    rng = np.random.default_rng(seed)
    vocab = arch.model.config.vocab_size
    prompts = [rng.integers(3, vocab, size=int(rng.integers(5, 14))).tolist() for _ in range(n_prompts)]
    rows = [
        {"cohort": "next_token", "layer": len(arch.layers) - 1, "neuron": 7, "head_layer": head_layer, "head": head, "doc_id": f"d{i}",
         "split": "explain", "active": True, "prompt_token_ids": ids, "position": position, "lookup_rank": rank}
        for i, ids in enumerate(prompts) for head_layer in range(len(arch.layers)) for head in (0, 3)
        for rank, position in enumerate((1, len(ids) // 2 + 1, len(ids)), start=1)
    ]
    return pd.DataFrame(rows)


def _full(arch, edges: pd.DataFrame, batch_tokens: int) -> dict[int, qk.EdgeTerms]:
    """Each edge's ``EdgeTerms`` row, by edge index: (terms, score, magnitude)."""
    found = {}
    for part in qk.edge_terms(arch, edges, 0, batch_tokens):
        for r, edge in enumerate(part.edges):
            found[int(edge)] = (part.terms[r], part.score[r], part.magnitude[r])
    return found


def test_identity_agreement_and_the_stored_rows(family):
    name, _, arch = family
    edges = _edges(arch)
    settings = QKSettings(top_components=4)
    result = qk.qk_attributions(arch, edges, settings, 0)
    rows, stats = result.rows, result.stats
    assert list(rows.columns) == qk.QK_COLUMNS and stats["edges"] == len(edges), name
    assert stats["identity_max_rel_error"] <= IDENTITY_REL, (name, stats)
    assert stats["attention_max_abs_error"] <= qk.AGREEMENT_TOLERANCE, (name, stats)
    per_edge = rows.groupby(qk.EDGE_KEYS)
    assert per_edge.ngroups == len(edges)
    assert (rows["identity_rel_error"] <= settings.identity_tolerance).all()
    # Each side's terms: ranks 1..k by |term| (the key side's embed kept whatever its rank), shares of the score.
    for side in qk.SIDES:
        part = rows[rows["side"] == side]
        top = part[part["rank"] <= settings.top_components]
        for (*_, head_layer, _head, _doc, _split, _active, _position, _rank), ranks in top.groupby(qk.EDGE_KEYS)["rank"]:
            n = len(qk.component_names(arch, head_layer)) ** (2 if side == "pair" else 1)
            assert sorted(ranks) == list(range(1, min(n, settings.top_components) + 1)), (name, side, head_layer)
        ordered = top.sort_values([*qk.EDGE_KEYS, "rank"]).groupby(qk.EDGE_KEYS)["term"].apply(lambda t: bool(np.all(np.diff(np.abs(t)) <= 0)))
        assert ordered.all(), (name, side)
        assert np.allclose(part["share"], part["term"] / part["score"], rtol=1e-12, atol=0)
        assert part["key_component"].notna().all() if side == "pair" else part["key_component"].isna().all()
    assert (rows[(rows["side"] == "key") & (rows["component"] == "embed")].groupby(qk.EDGE_KEYS).size() == 1).all()
    # The stored attention is the model's weight on the edge's position; the margin compares the score with the others'.
    assert rows["attention"].between(0, 1).all() and rows["margin"].notna().any()
    lexical = qk.lexical_share(rows)
    assert len(lexical) == len(edges) and lexical["lexical_share"].notna().all()


def test_the_full_term_matrix_sums_to_the_score_and_batched_equals_one_at_a_time(family):
    """On the float64 copy, batched and one prompt at a time differ only by what the Hugging Face code computes in
    float32 whatever the dtype (tests/numerics.py): measured at most 7e-16 of |q||k|·scaling, GPT-J 4.6e-8 (its
    attention upcasts q and k, which moves earlier layers' z); the fp32 model differs by up to 6.5e-7 between batch
    shapes, which is why the comparison runs in float64."""
    name, folder, arch = family
    edges = _edges(arch)
    matrices = _full(arch, edges, 4096)
    assert len(matrices) == len(edges)
    for terms, score, magnitude in matrices.values():
        assert float((terms.sum() - score).abs()) <= IDENTITY_REL * float(magnitude), name
        assert terms.shape[0] == terms.shape[1]  # the same components on either side
    arch64 = architecture.describe(models.load_bridge(folder), models.load_activation_model(folder).double())
    batched, single = _full(arch64, edges, 4096), _full(arch64, edges, 1)
    tolerance = BATCHED_REL_FAMILY.get(name, BATCHED_REL)
    worst = max(float((batched[e][0] - single[e][0]).abs().max() / batched[e][2]) for e in batched)
    assert worst <= tolerance, (name, worst)


def test_components_name_the_stream_entering_the_head_layer(family):
    name, _, arch = family
    last = len(arch.layers) - 1
    names = qk.component_names(arch, last)
    assert names[0] == "embed" and names[-1] == "bias" and ("pos_embed" in names) == (name in ("gpt2", "opt"))
    assert sum(n.startswith(f"L{last - 1}H") for n in names) == arch.n_heads and f"MLP{last - 1}" in names
    assert not any(n.startswith(f"L{last}H") or n == f"MLP{last}" for n in names)  # serial or parallel: only earlier layers


def _hooked(model, modules: dict[str, torch.nn.Module], tokens: torch.Tensor) -> tuple[dict, tuple]:
    """Each module's input and output on ``tokens`` (eager attention), and the model's attention weights."""
    got, hooks = {}, []
    for name, module in modules.items():
        def keep(m, args, output, name=name):
            got[name] = (args[0].detach()[0].double(), output.detach()[0].double())

        hooks.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad():
            attentions = model(tokens, output_attentions=True).attentions
    finally:
        for hook in hooks:
            hook.remove()
    return got, attentions


def _independent_llama(model, layer: int, head: int, tokens: torch.Tensor, j: int) -> dict[str, float]:
    """Score, weight and key-side embed term of one edge from plain ``transformers`` Llama modules: the captured
    normalized input through q_proj/k_proj, the model's rotary embedding and its own ``apply_rotary_pos_emb``."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    block = model.model.layers[layer]
    attn, norm = block.self_attn, block.input_layernorm
    got, attentions = _hooked(model, {"norm": norm}, tokens)
    x, normed = got["norm"]  # [pos, d_model]
    d_head, groups = attn.head_dim, attn.num_key_value_groups
    q = (normed @ attn.q_proj.weight.double().T).view(len(x), -1, d_head).transpose(0, 1)[None]  # [1, heads, pos, d_head]
    k = (normed @ attn.k_proj.weight.double().T).view(len(x), -1, d_head).transpose(0, 1)[None]
    cos, sin = model.model.rotary_emb(x[None], torch.arange(len(x))[None])
    q, k = apply_rotary_pos_emb(q, k, cos.double(), sin.double())
    t, kv = len(x) - 1, head // groups
    rms = torch.sqrt(x.pow(2).mean(-1) + norm.variance_epsilon)  # [pos]
    embed_j = model.model.embed_tokens.weight.double()[tokens[0, j]] * norm.weight.double() / rms[j]
    k_embed = (embed_j @ attn.k_proj.weight.double().T).view(1, 1, -1, d_head).transpose(1, 2)  # [1, kv heads, 1, d_head]
    k_embed = apply_rotary_pos_emb(k_embed, k_embed, cos[:, j:j + 1].double(), sin[:, j:j + 1].double())[1][0, kv, 0]
    return {
        "score": float(q[0, head, t] @ k[0, kv, j]) * attn.scaling, "attention": float(attentions[layer][0, head, -1, j]),
        "embed": float(q[0, head, t] @ k_embed) * attn.scaling, "magnitude": float(q[0, head, t].norm() * k[0, kv, j].norm()) * attn.scaling,
    }


def _independent_gpt2(model, layer: int, head: int, tokens: torch.Tensor, j: int) -> dict[str, float]:
    """The same from plain GPT-2 modules: ln_1's captured output through the fused c_attn (q | k | v), and the
    key-side embed term: the token embedding (no positions) through ln_1 at its captured scale and W_K."""
    block = model.transformer.h[layer]
    got, attentions = _hooked(model, {"ln": block.ln_1}, tokens)
    x, normed = got["ln"]
    d_model, d_head = x.shape[-1], block.attn.head_dim
    w, b = block.attn.c_attn.weight.double(), block.attn.c_attn.bias.double()
    columns = slice(head * d_head, (head + 1) * d_head)
    q = (normed @ w[:, :d_model] + b[:d_model])[:, columns]
    k = (normed @ w[:, d_model:2 * d_model] + b[d_model:2 * d_model])[:, columns]
    t, scaling = len(x) - 1, d_head ** -0.5
    sd = torch.sqrt(x.var(-1, unbiased=False) + block.ln_1.eps)
    embed_j = model.transformer.wte.weight.double()[tokens[0, j]]
    k_embed = (block.ln_1.weight.double() * (embed_j - embed_j.mean()) / sd[j]) @ w[:, d_model:2 * d_model][:, columns]
    return {
        "score": float(q[t] @ k[j]) * scaling, "attention": float(attentions[layer][0, head, -1, j]),
        "embed": float(q[t] @ k_embed) * scaling, "magnitude": float(q[t].norm() * k[j].norm()) * scaling,
    }


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_scores_and_terms_recomputed_from_plain_transformers(name, tiny_root):
    from transformers import AutoModelForCausalLM

    folder = str(tiny_models.build_tiny(name, tiny_root / name))
    arch = architecture.load_architecture(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    edges = _edges(arch, n_prompts=2, seed=3)
    edges = edges[edges["head_layer"] > 0]
    if name == "llama":
        assert arch.n_kv_heads == 2 and edges["head"].map(arch.kv_head).nunique() == 2  # grouped-query: both key heads read
    rows = qk.qk_attributions(arch, edges, QKSettings(), 0).rows
    independent = _independent_llama if name == "llama" else _independent_gpt2
    keyed = rows[(rows["side"] == "key") & (rows["component"] == "embed")].set_index(["doc_id", "head_layer", "head", "position"])
    for edge in edges.itertuples():
        tokens = torch.tensor([[0] + list(edge.prompt_token_ids)])
        expected = independent(model, edge.head_layer, edge.head, tokens, edge.position)
        got = keyed.loc[(edge.doc_id, edge.head_layer, edge.head, edge.position)]
        allowed = IDENTITY_REL * expected["magnitude"]
        assert abs(got["score"] - expected["score"]) <= allowed, (edge, got["score"], expected)
        assert abs(got["term"] - expected["embed"]) <= allowed, (edge, got["term"], expected)
        assert abs(got["attention"] - expected["attention"]) <= qk.AGREEMENT_TOLERANCE


def _planted_edges(circuit, tokenizer) -> pd.DataFrame:
    """The planted pair on every trigger document, each edge to the trigger token."""
    trigger = {tokenizer.convert_tokens_to_ids(form) for form in (planted.TRIGGER, "Ġ" + planted.TRIGGER)}
    rows = []
    for i, text in enumerate(planted.planted_corpus()):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if planted.TRIGGER in text:
            position = 1 + next(p for p, token in enumerate(ids) if token in trigger)  # BOS first
            rows.append({"cohort": "next_token", "layer": circuit.layer, "neuron": circuit.neuron, "head_layer": circuit.head_layer,
                         "head": circuit.head, "doc_id": f"doc{i}", "split": "explain", "active": True, "prompt_token_ids": ids,
                         "position": position, "lookup_rank": 1})
    return pd.DataFrame(rows)


def test_the_planted_head_finds_the_trigger_by_its_embedding(planted_circuit):
    """The planted head queries the constant every embedding carries and keys the trigger's embedding: both sides'
    top component is ``embed``, the key side's carrying most of the score."""
    arch = architecture.load_architecture(planted_circuit.model_dir)
    edges = _planted_edges(planted_circuit, models.load_tokenizer(planted_circuit.model_dir))
    result = qk.qk_attributions(arch, edges, QKSettings(), 0)
    rows = result.rows
    assert result.stats["edges"] == len(edges) > 10 and result.stats["identity_max_rel_error"] <= IDENTITY_REL
    assert result.stats["attention_max_abs_error"] <= qk.AGREEMENT_TOLERANCE
    first = rows[rows["rank"] == 1]
    for side in ("query", "key"):
        assert (first[first["side"] == side]["component"] == "embed").all(), first[first["side"] == side]["component"].value_counts()
    lexical = qk.lexical_share(rows)
    assert (lexical["lexical_share"] > 0.5).all() and (lexical["embed_rank"] == 1).all(), lexical["lexical_share"].describe()
    pairs = first[first["side"] == "pair"]
    assert ((pairs["component"] == "embed") & (pairs["key_component"] == "embed")).all()
    assert (rows["attention"] > 0.5).all() and (rows["margin"] > 0).all()  # the trigger is the position it attends to most


def test_a_wrong_description_is_refused(tiny_root):
    """Agreement catches a description that is wrong (here: a scaling 1.5 times the model's), and a model
    whose attention failed its probe check is refused with the line the probe found."""
    folder = str(tiny_models.build_tiny("gptj", tiny_root / "gptj"))
    arch = architecture.load_architecture(folder)
    edges = _edges(arch, n_prompts=1)
    wrong = dataclasses.replace(arch, layers=tuple(dataclasses.replace(layer, scaling=1.5 * layer.scaling) for layer in arch.layers))
    with pytest.raises(UnsupportedModel, match="misses the model's attention weight") as refused:
        qk.qk_attributions(wrong, edges, QKSettings(), 0)
    assert "\n" not in str(refused.value)
    with pytest.raises(UnsupportedModel, match="probe said no"):
        qk.qk_attributions(dataclasses.replace(arch, qk_refusal="probe said no"), edges, QKSettings(), 0)


def test_olmo_clip_qkv_is_refused_only_where_it_clips(tiny_root):
    clipped = architecture.load_architecture(str(tiny_models.build_tiny("olmo", tiny_root / "olmo-clip", clip_qkv=0.05)))
    assert clipped.qk_refusal is None and clipped.clip_qkv == 0.05  # the probe's pattern is reproduced with the clamp
    with pytest.raises(UnsupportedModel, match="clip_qkv"):
        qk.qk_attributions(clipped, _edges(clipped, n_prompts=1), QKSettings(), 0)
    loose = architecture.load_architecture(str(tiny_models.build_tiny("olmo", tiny_root / "olmo-loose", clip_qkv=1e3)))
    assert qk.qk_attributions(loose, _edges(loose, n_prompts=1), QKSettings(), 0).stats["identity_max_rel_error"] <= IDENTITY_REL
