"""A UTF-8 byte-order mark, which some editors write first in a file, is not text: a JSONL corpus keeps its first
record and a .txt document does not start with U+FEFF (the other reading rules: test_corpora.py)."""

import json

from lookups.pipeline.config import CorpusSettings
from lookups.pipeline.inputs.corpora import ReadCounts, read_source

BOM = "\ufeff".encode()


def test_a_jsonl_corpus_with_a_bom_keeps_its_first_record(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"id": "first", "text": "The first record."}), json.dumps({"id": "second", "text": "The second record."})]
    path.write_bytes(BOM + "\n".join(lines).encode() + b"\n")
    counts = ReadCounts()
    docs = list(read_source(CorpusSettings(source=str(path)), counts))
    assert [d.source_id for d in docs] == ["jsonl:first", "jsonl:second"]
    assert (counts.read, counts.malformed, counts.undecodable) == (2, 0, 0)


def test_a_text_file_with_a_bom_does_not_start_with_it(tmp_path):
    (tmp_path / "a.txt").write_bytes(BOM + b"A document saved by Notepad.")
    (tmp_path / "b.txt").write_text("A document without one.")
    docs = list(read_source(CorpusSettings(source=str(tmp_path)), ReadCounts()))
    assert [d.text for d in docs] == ["A document saved by Notepad.", "A document without one."]
