"""Tiny random checkpoints, one per model family, built offline from ``transformers`` configs.

Weights are drawn larger than the libraries' initializers (std 0.02 would make every activation nearly
linear and every norm nearly the identity), norm weights and biases are random too, so a decomposition
that ignores a norm, a bias or a parallel block is visibly wrong. Every family has 3 layers, 4 query heads
(2 key/value heads where the family has grouped-query attention) of dimension 16, and the planted
circuit's word-level tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lookups.pipeline.inputs import planted

D_MODEL, N_HEADS, D_HEAD, N_LAYERS, D_MLP = 64, 4, 16, 3, 96

_COMMON = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "tie_word_embeddings": False}
_LLAMA_LIKE = {
    "hidden_size": D_MODEL, "intermediate_size": D_MLP, "num_hidden_layers": N_LAYERS, "num_attention_heads": N_HEADS,
    "num_key_value_heads": 2, "head_dim": D_HEAD, "max_position_embeddings": 128,
}
_GEMMA = {**_LLAMA_LIKE, "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": D_HEAD, "tie_word_embeddings": True}

#: family -> (config class name, config arguments). Each exercises something the others do not.
FAMILIES: dict[str, tuple[str, dict]] = {
    "gpt2": ("GPT2Config", {"n_embd": D_MODEL, "n_layer": N_LAYERS, "n_head": N_HEADS, "n_inner": D_MLP, "n_positions": 128}),
    "neox-parallel": (  # every Pythia model: attention and MLP read the same block input
        "GPTNeoXConfig",
        {"hidden_size": D_MODEL, "num_hidden_layers": N_LAYERS, "num_attention_heads": N_HEADS, "intermediate_size": D_MLP,
         "rotary_pct": 0.25, "use_parallel_residual": True, "max_position_embeddings": 128},
    ),
    "neox-serial": (
        "GPTNeoXConfig",
        {"hidden_size": D_MODEL, "num_hidden_layers": N_LAYERS, "num_attention_heads": N_HEADS, "intermediate_size": D_MLP,
         "rotary_pct": 0.25, "use_parallel_residual": False, "max_position_embeddings": 128},
    ),
    "gptj": (  # parallel, one norm shared by attention and MLP, partial rotary
        "GPTJConfig", {"n_embd": D_MODEL, "n_layer": N_LAYERS, "n_head": N_HEADS, "n_inner": D_MLP, "rotary_dim": 8, "n_positions": 128},
    ),
    "llama": ("LlamaConfig", dict(_LLAMA_LIKE)),  # grouped-query attention, SwiGLU, RMSNorm
    "mistral": ("MistralConfig", {**_LLAMA_LIKE, "sliding_window": 6}),
    "qwen2": ("Qwen2Config", dict(_LLAMA_LIKE)),  # q, k, v biases
    "gemma": ("GemmaConfig", dict(_GEMMA)),  # GeGLU, RMSNorm with (1 + w), embeddings scaled by sqrt(d_model)
    "gemma2": (  # post-attention and post-MLP norms, logit soft-capping, sliding windows
        "Gemma2Config", {**_GEMMA, "sliding_window": 6, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0},
    ),
    "gemma3": ("Gemma3TextConfig", {**_GEMMA, "sliding_window": 6}),  # post-norms, q/k norms, local and global layers
    "phi": (  # parallel, shared norm, partial rotary, biases everywhere
        "PhiConfig", {"hidden_size": D_MODEL, "intermediate_size": D_MLP, "num_hidden_layers": N_LAYERS, "num_attention_heads": N_HEADS,
                      "partial_rotary_factor": 0.5, "max_position_embeddings": 128},
    ),
    "opt": (  # learned positions (offset 2), fc1/fc2 directly on the layer, ReLU
        "OPTConfig", {"hidden_size": D_MODEL, "ffn_dim": D_MLP, "num_hidden_layers": N_LAYERS, "num_attention_heads": N_HEADS,
                      "word_embed_proj_dim": D_MODEL, "do_layer_norm_before": True, "max_position_embeddings": 128},
    ),
    "olmo": ("OlmoConfig", {**_LLAMA_LIKE, "num_key_value_heads": N_HEADS}),  # LayerNorm without weights
    "olmo2": ("Olmo2Config", {**_LLAMA_LIKE, "num_key_value_heads": N_HEADS}),  # post-norms only: the MLP reads the raw stream
    "qwen3": ("Qwen3Config", dict(_LLAMA_LIKE)),  # q/k norms
}


def _scramble(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    offset_norms = getattr(model.config, "model_type", "").startswith("gemma")  # Gemma's norms scale by (1 + w)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm = "norm" in name or ".ln" in name or "layernorm" in name.lower()
            if is_norm and name.endswith("weight"):
                param.copy_(0.3 * noise if offset_norms else 1.0 + 0.3 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            else:
                param.copy_(noise / param.shape[-1] ** 0.5 * 1.5)


def build_tiny(family: str, folder: str | Path, seed: int = 0, **overrides) -> Path:
    """Write the family's tiny random checkpoint (config arguments ``overrides`` on top of the family's) and
    tokenizer to ``folder`` (once) and return it."""
    import transformers
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder
    tokenizer = planted.planted_tokenizer()
    config_class, arguments = FAMILIES[family]
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer.get_vocab()), **{**_COMMON, **arguments, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    _scramble(model, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
