"""`lookups query --output` never writes into what the pipeline writes: the data folder, the warehouse folder, the
views file and the Dagster instance, compared with symlinks followed (a store with files and the command line:
tests/integration/reliability/test_query_inputs.py). No store contents needed: the refusal comes before the query."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookups.pipeline.cli import main
from lookups.pipeline.config import dagster_home_dir, data_dir, database_path
from lookups.pipeline.store.queries import QueryError, check_output
from lookups.pipeline.store.store import Store


def _refused(output) -> str:
    with pytest.raises(QueryError, match="--output") as refused:
        check_output(output)
    message = str(refused.value)
    assert "\n" not in message and "outside" in message, message
    return message


def test_every_place_the_pipeline_writes_is_refused(tmp_path):
    tables = Path(Store().root)
    part = tables / "neurons" / "part-0.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"results")
    assert "the results" in _refused(part)
    assert "the views file" in _refused(database_path())
    assert "the Dagster instance" in _refused(dagster_home_dir() / "runs.db")
    assert "the data folder" in _refused(data_dir() / "rows.csv")  # not yet there
    assert "the data folder" in _refused(data_dir())
    assert part.read_bytes() == b"results"
    outside = tmp_path / "outside" / "rows.parquet"
    assert check_output(outside) == outside


def test_a_warehouse_elsewhere_is_refused_too(tmp_path, monkeypatch):
    warehouse = tmp_path / "warehouse"
    monkeypatch.setenv("LOOKUPS_WAREHOUSE", str(warehouse))
    assert "the results" in _refused(warehouse / "neurons" / "part-new.parquet")


def test_a_symlink_outside_that_points_inside_is_refused(tmp_path):
    (tmp_path / "outside").mkdir()
    into_data = tmp_path / "outside" / "data-link"
    into_data.symlink_to(data_dir(), target_is_directory=True)
    message = _refused(into_data / "lookups.duckdb")
    assert "resolves to" in message and str(database_path()) in message
    file_link = tmp_path / "outside" / "rows.parquet"
    file_link.symlink_to(data_dir() / "not-yet.parquet")  # a dangling link: the file would be created inside
    _refused(file_link)
    relative = tmp_path / "outside" / ".." / "data" / "x.csv"  # `..` resolved
    _refused(relative)


def test_the_command_line_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    views = database_path()
    views.write_bytes(b"views")
    code = main(["query", "SELECT 1 AS x", "--format", "csv", "--output", str(views)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("lookups: --output") and err.count("\n") == 1, err
    assert views.read_bytes() == b"views"
