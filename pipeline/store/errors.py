"""The store layer's error: what the store could not do, and what to do about it."""

from __future__ import annotations

from lookups.pipeline.common.errors import LookupsError


class StoreError(LookupsError, RuntimeError):
    """The store cannot do what was asked; the message says why and what to do."""
