"""Corpora and prompt sets (no model): normalising, passages, splits, duplicates, and reading text folders, JSONL,
Parquet and wikitext (the default corpus, read from the package index: tests/acceptance/test_corpora.py)."""

import json

import mwparserfromhell
import pandas as pd
import pytest

from lookups.pipeline.config import CorpusSettings, PromptSetSettings
from lookups.pipeline.inputs.corpora import (
    CorpusError,
    ReadCounts,
    build_prompt_set,
    dedupe_key,
    normalise,
    read_source,
    split_of,
    split_passages,
    wikitext_to_plain,
)


def sources(*texts, prefix="s"):
    return pd.DataFrame({"source_id": [f"{prefix}{i}" for i in range(len(texts))], "title": [""] * len(texts), "text": list(texts)})


def test_normalise_and_dedupe_key_fold_what_does_not_matter():
    assert normalise("a  \r\nb\n\n\n\nc ") == "a\nb\n\nc"
    assert dedupe_key("The  Cat\nsat.") == dedupe_key("the cat sat.")
    assert dedupe_key("the cat sat.") != dedupe_key("the dog sat.")


def test_split_passages_respects_paragraphs_sentences_and_drops_headings():
    text = "History\n\n" + "First sentence here. " * 10 + "\n\nShort para ends here."
    passages = split_passages(normalise(text), max_chars=120)
    assert all(len(p) <= 120 for p in passages)
    assert not any(p.startswith("History") for p in passages)
    assert passages[-1].endswith("Short para ends here.")


def test_split_is_deterministic_and_stable_when_documents_are_added():
    few = build_prompt_set(sources("Alpha text one.", "Beta text two.", "Gamma text three."), PromptSetSettings(max_documents=None, heldout_fraction=0.5))
    more = build_prompt_set(
        sources("Alpha text one.", "Beta text two.", "Gamma text three.", "Delta text four."), PromptSetSettings(max_documents=None, heldout_fraction=0.5)
    )
    old = dict(zip(few.documents.doc_id, few.documents.split))
    new = dict(zip(more.documents.doc_id, more.documents.split))
    assert all(new[d] == s for d, s in old.items())
    assert few.prompt_set_id != more.prompt_set_id
    again = build_prompt_set(sources("Alpha text one.", "Beta text two.", "Gamma text three."), PromptSetSettings(max_documents=None, heldout_fraction=0.5))
    assert again.prompt_set_id == few.prompt_set_id


def test_split_fraction_is_roughly_honoured():
    splits = [split_of(f"doc{i}", 0.3) for i in range(2000)]
    assert 0.25 < splits.count("heldout") / len(splits) < 0.35


def test_near_duplicates_are_dropped_and_counted():
    ps = build_prompt_set(sources("The same article.", "the  SAME article.", "Another one."), PromptSetSettings(max_documents=None))
    assert ps.counts["duplicates_dropped"] == 1
    assert len(ps.documents) == 2


def test_slice_limits_passages():
    paragraph = "This paragraph is about {} and runs on for a while, long enough to fill a passage of its own."
    texts = ["\n\n".join(paragraph.format(topic) for topic in ("rivers", "bridges", "mountains"))]
    ps = build_prompt_set(sources(*texts), PromptSetSettings(passage_chars=100, max_passages_per_source=2, max_documents=None))
    assert len(ps.documents) == 2 and ps.counts["beyond_slice"] == 1


def test_empty_corpus_is_a_clear_error():
    with pytest.raises(CorpusError, match="no usable passages"):
        build_prompt_set(sources("   "), PromptSetSettings())


def test_text_folder_skips_undecodable_and_empty(tmp_path):
    (tmp_path / "a.txt").write_text("A real document.")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00bad")
    (tmp_path / "c.txt").write_text("   \n")
    counts = ReadCounts()
    docs = list(read_source(CorpusSettings(source=str(tmp_path)), counts))
    assert [d.text for d in docs] == ["A real document."]
    assert (counts.read, counts.undecodable, counts.empty) == (1, 1, 1)


def test_jsonl_skips_malformed_lines_and_names_a_missing_column(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "Good one."}) + "\n{not json\n\n" + json.dumps({"text": ""}) + "\n")
    counts = ReadCounts()
    docs = list(read_source(CorpusSettings(source=str(path)), counts))
    assert len(docs) == 1 and counts.malformed == 1 and counts.empty == 2
    with pytest.raises(CorpusError, match="text_column"):
        list(read_source(CorpusSettings(source=str(path), text_column="body"), ReadCounts()))


def test_parquet_reader(tmp_path):
    path = tmp_path / "c.parquet"
    pd.DataFrame({"content": ["One doc.", None, "Two doc."]}).to_parquet(path)
    counts = ReadCounts()
    docs = list(read_source(CorpusSettings(source=str(path), text_column="content"), counts))
    assert [d.text for d in docs] == ["One doc.", "Two doc."] and counts.empty == 1


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        list(read_source(CorpusSettings(source=str(tmp_path / "nope")), ReadCounts()))


def test_wikitext_keeps_prose_and_drops_markup_references_and_link_sections():
    wikitext = (
        "'''Cats''' are [[mammal|mammals]].<ref>Some citation</ref> {{Infobox|x=1}}\n\n"
        "[[File:Cat.jpg|thumb|A cat]]\n\n== History ==\nThey were [[domestication|domesticated]].\n\n"
        "== References ==\n* A reference list\n\n[[Category:Felines]]"
    )
    plain = wikitext_to_plain(mwparserfromhell.parse(wikitext))
    assert "Cats are mammals." in plain and "They were domesticated." in plain
    for junk in ("citation", "Infobox", "thumb", "reference list", "Category", "[[", "{{"):
        assert junk not in plain
