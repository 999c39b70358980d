"""Writing files that parallel runs (two partitions at once) may write too: never half a file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def staging_path(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this writer (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to a unique temporary file and rename it over ``path``: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
