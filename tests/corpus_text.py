"""Corpus text for the tests of corpus inputs (tests/unit/inputs/test_corpus_inputs.py and its integration and
acceptance parts): unpunctuated text of any length, and a prompt set built from a folder through the steps."""

from __future__ import annotations

import random

from lookups.pipeline import steps
from lookups.pipeline.config import CorpusSettings, PromptSetSettings

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


def prompt_set_of(folder, store, **settings):
    corpus = steps.run_corpus(CorpusSettings(source=str(folder)), store).handle
    return steps.run_prompt_set(corpus, PromptSetSettings(**settings), store).handle
