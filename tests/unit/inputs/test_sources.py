"""Model and corpus keys: what a key means, what cannot be a key, and the sources' fingerprints."""

import pytest

from lookups.pipeline.config import EMBEDDED_CORPUS
from lookups.pipeline.inputs import sources


def test_keys_that_cannot_be_partition_keys_are_clear_errors():
    for bad in ("a|b", "x,y", "[z]", "...", "  "):
        with pytest.raises(sources.SourceKeyError, match="key"):
            sources.check_key("corpus", bad)


def test_a_corpus_key_is_a_folder_under_the_root_or_a_source(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKUPS_CORPUS_FOLDERS", str(tmp_path / "root"))
    (tmp_path / "root" / "news").mkdir(parents=True)
    assert sources.corpus_source("news") == str(tmp_path / "root" / "news")
    assert sources.corpus_source(EMBEDDED_CORPUS) == EMBEDDED_CORPUS
    assert sources.corpus_source("hf:NeelNanda/pile-10k") == "hf:NeelNanda/pile-10k"
    assert sources.corpus_source("/data/elsewhere.jsonl") == "/data/elsewhere.jsonl"


def test_relative_paths_become_absolute_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    assert sources.normalize_key("corpus", "docs") == str(tmp_path / "docs")
    assert sources.normalize_key("model", "gpt2-large") == "gpt2-large"


def test_folder_snapshot_sees_new_and_changed_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.txt").write_text("one")
    first = sources.folder_snapshot(tmp_path)
    (tmp_path / "a" / "2.txt").write_text("two")
    (tmp_path / "b").mkdir()
    second = sources.folder_snapshot(tmp_path)
    assert set(second) == {"a", "b"} and second["a"] != first["a"]
