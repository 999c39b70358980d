"""The step registry (pipeline/steps/registry.py): every step declared completely, once, and everything the
Dagster layer and `lookups run` know about the steps derived from it. A step registered incompletely (no
settings range, an input not before it, a table the schema does not have, a check's name twice, a function
that cannot take its inputs, a preview read that does not exist) fails here, not in a run."""

import dataclasses
import inspect

import pytest
from pydantic import BaseModel

from lookups.pipeline import steps
from lookups.pipeline.config import ExplanationSettings
from lookups.pipeline.steps import STEPS, Step
from lookups.pipeline.steps.registry import register
from lookups.pipeline.store.sql_files import TABLE_KEYS, sql_text

REGISTERED = list(STEPS.values())


def problems(step: Step, before: list[str]) -> list[str]:
    """What is missing or wrong in ``step``'s declaration, given the steps registered before it."""
    found = []
    if not (isinstance(step.settings, type) and issubclass(step.settings, BaseModel)):
        found.append("settings is not a settings class")
    if not (isinstance(step.code_version, str) and step.code_version):
        found.append("no code version")
    if not step.description.strip():
        found.append("no description")
    found += [f"input {name} is not a step registered before it" for name in step.inputs if name not in before]
    found += [f"runs after {name}, which is not a step" for name in step.after if name not in STEPS]
    found += [f"table {table} is not in sql/schema.sql" for table in step.tables if table not in TABLE_KEYS]
    parameters = inspect.signature(step.run).parameters
    for name in (*step.inputs, "settings", "store"):
        if name not in parameters:
            found.append(f"its function {step.run.__name__} takes no parameter {name}")
    allowed = {*step.inputs, "settings", "store", "progress", "run_id"}
    found += [
        f"its function {step.run.__name__} requires {name}, which the registry does not give"
        for name, p in parameters.items() if name not in allowed and p.default is inspect.Parameter.empty
    ]
    for preview in step.previews:
        try:
            sql_text(f"reads/{preview.read}.sql")
        except FileNotFoundError:
            found.append(f"preview {preview.read} has no sql/reads/{preview.read}.sql")
    for check in step.checks:
        if not check.description.strip() or list(inspect.signature(check.evaluate).parameters)[:3] != ["handle", "db", "run_id"]:
            found.append(f"check {check.name} has no description or does not take (handle, db, run_id)")
    if step.key is not None:
        if step.key.setting not in step.settings.model_fields:
            found.append(f"its key fills {step.key.setting}, which {step.settings.__name__} does not have")
        if step.run_config is None or step.key.setting in step.run_config.model_fields:
            found.append("a keyed step's run config must leave the key's setting out")
    for name in step.template_settings:
        if name not in ExplanationSettings.model_fields:
            found.append(f"template setting {name} is not an ExplanationSettings field")
    return found


@pytest.mark.parametrize("step", REGISTERED, ids=[s.name for s in REGISTERED])
def test_every_registered_step_is_complete(step):
    before = list(STEPS)[: list(STEPS).index(step.name)]
    assert problems(step, before) == []


def test_every_table_is_written_by_a_step_and_every_check_named_once():
    written = [table for step in REGISTERED for table in step.tables]
    assert set(TABLE_KEYS) - set(written) == {"asset_versions"}  # the steps' own bookkeeping
    shared = {t for t in written if written.count(t) > 1}
    assert shared == {"llm_calls"}  # appended by both LLM steps, never replaced
    names = [check.name for step in REGISTERED for check in step.checks]
    assert len(names) == len(set(names)) == 14


def test_an_incomplete_step_is_found():
    model = STEPS["model"]

    def run(model, settings):  # no store
        raise AssertionError

    broken = dataclasses.replace(
        model, name="broken", run=run, inputs=("model", "later_step"), tables=("nope",), description=" ", key=None, run_config=None,
    )
    found = problems(broken, ["model"])
    assert "input later_step is not a step registered before it" in found and "table nope is not in sql/schema.sql" in found
    assert "its function run takes no parameter store" in found and "no description" in found
    with pytest.raises(ValueError, match="takes later_step, not registered before it"):
        register(broken)
    with pytest.raises(ValueError, match="registered twice"):
        register(model)


def test_the_dagster_layer_and_the_settings_derive_from_the_registry():
    from lookups.assets import core, resources
    from lookups.assets.definitions import KEY_FIELDS, defs

    graph = defs.resolve_asset_graph()
    for step in REGISTERED:
        asset = graph.get(core.dg.AssetKey(step.name))
        assert asset.code_version == steps.code_version(step.name), step.name
        assert {k.to_user_string() for k in asset.parent_keys} >= {*step.inputs, *step.after}, step.name
    checks = {key.name: key.asset_key.to_user_string() for key in graph.asset_check_keys}
    assert checks == {check.name: step.name for step in REGISTERED for check in step.checks}
    assert set(resources.config_classes()) == set(STEPS) and steps.settings_of_steps() == {s.name: s.settings for s in REGISTERED}
    assert KEY_FIELDS == {"model": "name", "corpus": "source"}
