"""A step's version record, one row of the ``asset_versions`` table: what the step computed from, by which
code, its stats, and whether it finished."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class AssetVersion:
    """A step's version record: what it computed from (``data_version``), by which code, its stats, and
    whether it finished (a run stopped by its LLM budget did not: the next run computes again)."""

    asset: str
    scope: str
    data_version: str
    code_version: str
    stats: dict
    complete: bool = True


def _json_safe(value):
    """NaN and infinities (e.g. a test with no samples) become null: JSON has no such numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def version_write(version: AssetVersion) -> tuple[str, dict, pd.DataFrame]:
    """The keyed write that records ``version``: its table, its key and its row."""
    row = pd.DataFrame([{
        "data_version": version.data_version, "code_version": version.code_version,
        "stats": json.dumps(_json_safe(version.stats), default=float), "complete": version.complete,
    }])
    return "asset_versions", {"asset": version.asset, "scope": version.scope}, row


def version_from_row(asset: str, scope: str, row: tuple) -> AssetVersion:
    """The record read back from its row's (data_version, code_version, stats, complete)."""
    return AssetVersion(asset, scope, row[0], row[1], json.loads(row[2]) if row[2] else {}, bool(row[3]))
