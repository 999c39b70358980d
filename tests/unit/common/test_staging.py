"""What a killed writer leaves: staged files are removed at the next write or start, a live writer's never
(docs/operations.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lookups.pipeline.common import files
from lookups.pipeline.store.asset_versions import AssetVersion
from lookups.pipeline.store.store import Store

#: A store write stopped between staging its files and renaming them into place (where a kill leaves them):
#: the rename blocks, so the staged files stay for as long as the process lives.
WRITER = r"""
import sys, time
from lookups.pipeline.store import store
from lookups.pipeline.store.asset_versions import AssetVersion
def stopped(src, dst):
    print("staged", flush=True)
    time.sleep(600)
store.os.replace = stopped
store.Store().replace_many([], version=AssetVersion("probe", sys.argv[1], "d", "c", {}))
"""


def start_writer(scope: str) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", WRITER, scope], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert writer.stdout.readline().strip() == "staged"
    return writer


def staged(folder: Path) -> set[Path]:
    return {p for p in folder.rglob(".*.tmp")}


def test_a_killed_writers_staging_goes_at_the_next_write_a_live_ones_stays(data_folder):
    live = start_writer("live")
    try:
        live_files = staged(data_folder)
        dead = start_writer("dead")
        dead_files = staged(data_folder) - live_files
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait()
        assert live_files and dead_files and all(f".{dead.pid}-" in p.name for p in dead_files)
        Store().replace_many([], version=AssetVersion("probe", "next", "d", "c", {}))
        assert staged(data_folder) == live_files  # the killed writer's are gone, the live writer's untouched
        assert Store().version("probe", "next") is not None
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()


def test_leftovers_of_unknown_writers_go_only_when_a_day_old(tmp_path):
    other = tmp_path / f".part-x.parquet.{os.getpid()}-0badc0de-12345678.tmp"  # another machine's namespace
    old = tmp_path / ".part-y.parquet.123-abcdef01.tmp"  # the older name, without a namespace
    folder = tmp_path / f".model.{2**22 + 7}-{files.process_namespace()}-12345678.tmp"  # a staged checkpoint folder, pid gone
    unrelated = tmp_path / ".notes.tmp"
    for path in (other, old, unrelated):
        path.write_text("x")
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not files.process_alive(2**22 + 7)
    assert files.remove_stale_staging(tmp_path) == [folder]
    day_ago = time.time() - files.STALE_STAGING_S - 60
    for path in (other, old):
        os.utime(path, (day_ago, day_ago))
    assert set(files.remove_stale_staging(tmp_path)) == {other, old}
    assert unrelated.exists()


def test_a_new_start_removes_what_killed_writers_left_in_the_data_folder(data_folder, monkeypatch, tmp_path):
    """``lookups run`` and ``lookups ui`` sweep the data and cache folders (handles, figures, corpora, models)."""
    home = data_folder / "dagster_home"
    home.mkdir(parents=True)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    pid = int(gone.stdout)
    handle = data_folder / "handles" / "model" / f".abc.pkl.{pid}-{files.process_namespace()}-12345678.tmp"
    model = tmp_path / "cache" / "models" / f".m-fp32.{pid}-{files.process_namespace()}-12345678.tmp"
    mine = files.staging_path(data_folder / "figures" / "a.png")
    for path in (handle, mine):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    model.mkdir(parents=True)
    from lookups.assets.instance import open_instance

    with open_instance():
        pass
    assert not handle.exists() and not model.exists()
    assert mine.exists()  # this process's own: alive
