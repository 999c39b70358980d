"""Loading a checkpoint (``checkpoints.py`` finds it): the plain Hugging Face model the steps compute with, the
TransformerLens bridge that names its modules, the module paths per layer, and the model's facts."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from lookups.pipeline.inputs.checkpoints import ModelError


def quiet_loading() -> None:
    """No "Loading weights" progress bar from transformers: on a terminal it is noise between the step lines."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


@functools.lru_cache(maxsize=4)
def load_tokenizer(local_dir: str):
    """The checkpoint's tokenizer (no weights), once per process."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(local_dir)
    except (ValueError, KeyError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"The tokenizer in {local_dir} cannot be loaded: {first_line}") from err


def boot_bridge(local_dir: str, device: str = "cpu"):
    """A new ``TransformerBridge`` with LayerNorm folded and writing weights centred (a copy of the weights: the
    steps use it only to name the model's modules, ``runtime.load_runtime``, and let it go)."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    torch.set_grad_enabled(False)
    quiet_loading()
    tokenizer = load_tokenizer(local_dir)
    try:
        bridge = TransformerBridge.boot_transformers(local_dir, tokenizer=tokenizer, dtype=torch.float32, device=device)
    except (ValueError, KeyError, NotImplementedError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"TransformerLens cannot boot the model in {local_dir}: {first_line}") from err
    bridge.enable_compatibility_mode()
    bridge.eval()
    return bridge


@functools.lru_cache(maxsize=2)
def load_bridge(local_dir: str, device: str = "cpu"):
    """``boot_bridge``, kept once per process: for TransformerLens's own analyses (the tests' references, the
    benchmarks). The steps never hold one."""
    return boot_bridge(local_dir, device)


@functools.lru_cache(maxsize=2)
def load_activation_model(local_dir: str, device: str = "cpu"):
    """The same checkpoint as a plain Hugging Face model (SDPA attention), for reading MLP activations fast.
    Its activations equal the bridge's ``hook_post`` (folding LayerNorm is exact); a test checks it."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_grad_enabled(False)
    # float32 products in float32: TF32 (10-bit mantissas, on NVIDIA GPUs when a caller allows it) would round
    # 8,000 times more than the identity checks are set for (docs/quality.md#tolerances).
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    quiet_loading()
    model = AutoModelForCausalLM.from_pretrained(local_dir, dtype=torch.float32)
    return model.to(device).eval()


def _hf_module_paths(bridge, part: str, leaf: str) -> list[str | None]:
    """Per layer, the path in a plain Hugging Face model of the module behind bridge component
    ``blocks[L].<part>.<leaf>``, from the names in the bridge's own component mapping, so it holds for every
    architecture TransformerLens supports (the bridge may regroup modules, e.g. GPT-2's fused qkv)."""
    paths = []
    for block in bridge.blocks:
        parent = getattr(block, part)
        module = parent._modules.get(leaf)
        # Some families keep the MLP's projections directly in the block (OPT: ``fc1``, ``fc2``): no parent name.
        paths.append(".".join(n for n in (block.name, parent.name, module.name) if n) if module is not None else None)
    return paths


def mlp_output_paths(bridge) -> list[str]:
    """Per layer, the MLP's output projection (Llama ``mlp.down_proj``, GPT-2 ``mlp.c_proj``): its input is the
    MLP post-activation."""
    return _hf_module_paths(bridge, "mlp", "out")


def mlp_input_paths(bridge) -> list[str]:
    """Per layer, the MLP's input projection (Llama ``mlp.up_proj``, GPT-2 ``mlp.c_fc``): its output is the
    linear pre-activation (for gated MLPs the "up" part)."""
    return _hf_module_paths(bridge, "mlp", "in")


def mlp_gate_paths(bridge) -> list[str | None]:
    """Per layer, a gated MLP's gate projection (``mlp.gate_proj``); ``None`` for ungated MLPs."""
    return _hf_module_paths(bridge, "mlp", "gate")


def attention_output_paths(bridge) -> list[str]:
    """Per layer, the attention output projection (Llama ``self_attn.o_proj``, GPT-2 ``attn.c_proj``): its input
    is every head's ``z`` concatenated, ``[batch, pos, n_heads * d_head]``."""
    return _hf_module_paths(bridge, "attn", "o")


def pad_token_id(tokenizer, bos_id: int) -> int:
    """What right padding is filled with: the tokenizer's pad token, else BOS (never attended to by real
    positions in a causal model, so its value does not matter, only that it is a valid id)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos_id


@dataclass(frozen=True)
class ModelFacts:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    mlp_kind: str  # 'gated' (SwiGLU-style: act = f(gate) * up) or 'ungated'
    normalization: str
    bos_token_id: int

    def as_dict(self) -> dict:
        return asdict(self)


def model_facts(bridge) -> ModelFacts:
    cfg = bridge.cfg
    tokenizer = bridge.tokenizer
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return ModelFacts(
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_mlp=int(cfg.d_mlp),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        act_fn=str(cfg.act_fn),
        mlp_kind="gated" if getattr(cfg, "gated_mlp", False) else "ungated",
        normalization=str(cfg.normalization_type),
        bos_token_id=int(bos),
    )
