"""Tokenizing a corpus in pieces gives the tokens of the whole text with the real SmolLM2 tokenizer (slow), on prose
with numbers, punctuation and accents (with the planted circuit's tokenizer: tests/integration/reliability/test_corpus_inputs.py)."""

from __future__ import annotations

import random

import pytest
from corpus_text import unpunctuated

from lookups.pipeline.inputs import checkpoints


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
