"""The reports on a store with no results yet: one clear error that says what to run, not a crash (every shape of
store a finished run can leave: tests/integration/report/test_report_shapes.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.report.summary import print_summary
from lookups.pipeline.store.store import Store


@contextlib.contextmanager
def _data_dir(folder: Path):
    before = os.environ.get("LOOKUPS_DATA_DIR")
    os.environ["LOOKUPS_DATA_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("LOOKUPS_DATA_DIR") if before is None else os.environ.__setitem__("LOOKUPS_DATA_DIR", before)


def test_an_empty_store_is_one_clear_error(tmp_path):
    with _data_dir(tmp_path / "data"), pytest.raises(LookupsError, match="No results yet at .*: run `make demo`"):
        print_summary(Store())
