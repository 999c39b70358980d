"""The reports on a store with no results yet: one clear error that says what to run, not a crash (every shape of
store a finished run can leave: tests/integration/report/test_report_shapes.py)."""

from __future__ import annotations

import pytest

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.report.summary import print_summary
from lookups.pipeline.store.store import Store


def test_an_empty_store_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKUPS_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(LookupsError, match="No results yet at .*: run `make demo`"):
        print_summary(Store())
