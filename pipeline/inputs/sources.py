"""The two sources every result derives from, by key: models and corpora.

A model key is what ``ModelSettings.name`` takes (the embedded model, a Hugging Face name, a checkpoint
folder). A corpus key is what ``CorpusSettings.source`` takes, or the name of a folder under the corpus
folders root (``LOOKUPS_CORPUS_FOLDERS``, default ``<data>/corpus_folders``): drop a folder of .txt files
there and its name is a key. The Dagster layer uses these keys as partition keys and these fingerprints as
the sources' observed data versions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import CorpusSettings, data_dir
from lookups.pipeline.inputs import checkpoints, corpora, planted

CORPUS_FOLDERS_ENV = "LOOKUPS_CORPUS_FOLDERS"
#: Dagster joins the keys of a two-dimensional partition with "|" and lists keys with "," and brackets.
FORBIDDEN_KEY_CHARACTERS = set("|,[]")


class SourceKeyError(LookupsError, ValueError):
    """A model or corpus key that cannot be a key; the message says why and what to use."""


def check_key(kind: str, key: str) -> str:
    key = key.strip()
    if not key:
        raise SourceKeyError(f"Empty {kind} key: give a {kind} name, a path or (for corpora) a folder name under {corpus_folders()}.")
    bad = sorted(FORBIDDEN_KEY_CHARACTERS & set(key))
    if bad or "..." in key:
        raise SourceKeyError(
            f"The {kind} key {key!r} contains {' '.join(bad) or '...'}, which cannot be part of a partition key. "
            f"Rename the file or folder, or (for a corpus) put it under {corpus_folders()} and use the folder's name."
        )
    return key


def normalize_key(kind: str, key: str) -> str:
    """The key as stored: an existing relative path becomes absolute, so the same corpus or model is one key."""
    key = check_key(kind, key)
    path = Path(key).expanduser()
    if not path.is_absolute() and path.exists() and not (kind == "corpus" and (corpus_folders() / key).is_dir()):
        return check_key(kind, str(path.resolve()))
    named = key.startswith("hf:") or (kind == "corpus" and (corpus_folders() / key).is_dir())
    if not named and not path.exists() and (key.startswith((".", "/", "~")) or checkpoints.looks_like_missing_folder(key)):
        # Refused before it becomes a key: a key that never resolves would stay registered and warn on every run.
        raise SourceKeyError(f"The {kind} path {key} does not exist ({path.absolute()}). Check the path and run again.")
    return key


def corpus_folders() -> Path:
    return Path(os.environ.get(CORPUS_FOLDERS_ENV) or data_dir() / "corpus_folders").expanduser().resolve()


def corpus_source(key: str) -> str:
    """What ``CorpusSettings.source`` a corpus key means: a folder under the corpus folders root, else itself."""
    key = check_key("corpus", key)
    if key == corpora.EMBEDDED_CORPUS or key.startswith("hf:"):
        return key
    if key == planted.PLANTED_KEY:
        return planted.ensure_planted_circuit().corpus_path
    folder = corpus_folders() / key
    return str(folder) if "/" not in key and folder.is_dir() else key


def corpus_fingerprint(key: str, settings: CorpusSettings | None = None) -> str:
    """A hash of the corpus's files by content (the Dagster source's data version)."""
    base = settings.model_dump(exclude={"source"}) if settings else {}
    return corpora.source_fingerprint(CorpusSettings(source=corpus_source(key), **base))


def model_fingerprint(key: str) -> str:
    """The model's id, name@hash of its weights (the Dagster source's data version). Resolving the embedded
    model dequantizes it once; later calls read the cache."""
    return checkpoints.resolve_model(check_key("model", key)).model_id


def folder_snapshot(root: Path | None = None) -> dict[str, str]:
    """Each corpus folder under the root, with a cheap fingerprint of its files (names, sizes, mtimes):
    what the corpus-folder sensor compares between ticks. The content hash is taken when observing."""
    root = root or corpus_folders()
    if not root.is_dir():
        return {}
    snapshot = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        digest = hashlib.sha256()
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        snapshot[folder.name] = digest.hexdigest()[:16]
    return snapshot
