"""Corpus inputs that cannot blow up: passages capped whatever the punctuation, an empty split a failed check,
the exemplar step's memory bounded by its batch (not by the longest document), control characters kept out of
passages and the terminal, and each corpus's own read counts (docs/data.md, docs/quality.md)."""

from __future__ import annotations

import json
import random
import unicodedata

import pandas as pd
import pytest

from lookups.pipeline import steps
from lookups.pipeline.config import CorpusSettings, ModelSettings, PromptSetSettings
from lookups.pipeline.inputs import checkpoints, corpora
from lookups.pipeline.store.store import Store

WORDS = "people walked along river near old town where small houses stood beside green fields and quiet roads".split()


def unpunctuated(n_chars: int, seed: int = 0) -> str:
    """Words and single spaces, no sentence end, no paragraph break: the worst case for passage cutting."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


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


def prompt_set_of(folder, store, **settings):
    corpus = steps.run_corpus(CorpusSettings(source=str(folder)), store).handle
    return steps.run_prompt_set(corpus, PromptSetSettings(**settings), store).handle


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


# ---------------------------------------------------------------- the exemplar step's memory

def test_the_exemplar_step_never_tokenizes_more_than_a_bounded_piece(planted_circuit):
    """A single very long passage (a large passage_chars) reaches the tokenizer in pieces of at most
    TOKENIZE_CHARS characters: a fast tokenizer holds several hundred bytes per character while it works, so
    this bounds the step's memory (bench/bench_exemplar_memory.py measures it: +545 MB for one 4 MB passage
    before, about +50 MB after)."""
    import pandas as pd

    from lookups.pipeline.config import ExemplarSettings
    from lookups.pipeline.inputs import planted
    from lookups.pipeline.inputs.runtime import load_runtime
    from lookups.pipeline.science import exemplars

    runtime = load_runtime(planted_circuit.model_dir)
    longest = []
    tokenizer = runtime.tokenizer
    original = type(tokenizer).__call__

    def spy(self, text, *args, **kwargs):
        longest.append(max(map(len, [text] if isinstance(text, str) else text)))
        return original(self, text, *args, **kwargs)

    text = unpunctuated(400_000) + " wizard people spell"
    docs = pd.DataFrame({"doc_index": [0], "doc_id": ["d0"], "split": ["explain"], "text": [text]})
    neurons = pd.DataFrame([{"layer": 2, "neuron": 77, "token_id": 5, "token": " magic"}])
    type(tokenizer).__call__ = spy
    try:
        frame, stats = exemplars.find_exemplars(runtime, neurons, docs, ExemplarSettings(**planted.EXEMPLAR_CONFIG))
    finally:
        type(tokenizer).__call__ = original
    assert longest and max(longest) <= exemplars.TOKENIZE_CHARS
    assert stats["document_tokens"] > 60_000 and len(frame) == 1


def test_tokenizing_in_pieces_gives_the_tokens_of_the_whole_text(planted_circuit):
    from transformers import AutoTokenizer

    from lookups.pipeline.science.exemplars import tokenize_documents

    tokenizer = AutoTokenizer.from_pretrained(planted_circuit.model_dir)
    texts = [unpunctuated(50_000, seed=1) + ".", "wizard  spell  magic.", unpunctuated(3_000, seed=2)]
    whole = [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert [t.tolist() for t in tokenize_documents(tokenizer, texts, max_chars=777)] == whole


@pytest.mark.slow
def test_tokenizing_in_pieces_matches_smollm2_on_prose_with_numbers_and_punctuation():
    from transformers import AutoTokenizer

    from lookups.pipeline.config import EMBEDDED_MODEL
    from lookups.pipeline.science.exemplars import tokenize_documents

    tokenizer = AutoTokenizer.from_pretrained(checkpoints.resolve_model(EMBEDDED_MODEL).local_dir)
    rng = random.Random(3)
    pieces = ["The 1,024 rivers' names (e.g. \"Rhône\") were listed.", "Il était une fois — 3.14 pommes!", "naïve café    spaced", "x=42;y=7", "don't"]
    prose = "\n".join(" ".join(rng.choice(pieces) for _ in range(40)) for _ in range(200))
    texts = [prose, unpunctuated(20_000)]
    whole = [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert [t.tolist() for t in tokenize_documents(tokenizer, texts, max_chars=500)] == whole


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


# ---------------------------------------------------------------- counts per corpus


def test_two_corpora_with_the_same_documents_each_keep_their_own_counts(tmp_path, planted_circuit, capsys):
    from lookups.pipeline.report.summary import print_summary

    texts = [f"Document {i} is about {WORDS[i]} and more. It ends here." for i in range(10)]
    a, b = tmp_path / "a", tmp_path / "b\x1b[31m"
    for folder in (a, b):
        folder.mkdir()
        for i, text in enumerate(texts):
            (folder / f"d{i}.txt").write_text(text)
    (a / "blank.txt").write_text("  \n")
    (a / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (a / "binary.txt").write_bytes(b"\x00\x01")
    store = Store()
    first = prompt_set_of(a, store, max_documents=None)
    second = prompt_set_of(b, store, max_documents=None)
    again = prompt_set_of(a, store, max_documents=None)
    # The same passages are one prompt set (every result after it is shared) ...
    assert first.prompt_set_id == second.prompt_set_id == again.prompt_set_id
    assert (first.stats["skipped_empty"], first.stats["skipped_undecodable"]) == (1, 2)
    assert (second.stats["skipped_empty"], second.stats["skipped_undecodable"]) == (0, 0)
    # ... and each corpus that built it keeps its own counts.
    reads = store.rows("corpus_reads", prompt_set_id=first.prompt_set_id).set_index("source")
    assert len(reads) == 2
    assert reads.loc[str(a), ["n_read", "skipped_empty", "skipped_undecodable", "skipped_malformed"]].tolist() == [10, 1, 2, 0]
    assert reads.loc[str(b), ["n_read", "skipped_empty", "skipped_undecodable", "skipped_malformed"]].tolist() == [10, 0, 0, 0]

    steps.run_model(ModelSettings(name=planted_circuit.model_dir), store)
    capsys.readouterr()
    print_summary(store, prompt_set_id=first.prompt_set_id)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "read," in line]
    assert any(str(a) in line and "1 empty, 2 undecodable, 0 malformed" in line for line in lines), out
    assert any("b\\x1b[31m" in line and "0 empty, 0 undecodable, 0 malformed" in line for line in lines), out
    assert "\x1b" not in out  # a corpus path never puts an escape code on the terminal
