"""QK attribution on the real SmolLM2-135M (the embedded model; slow): a sample of edges on real prompts, each stored
term recomputed from the raw Hugging Face Llama modules (embed_tokens, each earlier layer's o_proj input and MLP
output, input_layernorm at its captured scale, q_proj, k_proj, the model's rotary embedding and its own
``apply_rotary_pos_emb``), with no ``Architecture`` and no code of the module under test. The model fixtures are in
tests/acceptance/conftest.py."""

import pandas as pd
import pytest
import torch

from lookups.pipeline.config import QKSettings
from lookups.pipeline.science import qk_attribution as qk

pytestmark = pytest.mark.slow

TEXTS = [
    "The river flooded the valley in the spring of 1911, and the villagers moved their cattle to the hills.",
    "She opened the letter, read it twice, and then handed it to her brother without a word. He read it and",
]
#: (head layer, head): early, middle and late layers; heads 0 and 8 read key heads 0 and 2 (9 query heads, 3 key heads).
HEADS = [(3, 0), (14, 8), (25, 4)]
#: Relative to |q|·|k|·scaling: the recomputation and the module both work in float64 from fp32 captures of two
#: passes (eager attention both), so they differ by the fp32 rounding of the stream (~1e-7 of it).
RECOMPUTED_REL = 1e-5


def _capture(hf_model, tokens: torch.Tensor, head_layer: int) -> dict:
    """One eager pass: every earlier layer's o_proj input and MLP output, the head layer's input_layernorm input and
    output (all positions, float64), and the attention weights."""
    got, hooks = {}, []
    layers = hf_model.model.layers
    for s in range(head_layer):
        hooks.append(layers[s].self_attn.o_proj.register_forward_hook(lambda m, a, out, s=s: got.__setitem__(f"z{s}", a[0][0].double())))
        hooks.append(layers[s].mlp.register_forward_hook(lambda m, a, out, s=s: got.__setitem__(f"mlp{s}", out[0].double())))
    norm = layers[head_layer].input_layernorm
    hooks.append(norm.register_forward_hook(lambda m, a, out: got.update(stream=a[0][0].double(), normed=out[0].double())))
    try:
        with torch.no_grad():
            got["pattern"] = hf_model(tokens, output_attentions=True).attentions[head_layer][0].double()  # [heads, query, key]
    finally:
        for hook in hooks:
            hook.remove()
    return got


class _Recomputed:
    """One edge's queries and keys, per component, from the raw modules."""

    def __init__(self, hf_model, tokens: torch.Tensor, head_layer: int, head: int):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.model, self.tokens, self.head_layer = hf_model, tokens, head_layer
        self.got = _capture(hf_model, tokens, head_layer)
        attn = hf_model.model.layers[head_layer].self_attn
        norm = hf_model.model.layers[head_layer].input_layernorm
        self.d_head, self.scaling = attn.head_dim, attn.scaling
        self.head, self.kv = head, head // attn.num_key_value_groups
        stream = self.got["stream"]
        self.rms = torch.sqrt(stream.pow(2).mean(-1) + norm.variance_epsilon)  # [pos]
        self.gain = norm.weight.detach().double()
        self.w_q, self.w_k = attn.q_proj.weight.detach().double(), attn.k_proj.weight.detach().double()
        self.cos, self.sin = (t[0].double() for t in hf_model.model.rotary_emb(stream[None], torch.arange(len(stream))[None]))
        self.apply_rotary = apply_rotary_pos_emb

    def component(self, name: str, position: int) -> torch.Tensor:
        """The component's vector in the stream at ``position`` [d_model]."""
        if name == "embed":
            return self.model.model.embed_tokens.weight.detach().double()[self.tokens[0, position]]
        if name == "bias":
            return torch.zeros_like(self.got["stream"][position])  # Llama: no biases, no value biases
        if name.startswith("MLP"):
            return self.got[f"mlp{int(name[3:])}"][position]
        source, h = (int(part) for part in name[1:].split("H"))
        o_proj = self.model.model.layers[source].self_attn.o_proj.weight.detach().double()  # [d_model, heads * d_head]
        columns = slice(h * self.d_head, (h + 1) * self.d_head)
        return o_proj[:, columns] @ self.got[f"z{source}"][position, columns]

    def side(self, x: torch.Tensor, position: int, query: bool) -> torch.Tensor:
        """A stream vector at ``position`` through the RMSNorm at its captured scale, q_proj or k_proj and the rotary."""
        normed = self.gain * x / self.rms[position]
        weight, head = (self.w_q, self.head) if query else (self.w_k, self.kv)
        projected = (weight @ normed).view(-1, self.d_head)[head][None, None, None]  # [1, 1, 1, d_head]
        cos, sin = self.cos[position][None, None], self.sin[position][None, None]
        return self.apply_rotary(projected, projected, cos, sin)[0 if query else 1][0, 0, 0]

    def total(self, position: int, query: bool) -> torch.Tensor:
        """The query or key the layer computes, from input_layernorm's captured output."""
        weight, head = (self.w_q, self.head) if query else (self.w_k, self.kv)
        projected = (weight @ self.got["normed"][position]).view(-1, self.d_head)[head][None, None, None]
        cos, sin = self.cos[position][None, None], self.sin[position][None, None]
        return self.apply_rotary(projected, projected, cos, sin)[0 if query else 1][0, 0, 0]


def test_qk_terms_recomputed_from_raw_transformers_weights(bridge, arch, hf_model):
    tok = bridge.tokenizer
    edges = []
    for i, text in enumerate(TEXTS):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for head_layer, head in HEADS:
            pattern = _capture(hf_model, torch.tensor([[1] + ids]), head_layer)["pattern"][head, -1]
            looked_up = 1 + int(pattern[1:].argmax())  # the head's strongest non-BOS position: a look-up
            for rank, position in enumerate(dict.fromkeys([looked_up, len(ids) // 2]), start=1):
                edges.append({"cohort": "next_token", "layer": 29, "neuron": 700, "head_layer": head_layer, "head": head, "doc_id": f"t{i}",
                              "split": "explain", "active": True, "prompt_token_ids": ids, "position": position, "lookup_rank": rank})
    edges = pd.DataFrame(edges)
    result = qk.qk_attributions(arch, edges, QKSettings(top_components=4), 1)
    assert result.stats["edges"] == len(edges) and result.stats["identity_max_rel_error"] <= RECOMPUTED_REL
    assert result.stats["attention_max_abs_error"] <= qk.AGREEMENT_TOLERANCE
    checked = 0
    for (doc_id, head_layer, head, position), rows in result.rows.groupby(["doc_id", "head_layer", "head", "position"]):
        ids = edges[edges["doc_id"] == doc_id]["prompt_token_ids"].iloc[0]
        tokens = torch.tensor([[1] + list(ids)])
        raw = _Recomputed(hf_model, tokens, head_layer, head)
        t = len(ids)
        q, k = raw.total(t, query=True), raw.total(position, query=False)
        magnitude = float(q.norm() * k.norm()) * raw.scaling
        allowed = RECOMPUTED_REL * magnitude
        assert abs(rows["score"].iloc[0] - float(q @ k) * raw.scaling) <= allowed
        assert abs(rows["attention"].iloc[0] - float(raw.got["pattern"][head, t, position])) <= qk.AGREEMENT_TOLERANCE
        for row in rows.itertuples():
            if row.side == "query":
                expected = raw.side(raw.component(row.component, t), t, query=True) @ k
            elif row.side == "key":
                expected = q @ raw.side(raw.component(row.component, position), position, query=False)
            else:
                key = raw.side(raw.component(row.key_component, position), position, query=False)
                expected = raw.side(raw.component(row.component, t), t, query=True) @ key
            assert abs(row.term - float(expected) * raw.scaling) <= allowed, (doc_id, head_layer, head, position, row.side, row.component, row.term)
            checked += 1
    assert checked > 3 * len(edges)
