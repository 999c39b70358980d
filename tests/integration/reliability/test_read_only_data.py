"""A data folder that cannot be written (LOOKUPS_DATA_DIR on a read-only mount) is one line naming it and saying it
must be writable, exit 2, from `lookups keys` and `lookups run`, before any Dagster process starts; `lookups paths`
prints where things are and creates nothing. Run as the commands a person types (subprocesses).

chmod does not stop root, so the folder is a read-only tmpfs; where mounting is not permitted the tests skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import tmpfs

LOOKUPS = Path(sys.executable).with_name("lookups")


@pytest.fixture
def read_only(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    with tmpfs(folder, "ro,size=1m"):
        yield folder


def _lookups(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOOKUPS_DATA_DIR": str(data)}
    return subprocess.run([str(LOOKUPS), *args], capture_output=True, text=True, env=env, timeout=300)


def _one_line_naming(result: subprocess.CompletedProcess, folder: Path) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("lookups: ") and result.stderr.count("\n") == 1, result.stderr
    assert str(folder) in result.stderr and "writable" in result.stderr and "LOOKUPS_DATA_DIR" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["keys"], ["run", "--model", "planted", "--corpus", "planted"]], ids=["keys", "run"])
def test_keys_and_run_on_a_read_only_data_folder_are_one_line(read_only, args):
    _one_line_naming(_lookups(read_only, *args), read_only)


def test_a_data_folder_that_cannot_be_created_is_one_line(read_only):
    inside = read_only / "data"
    for args in (["paths"], ["keys"]):
        _one_line_naming(_lookups(inside, *args), inside)


def test_paths_prints_the_paths_and_creates_nothing(read_only):
    result = _lookups(read_only, "paths")
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout)
    assert paths["data"] == str(read_only) and paths["dagster_home"] == str(read_only / "dagster_home")
    assert list(read_only.iterdir()) == []
