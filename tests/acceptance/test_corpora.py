"""The default corpus (slow): real Wikipedia prose from the gensim wheel on the package index, parsed into passages
(the readers and prompt sets on small inputs: tests/unit/inputs/test_corpora.py)."""

import pandas as pd
import pytest

from lookups.pipeline.config import CorpusSettings, PromptSetSettings
from lookups.pipeline.inputs.corpora import ReadCounts, build_prompt_set, read_source


@pytest.mark.slow
def test_default_corpus_is_real_wikipedia_prose_from_the_package_index():
    """Fetches the gensim wheel from PyPI once (cached in the data folder) and parses its first articles."""
    counts = ReadCounts()
    docs = list(read_source(CorpusSettings(max_source_documents=3), counts))
    assert len(docs) == 3 and counts.read == 3
    for doc in docs:
        assert doc.source_id.startswith("enwiki:") and len(doc.text) > 1000
        assert "[[" not in doc.text and "{{" not in doc.text and "<ref" not in doc.text
    passages = build_prompt_set(pd.DataFrame([d.__dict__ for d in docs]), PromptSetSettings(max_documents=None)).documents
    assert passages["n_chars"].max() <= 1000 * 1.5  # a single over-long sentence may exceed the target
