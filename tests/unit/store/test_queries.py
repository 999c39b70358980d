"""`lookups query`'s output formats: table, CSV, JSON and Parquet, and the refusal of Parquet without a file (no
store; the queries on a store filled by the planted circuit: tests/integration/store/test_queries.py)."""

import json

import pandas as pd
import pytest

from lookups.pipeline.store.queries import QueryError, write_frame


def test_formats(tmp_path):
    frame = pd.DataFrame({"layer": [27, 28], "token": [" order", ' "quoted"']})
    table = write_frame(frame, "table", None)
    assert table.splitlines()[0].split() == ["layer", "token"]
    assert write_frame(frame, "csv", None).splitlines()[2] == '28," ""quoted"""'
    assert json.loads(write_frame(frame, "json", None)) == [{"layer": 27, "token": " order"}, {"layer": 28, "token": ' "quoted"'}]
    with pytest.raises(QueryError, match="--output"):
        write_frame(frame, "parquet", None)
    write_frame(frame, "parquet", tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "f.parquet"), frame)
