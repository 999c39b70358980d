"""Test tiers: unit tests load no model; tests marked `slow` use the real SmolLM2 (and still run in CI).

Every test gets its own data folder (LOOKUPS_DATA_DIR); downloads and the fp32 model cache are shared
with the repository's data/ folder (LOOKUPS_CACHE_DIR) so the model is dequantized once per machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("LOOKUPS_CACHE_DIR", str(REPO / "data"))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("LOOKUPS_DATA_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def planted_circuit(tmp_path_factory):
    """The planted-circuit model and corpus (a 3-layer GPT-2-style model built in code, see pipeline/planted.py)."""
    from lookups.pipeline.inputs import planted

    return planted.build_planted_circuit(tmp_path_factory.mktemp("planted"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that used a real LLM server which has died says so first: the death is the cause, whatever
    the assertion that noticed it (see servers.LlamaServer)."""
    report = yield
    server = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and hasattr(server, "death") and (death := server.death()):
        report.sections.insert(0, ("llama_cpp.server died", death))
    return report
