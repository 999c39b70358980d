"""Size and sha256 of installed model parts, read in 4 MiB pieces (never whole in memory), for the tests that check
them against the published values (tests/acceptance/test_gemma3.py, tests/acceptance/test_qwen_explainer.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def size_and_sha256(parts: Iterable[Path]) -> tuple[int, str]:
    """(total size in bytes, sha256 hex digest) of the files ``parts`` joined in order."""
    digest, size = hashlib.sha256(), 0
    for part in parts:
        with Path(part).open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()
