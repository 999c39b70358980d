"""The attention knockout (docs/method.md, "Why the head looks there"):

- on every tiny family, each knockout (resumed at the head's layer, the head's output at the last position
  rebuilt from its other weights) equals a hand-written one with plain ``transformers``: the full forward pass in
  eager attention with the edge's score masked to -inf in that head only, through the attention mask;
- batched equal to one prompt at a time;
- the cached path (each variant runs its last position only, the earlier keys and values from the clean pass)
  equal to the full-sequence path, on prompts of several lengths in one call, and chosen by the 'auto' probe;
- on the planted circuit, blocking the trigger edge removes the head's attribution and lowers the neuron while both
  controls change it by less than 5%: the pair is confirmed, and no pair of the control model is.
"""

import numpy as np
import pandas as pd
import pytest
import tiny_models
import torch

from lookups.pipeline.config import KnockoutSettings
from lookups.pipeline.inputs import architecture
from lookups.pipeline.inputs.capture import capture, eager_attention
from lookups.pipeline.science import knockout
from lookups.pipeline.steps import checks


@pytest.fixture(scope="module", params=list(tiny_models.FAMILIES))
def arch(request, tmp_path_factory):
    folder = tiny_models.build_tiny(request.param, tmp_path_factory.mktemp("tiny") / request.param)
    return architecture.load_architecture(str(folder))


def _prompts(arch) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    vocab = arch.model.config.vocab_size
    rows = []
    for d, n in enumerate((9, 6, 12)):
        ids = rng.integers(3, vocab, size=n).tolist()
        for layer, neuron, head_layer, head in [(2, 7, 1, 2), (2, 30, 2, 0), (1, 11, 0, 3)]:
            rows.append({"cohort": "next_token", "layer": layer, "neuron": neuron, "head_layer": head_layer, "head": head, "doc_id": f"d{d}",
                         "split": "explain", "prompt_kind": "truncated", "prompt_token_ids": ids, "next_token_id": 5 + d,
                         "lookup_position": 2 + d, "consistent_heads": [head, (head + 1) % arch.n_heads]})
    return pd.DataFrame(rows)


def _masked(arch, tokens: torch.Tensor, layer: int, head: int, position: int, read: tuple[int, int], token_id: int) -> tuple[float, float]:
    """The hand-written knockout: one prompt ``[1, pos]``, eager attention, ``head``'s score from the last query to
    ``position`` set to the dtype's lowest value in the additive mask (exp -> 0: the softmax over the rest)."""
    n = tokens.shape[1]

    def mask_edge(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        dtype = arch.model.dtype
        if mask is None:  # some families pass none when nothing is masked beyond causality
            mask = torch.full((n, n), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]
        mask = mask.expand(1, arch.n_heads, n, mask.shape[-1]).clone()
        mask[0, head, n - 1, position] = torch.finfo(dtype).min
        return args, {**kwargs, "attention_mask": mask}

    handle = arch.module(arch.layers[layer].attention).register_forward_pre_hook(mask_edge, with_kwargs=True)
    try:
        with eager_attention(arch.model):
            got = capture(arch.model, tokens, {"act": (arch.layers[read[0]].mlp_out, "input"), "final": (arch.final_norm.path, "output")})
    finally:
        handle.remove()
    act = got["act"].reshape(n, -1)[-1, read[1]].item()
    prob = torch.softmax(arch.logits(got["final"][0, -1]).double(), -1)[token_id].item()
    return act, prob


def test_each_knockout_equals_masking_the_edge_in_eager_attention(arch):
    prompts = _prompts(arch)
    out = knockout.knock_out(arch, prompts, KnockoutSettings(batch_tokens=40), bos_id=0, pad_id=0)
    assert set(out["site"]) == {"lookup", "control_position", "control_head"}
    assert not set(out.loc[out["site"] == "control_head", "knocked_head"]) & {0, 1, 2, 3} - set(range(arch.n_heads))
    # Knockouts that move the neuron by well over the tolerance below, so a knockout that did nothing would fail.
    # (With parallel blocks a layer's MLP does not read its own attention: those rows' drops are exactly 0.)
    moved = out[~((out["head_layer"] == out["layer"]) & arch.parallel)]
    assert (moved["act_drop"].abs() > 1e-4 * moved["clean_act"].abs().clip(lower=1.0)).sum() >= 5  # 10x the abs tolerance
    ids = prompts.drop_duplicates("doc_id").set_index("doc_id")["prompt_token_ids"]
    for r in out.itertuples():
        tokens = torch.tensor([[0, *ids[r.doc_id]]])
        act, prob = _masked(arch, tokens, r.head_layer, r.knocked_head, r.position, (r.layer, r.neuron), 5 + int(r.doc_id[1:]))
        # Two fp32 passes, different kernels (eager from the embedding, the model's own from the head's layer).
        assert r.knocked_act == pytest.approx(act, rel=1e-4, abs=1e-5 * max(1.0, abs(r.clean_act))), r
        assert r.knocked_prob == pytest.approx(prob, rel=1e-3, abs=1e-7), r
    consistent = prompts.set_index(["layer", "neuron", "head_layer", "head"])["consistent_heads"].map(tuple).to_dict()
    for r in out[out["site"] == "control_head"].itertuples():
        assert r.knocked_head not in consistent[(r.layer, r.neuron, r.head_layer, r.head)]


def test_batched_knockouts_equal_one_prompt_at_a_time(arch):
    prompts = _prompts(arch)
    batched = knockout.knock_out(arch, prompts, KnockoutSettings(batch_tokens=4096), bos_id=0, pad_id=0)
    alone = pd.concat(
        [knockout.knock_out(arch, prompts.iloc[[i]], KnockoutSettings(batch_tokens=4096), bos_id=0, pad_id=0) for i in range(len(prompts))],
        ignore_index=True,
    )
    keys = ["layer", "neuron", "head_layer", "head", "doc_id", "prompt_kind", "site"]
    batched, alone = batched.sort_values(keys).reset_index(drop=True), alone.sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(batched[keys + ["knocked_head", "position"]], alone[keys + ["knocked_head", "position"]])
    for column in ("knocked_act", "clean_act", "knocked_score", "knocked_prob"):
        scale = max(1.0, float(alone[column].abs().max()))
        np.testing.assert_allclose(batched[column], alone[column], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("batch_tokens", [40, 4096])
def test_cached_knockouts_equal_the_full_sequence_path(arch, batch_tokens):
    """Prompts of five lengths (two shared by two prompts each), several batches (40) or one (4096): the same rows, and
    every value within fp32 rounding (1e-5 of max(1, |clean value|)); 'auto' probes and takes the cached path."""
    prompts = _prompts(arch)
    rng = np.random.default_rng(4)
    more = prompts[prompts["doc_id"] != "d0"].copy()
    more["prompt_token_ids"] = [rng.integers(3, arch.model.config.vocab_size, size=len(ids)).tolist() for ids in more["prompt_token_ids"]]
    more["doc_id"] = more["doc_id"].map({"d1": "d3", "d2": "d4"})
    longer = prompts[prompts["doc_id"] == "d0"].assign(doc_id="d5", prompt_token_ids=[rng.integers(3, arch.model.config.vocab_size, size=17).tolist()] * 3)
    prompts = pd.concat([prompts, more, longer], ignore_index=True)
    settings = KnockoutSettings(batch_tokens=batch_tokens)
    cached = knockout.knock_out(arch, prompts, settings, bos_id=0, pad_id=0, path="cached")
    full = knockout.knock_out(arch, prompts, settings, bos_id=0, pad_id=0, path="full")
    auto = knockout.knock_out(arch, prompts, settings, bos_id=0, pad_id=0)
    assert (cached.attrs["knockout_path"], full.attrs["knockout_path"], auto.attrs["knockout_path"]) == ("cached", "full", "cached")
    pd.testing.assert_frame_equal(auto, cached)
    assert len(cached) == len(full) and cached["doc_id"].nunique() == 6
    keys = ["layer", "neuron", "head_layer", "head", "doc_id", "prompt_kind", "site", "knocked_head", "position", "distance", "attention"]
    pd.testing.assert_frame_equal(cached[keys], full[keys])
    for column, clean in (("knocked_act", "clean_act"), ("clean_act", "clean_act"), ("knocked_score", "clean_score"),
                          ("clean_score", "clean_score"), ("knocked_prob", None), ("clean_prob", None)):
        scale = np.maximum(1.0, full[clean].abs()) if clean else 1.0
        assert ((cached[column] - full[column]).abs() <= 1e-5 * scale).all(), column


def test_untruncated_windows_move_the_looked_up_position_to_the_same_token():
    prompts = pd.DataFrame([{"doc_id": "a", "prompt_token_ids": [7, 8, 9], "lookup_position": 2, "window_start": 0, "prompt_start": 4,
                             "doc_max_pos": 6},
                            {"doc_id": "b", "prompt_token_ids": [1, 2], "lookup_position": 1, "window_start": 0, "prompt_start": 1, "doc_max_pos": 2}])
    tokens = {"a": np.array([1, 2, 3, 4, 7, 8, 9, 10]), "b": np.array([5, 6, 6])}  # b's tokens differ: no window
    out = knockout.with_untruncated(prompts, tokens, max_window_tokens=5)
    window = out[out["prompt_kind"] == "untruncated"].iloc[0]
    assert list(window["prompt_token_ids"]) == [3, 4, 7, 8, 9] and window["lookup_position"] == 4
    assert window["prompt_token_ids"][window["lookup_position"] - 1] == prompts["prompt_token_ids"][0][prompts["lookup_position"][0] - 1]
    assert len(out) == 3 and (out["prompt_kind"] == "truncated").sum() == 2


def test_the_planted_edge_carries_the_head_and_the_controls_do_not(planted_store):
    circuit, store, planted_id, control_id, _ = planted_store
    rows = store.query("SELECT * FROM lookup_knockouts WHERE model_id = ? AND layer = ? AND neuron = ? AND head_layer = ? AND head = ?",
                       [planted_id, *circuit.key])
    for kind in ("truncated", "untruncated"):
        part = rows[rows["prompt_kind"] == kind].set_index(["doc_id", "site"])
        lookup = part.xs("lookup", level="site")
        assert len(lookup) >= 5
        assert (lookup["score_drop_share"] >= 0.9).all() and (lookup["act_drop"] > 0.5 * lookup["clean_act"]).all()
        for control in ("control_position", "control_head"):
            other = part.xs(control, level="site")
            assert (other["score_drop_share"].abs() < 0.05).all() and (other["act_drop"].abs() < 0.05 * other["clean_act"].abs()).all(), other
    tests = store.query("SELECT * FROM knockout_tests WHERE model_id = ?", [planted_id]).set_index(["layer", "neuron", "head_layer", "head", "prompt_kind"])
    assert tests.loc[(*circuit.key, "truncated"), "confirmed"] and tests.loc[(*circuit.key, "untruncated"), "confirmed"]
    control = store.query("SELECT * FROM knockout_tests WHERE model_id = ?", [control_id])
    assert not control["confirmed"].any()


def test_the_knockout_check_passes_on_the_planted_store(planted_store):
    circuit, store, planted_id, *_ = planted_store
    keys = store.query("SELECT DISTINCT model_id, prompt_set_id FROM knockout_tests WHERE model_id = ?", [planted_id]).iloc[0].to_dict()

    class Handle:  # what the check reads of the step's handle
        model_id, prompt_set_id = keys["model_id"], keys["prompt_set_id"]

    outcome = checks.KNOCKOUTS_VALID.evaluate(Handle(), store, "run")
    assert outcome.result.success, outcome.result
