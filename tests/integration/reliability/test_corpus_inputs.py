"""Corpus inputs that cannot blow up, on the planted circuit: the exemplar step's memory bounded by its batch (not
by the longest document), tokenizing in pieces giving the whole text's tokens, and each corpus's own read counts,
printed without a terminal escape (docs/data.md, docs/quality.md). Without a model:
tests/unit/inputs/test_corpus_inputs.py."""

from __future__ import annotations

from corpus_text import WORDS, prompt_set_of, unpunctuated

from lookups.pipeline import steps
from lookups.pipeline.config import ModelSettings
from lookups.pipeline.store.store import Store

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
