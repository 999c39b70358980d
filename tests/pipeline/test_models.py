"""Model resolution errors and keys (no model load)."""

import pytest

from lookups.pipeline.inputs.models import ModelError, ModelSource, fingerprint_weights, resolve_model


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope") + "/")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_unreachable_hub_or_unknown_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the hub
    with pytest.raises(ModelError, match="(cannot be reached|Unknown model)"):
        resolve_model("some-org/some-model-that-is-not-cached")


def test_empty_name_is_a_clear_error():
    with pytest.raises(ModelError, match="No model name"):
        resolve_model(" ")


def test_fingerprint_changes_with_the_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    first = fingerprint_weights(tmp_path)
    assert fingerprint_weights(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert fingerprint_weights(tmp_path) != first
    source = ModelSource("Org/Model Name", str(tmp_path), "local", first)
    assert source.model_id == f"org-model-name@{first[:12]}"
