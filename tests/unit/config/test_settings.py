"""Every setting has a valid range, the defaults are valid, a whole run's settings are checked at once (one message
naming each bad field), and docs/configuration.md lists every range (no model; through the real `lookups` command
and on the planted circuit: tests/integration/reliability/test_settings.py)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from lookups.pipeline import steps
from lookups.pipeline.config import SettingsError, check_run_settings, settings_problems

#: Every step's settings class, by step name (the step registry's).
SETTINGS_OF_ASSET = steps.settings_of_steps()
CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")


def _constraints(info) -> set[str]:
    found = set()
    for item in info.metadata:
        found |= {name for name in CONSTRAINTS if getattr(item, name, None) is not None}
    return found


@pytest.mark.parametrize("asset", list(SETTINGS_OF_ASSET))
def test_every_setting_has_its_valid_range(asset):
    """Numbers have bounds, strings a minimum length, a pattern or a fixed set of values; lists and flags are
    checked by their type (and a validator where the items are a fixed set)."""
    cls = SETTINGS_OF_ASSET[asset]
    unconstrained = []
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        base = {a for a in typing.get_args(annotation) if a is not type(None)} or {annotation}
        if base <= {bool} or typing.get_origin(annotation) is list or typing.get_origin(annotation) is typing.Literal:
            continue
        if not _constraints(info):
            unconstrained.append(name)
    assert not unconstrained, f"{cls.__name__}: no valid range on {unconstrained}"


def test_the_defaults_are_valid():
    assert settings_problems({asset: {"config": {}} for asset in SETTINGS_OF_ASSET}, SETTINGS_OF_ASSET) == []


def test_every_bad_field_is_named_at_once():
    ops = {
        "neuron_exemplars": {"config": {"act_ratio": 5, "top_k": 0, "top_kk": 3}},
        "head_neuron_scores": {"config": {"consistent_min": 0.9, "consistent_max": 0.1}},
        "head_attributions": {"config": {"batch_tokens": -5}},
        "head_ablations": {"config": {"splits": ["explain", "test"]}},
        "prompt_set": {"config": {"heldout_fraction": 1.0}},
        "explanations": {"config": {"backend": "gpt"}},
        "nope": {"config": {}},
    }
    with pytest.raises(SettingsError) as caught:
        check_run_settings(ops, SETTINGS_OF_ASSET, "my.yaml")
    message = str(caught.value)
    for expected in (
        "neuron_exemplars.act_ratio", "neuron_exemplars.top_k", "'top_kk'", "consistent_min (0.9) must be at most consistent_max (0.1)",
        "head_attributions.batch_tokens", "unknown split 'test'", "prompt_set.heldout_fraction", "explanations.backend", "nope: no such asset",
    ):
        assert expected in message
    assert "my.yaml" in message and "Traceback" not in message


def ranges_table() -> str:
    """The markdown table of every setting's valid range, as docs/configuration.md shows it."""
    symbols = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    rows = ["| setting | valid values |", "|---|---|"]
    for asset, cls in SETTINGS_OF_ASSET.items():
        for name, info in cls.model_fields.items():
            parts = []
            for item in info.metadata:
                parts += [f"{symbols[k]} {getattr(item, k)}" for k in symbols if getattr(item, k, None) is not None]
                if getattr(item, "min_length", None) is not None:
                    parts.append("at least one item" if typing.get_origin(info.annotation) is list else "not empty")
                if getattr(item, "pattern", None) is not None:
                    parts.append(f"matches `{item.pattern}`".replace("|", "\\|"))
            if typing.get_origin(info.annotation) is typing.Literal:
                parts.append("one of " + ", ".join(f"`{v}`" for v in typing.get_args(info.annotation)))
            if type(None) in typing.get_args(info.annotation):
                parts.append("or none")
            kind = "true or false" if info.annotation is bool else "a list" if typing.get_origin(info.annotation) is list else "any"
            rows.append(f"| `{asset}.{name}` | {', '.join(parts) or kind} |")
    return "\n".join(rows)


def test_the_docs_list_every_range():
    docs = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    assert ranges_table() in docs, "docs/configuration.md's table of valid values is out of date: paste tests.unit.config.test_settings.ranges_table()"
