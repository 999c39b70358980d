"""The second offline model, Gemma 3 270M base (`--model gemma-3-270m`): its GGUF parts as installed, and the
fp32 checkpoint dequantized from them (once per machine, in the shared cache: about a minute the first time)."""

import pytest
import torch
from checksums import size_and_sha256

from lookups.pipeline.config import GEMMA3_MODEL
from lookups.pipeline.inputs import checkpoints

pytestmark = pytest.mark.slow

TEXT = "The river flooded the valley in the spring of 1911, and the villagers moved their cattle to the hills."


@pytest.fixture(scope="module")
def source():
    return checkpoints.resolve_model(GEMMA3_MODEL)


@pytest.fixture(scope="module")
def tokenizer(source):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source.local_dir)


def test_the_installed_parts_assemble_to_the_published_hash():
    parts = checkpoints.gemma3_gguf_parts()
    assert [p.name for p in parts] == [f"{checkpoints.GEMMA3_GGUF_FILE}.part{i:02d}" for i in range(4)]
    assert size_and_sha256(parts) == (checkpoints.GEMMA3_GGUF_SIZE, checkpoints.GEMMA3_GGUF_SHA256)


def test_it_resolves_to_a_gemma3_checkpoint(source):
    import json
    from pathlib import Path

    config = json.loads((Path(source.local_dir) / "config.json").read_text())
    assert config["model_type"] in ("gemma3", "gemma3_text")  # the GGUF holds the text-only model: gemma3_text
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"], config["vocab_size"]) == (18, 640, 2048, 262144)
    assert source.origin == "embedded-gguf" and source.model_id.startswith("gemma-3-270m@")
    assert checkpoints.resolve_model(GEMMA3_MODEL) == source  # the second call reads the cache


def test_the_tokenizer_round_trips_text(tokenizer):
    ids = tokenizer(TEXT).input_ids
    assert ids[0] == tokenizer.bos_token_id == 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == TEXT
    assert tokenizer.convert_ids_to_tokens(tokenizer(" magic", add_special_tokens=False).input_ids) == ["▁magic"]


def test_the_dequantized_weights_model_english(source, tokenizer):
    """A wrong dequantization or config (rope, norms, soft-capping) shows as a loss near uniform (ln 262144 = 12.5)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source.local_dir, dtype=torch.float32).eval()
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert loss < 4.0  # 2.5 measured on a similar sentence


@pytest.fixture(scope="module")
def arch(source):
    from lookups.pipeline.inputs import architecture

    return architecture.load_architecture(source.local_dir)


def test_the_architecture_is_described_with_post_norms_and_geglu(arch):
    assert arch.summary().startswith("Gemma 3 (text): serial blocks, MLP reads through RMSNorm, post-norms, gated gelu_pytorch_tanh MLP")
    assert all(layer.post_attn_norm and layer.post_mlp_norm for layer in arch.layers)


def test_catalog_tokens_equal_those_through_the_model_modules(arch):
    """A neuron's top tokens from the catalog's weights equal its output row pushed through the model's own
    post-feedforward norm, final norm and tied unembedding (262k tokens)."""
    from lookups.pipeline.science import catalog

    W_out, W_U = arch.congruence_weights()
    model = arch.model
    for layer, neurons in [(12, [0, 1000]), (17, [5, 2047])]:
        stats = catalog.congruence_stats(W_out[layer, neurons][None], W_U, top=5)
        rows = model.get_submodule(arch.layers[layer].mlp_out).weight.detach().T[neurons]  # [n, d_model]
        with torch.no_grad():
            normed = model.get_submodule(arch.final_norm.path)(model.get_submodule(arch.layers[layer].post_mlp_norm.path)(rows[:, None]))
            direct = model.get_output_embeddings()(normed)[:, 0].double()
        assert stats.top_ids[0].tolist() == direct.topk(5).indices.tolist()


def test_the_decomposition_identity_on_real_prompts(arch, tokenizer):
    import pandas as pd

    from lookups.pipeline.config import AttributionSettings
    from lookups.pipeline.science import attribution

    prompts = [TEXT, "She opened the letter and read it twice, then handed it to her brother without a word"]
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    rows = pd.DataFrame(
        {"layer": [9, 17, 17], "neuron": [100, 700, 3], "doc_id": ["a", "b", "a"], "split": "explain", "prompt_token_ids": [ids[0], ids[1], ids[0]]}
    )
    result = attribution.attribute_exemplars(arch, rows, tokenizer.bos_token_id, AttributionSettings())
    from numerics import pre_activation_bound

    assert result.totals["identity_rel_error"].max() <= pre_activation_bound(len(arch.layers), arch.model.config.hidden_size)
    assert len(result.heads) == (10 + 18 + 18) * arch.n_heads  # heads of layers 0..L
