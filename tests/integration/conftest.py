"""Fixtures of the integration tier (tests/integration/): what several of its modules build on the planted circuit.
The planted circuit itself (``planted_circuit``) is in tests/conftest.py."""

from __future__ import annotations

import pytest
from chains import explained_store


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A real store, one per module: the planted chain, its contrastive explanations and their scores; (circuit, store)."""
    return explained_store(tmp_path_factory.mktemp("filled-store"))
