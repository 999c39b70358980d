"""Content hashes: data versions, LLM cache keys and ids of stored rows."""

from __future__ import annotations

import hashlib
import json


def stable_hash(*parts, length: int = 16) -> str:
    """Hex digest of JSON-serialised parts (keys sorted), the same in every process and on every machine."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
