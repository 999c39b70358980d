"""Test tiers, by folder (docs/testing.md): tests/unit/ loads no model, tests/integration/ runs on the planted
circuit and the tiny random families, tests/acceptance/ on the real models, servers and the browser (all `slow`,
and still run in CI). Each test is marked `unit`, `integration` or `acceptance` from its folder.

Every test gets its own data folder (LOOKUPS_DATA_DIR); downloads and the fp32 model cache are shared
with the repository's data/ folder (LOOKUPS_CACHE_DIR) so the model is dequantized once per machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The automation scenario's assertions live in a helper module: rewritten like a test's, so a failure shows its values.
pytest.register_assert_rewrite("dagster_runs")

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("LOOKUPS_CACHE_DIR", str(REPO / "data"))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

#: The tiers: a test's folder under tests/ is its marker.
TIERS = ("unit", "integration", "acceptance")
TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, from its folder; every test lives in a tier, and every acceptance test is `slow`
    (so `-m "not slow"` runs no real model, browser or server)."""
    outside, not_slow = [], []
    for item in items:
        path = Path(str(item.path)).resolve()
        if not path.is_relative_to(TESTS):
            continue  # not one of ours
        parts = path.relative_to(TESTS).parts
        tier = parts[0] if len(parts) > 1 and parts[0] in TIERS else None
        if tier is None:
            outside.append(item.nodeid)
            continue
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "acceptance" and item.get_closest_marker("slow") is None:
            not_slow.append(item.nodeid)
    if outside:
        raise pytest.UsageError(f"tests outside tests/unit, tests/integration and tests/acceptance: {', '.join(outside)}")
    if not_slow:
        raise pytest.UsageError(f"acceptance tests not marked slow (mark them `@pytest.mark.slow`): {', '.join(not_slow)}")


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


@pytest.fixture
def settings_defs(tmp_path, monkeypatch):
    """Definitions whose config defaults are a settings file (as `lookups ui --config` gives the daemon), so
    the automation's runs analyse the planted circuit with its settings (tests/dagster_runs.py; used by the
    integration and acceptance tiers)."""
    from types import SimpleNamespace

    import yaml

    from lookups.assets import core, definitions, resources

    def load(run_config: dict):
        path = tmp_path / "settings.yaml"
        path.write_text(yaml.safe_dump(run_config))
        monkeypatch.setenv("LOOKUPS_RUN_CONFIG", str(path))  # the daemon's steps load it again in their processes
        assets = core.build_assets(resources.config_classes(resources.settings_file_ops(str(path))))
        defs = definitions.build_definitions(assets)
        # What the runner and the daemon load: the deployment's definitions, with this settings file.
        monkeypatch.setattr(definitions, "defs", defs)
        monkeypatch.setattr(definitions, "ALL_ASSETS", assets)
        return SimpleNamespace(defs=defs, ALL_ASSETS=assets, build_definitions=definitions.build_definitions)

    yield load


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that used a real LLM server which has died says so first: the death is the cause, whatever
    the assertion that noticed it (see servers.LlamaServer)."""
    report = yield
    server = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and hasattr(server, "death") and (death := server.death()):
        report.sections.insert(0, ("llama_cpp.server died", death))
    return report
