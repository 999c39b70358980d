"""Incremental recomputation through Dagster's declarative automation on the planted circuit, with the local SmolLM2
explainer (slow): the LLM calls are counted too, none when nothing changed, none when only a code version upstream
changed (the answers come from the cache). With the contrastive reference, and the data-quality gate and the
sources sensor: tests/integration/assets/test_automation.py."""

from __future__ import annotations

import pytest
from dagster_runs import recomputes_exactly_what_changed


@pytest.mark.parametrize("explainer", [pytest.param("local", marks=pytest.mark.slow)])
def test_automation_recomputes_exactly_what_changed(tmp_path, monkeypatch, settings_defs, explainer):
    """With the local SmolLM2 explainer (slow) the LLM calls are counted too: none when nothing changed, none when
    only a code version upstream changed (the answers come from the cache)."""
    recomputes_exactly_what_changed(tmp_path, monkeypatch, settings_defs, explainer)
