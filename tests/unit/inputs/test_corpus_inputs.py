"""Corpus inputs that cannot blow up, without a model: passages capped whatever the punctuation, an empty split a
failed check, control characters kept out of passages (docs/data.md, docs/quality.md). The exemplar step's memory
and each corpus's own read counts, on the planted circuit: tests/integration/reliability/test_corpus_inputs.py."""

from __future__ import annotations

import json
import unicodedata

import pandas as pd
from corpus_text import WORDS, prompt_set_of, unpunctuated

from lookups.pipeline.config import CorpusSettings, PromptSetSettings
from lookups.pipeline.inputs import corpora
from lookups.pipeline.store.store import Store


def control_characters(value: str) -> list[str]:
    return [c for c in value if unicodedata.category(c) == "Cc" and c not in "\n\t"]


def frame_of(docs) -> pd.DataFrame:
    return pd.DataFrame([d.__dict__ for d in docs], columns=["source_id", "title", "text"])


# ---------------------------------------------------------------- passage caps


def test_an_unpunctuated_document_is_cut_at_word_boundaries_into_capped_passages():
    text = unpunctuated(3_000_000)
    passages = corpora.split_passages(text, 1000)
    assert max(len(p) for p in passages) <= 1000
    assert len(passages) >= 3000
    assert " ".join(passages) == text  # cut only between words: nothing lost, no word split


def test_text_without_any_space_is_hard_cut_at_the_cap():
    text = "x" * 250_000
    passages = corpora.split_passages(text, 1000)
    assert [len(p) for p in passages] == [1000] * 250
    assert "".join(passages) == text


def test_long_unpunctuated_documents_yield_capped_passages_in_both_splits():
    sources = pd.DataFrame({
        "source_id": [f"file:long{i}.txt" for i in range(12)], "title": [f"long{i}.txt" for i in range(12)],
        "text": [unpunctuated(40_000, seed=i) for i in range(12)],
    })
    prompt_set = corpora.build_prompt_set(sources, PromptSetSettings(max_passages_per_source=None, max_documents=None, heldout_fraction=0.3))
    docs = prompt_set.documents
    assert docs["n_chars"].max() <= 1000
    assert prompt_set.counts["explain"] > 0 and prompt_set.counts["heldout"] > 0
    assert docs.groupby("source_id")["split"].nunique().max() == 1  # a source document's passages never straddle the splits


def test_a_30_mb_text_file_without_sentence_ends_becomes_capped_passages(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "huge.txt").write_text(unpunctuated(30_000_000))
    counts = corpora.ReadCounts()
    sources = frame_of(corpora.read_source(CorpusSettings(source=str(folder)), counts))
    prompt_set = corpora.build_prompt_set(sources, PromptSetSettings())
    assert prompt_set.documents["n_chars"].max() <= 1000
    assert len(prompt_set.documents) == 6  # max_passages_per_source
    assert prompt_set.counts["beyond_slice"] > 25_000  # the rest is counted, not silently dropped


# ---------------------------------------------------------------- empty splits


def documents_check(prompt_set_handle, store):
    from lookups.pipeline.steps import STEPS

    spec = next(c for c in STEPS["prompt_set"].checks if c.name == "documents_valid")
    assert spec.blocking  # what follows a prompt set with an empty split does not run
    return spec.evaluate(prompt_set_handle, store, "test-run").result


def test_one_long_document_leaves_the_heldout_split_empty_and_the_check_says_why(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "book.txt").write_text(unpunctuated(200_000))
    store = Store()
    handle = prompt_set_of(folder, store)
    assert corpora.split_of("file:book.txt", 0.3) == "explain"
    assert handle.counts["explain"] == 6 and handle.counts["heldout"] == 0
    result = documents_check(handle, store)
    assert not result.success
    summary = result.summary()
    assert "held-out split is empty" in summary and "1 source document" in summary
    assert "raise prompt_set.heldout_fraction (now 0.3)" in summary and "more source documents" in summary

    assert result.lines()[0].startswith("the held-out split is empty: all 6 passages of the 1 source document")  # the terminal's line


def test_an_empty_explain_split_fails_the_check_and_a_healthy_prompt_set_passes(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(20):
        (folder / f"doc{i}.txt").write_text(f"Document number {i} talks about {WORDS[i % len(WORDS)]}. It has two sentences.")
    store = Store()
    healthy = prompt_set_of(folder, store, max_documents=None)
    assert healthy.counts["explain"] and healthy.counts["heldout"]
    assert documents_check(healthy, store).success
    all_heldout = prompt_set_of(folder, store, max_documents=None, heldout_fraction=0.99)
    assert all_heldout.counts["explain"] == 0
    result = documents_check(all_heldout, store)
    assert not result.success
    assert "explain split is empty" in result.summary() and "lower prompt_set.heldout_fraction (now 0.99)" in result.summary()


# ---------------------------------------------------------------- NUL bytes and terminal escapes


def test_nul_bytes_count_as_undecodable_and_escape_sequences_never_reach_the_passages(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "good.txt").write_text("A plain sentence about rivers.")
    (folder / "binary.txt").write_bytes(b"Looks like text.\x00\x00\x01\x02 then binary.")
    (folder / "utf16.txt").write_bytes("A document saved as UTF-16 without a byte order mark.".encode("utf-16-le"))
    (folder / "escapes.txt").write_text("Red \x1b[31malert\x1b[0m here.\x07 A title\x1b]0;owned\x07 set. Clear\x1b[2J done.\x9b1m")
    (folder / "evil\x1b[2Jname.txt").write_text("Prose under an odd file name.")
    counts = corpora.ReadCounts()
    sources = frame_of(corpora.read_source(CorpusSettings(source=str(folder)), counts))
    assert (counts.read, counts.undecodable) == (3, 2)
    docs = corpora.build_prompt_set(sources, PromptSetSettings(max_documents=None)).documents
    assert "Red alert here. A title set. Clear done." in set(docs["text"])
    for column in ("text", "title", "source_id"):
        for value in docs[column]:
            assert not control_characters(value), (column, value)
    assert any(title.startswith("evil") and title.endswith("name.txt") for title in docs["title"])


def test_a_nul_in_a_jsonl_record_counts_as_undecodable(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "Fine prose."}) + "\n" + json.dumps({"text": "Bad\u0000record."}) + "\n")
    counts = corpora.ReadCounts()
    docs = list(corpora.read_source(CorpusSettings(source=str(path)), counts))
    assert [d.text for d in docs] == ["Fine prose."] and counts.undecodable == 1
