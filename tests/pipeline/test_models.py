"""Model resolution errors and keys, and the assembly of split GGUF parts (no model load)."""

import pytest

from lookups.pipeline.inputs import models
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


# Gemma 3 270M's GGUF, assembled from data-only parts (pipeline/inputs/models.py): small stand-in parts here;
# tests/pipeline/test_gemma3.py checks the real ones.


def _parts(tmp_path, chunks: list[bytes]) -> tuple[list, int, str]:
    import hashlib

    parts = []
    for i, chunk in enumerate(chunks, 1):
        part = tmp_path / f"model.gguf.part{i:02d}"
        part.write_bytes(chunk)
        parts.append(part)
    whole = b"".join(chunks)
    return parts, len(whole), hashlib.sha256(whole).hexdigest()


def _one_reinstall_hint(message: str) -> None:
    lines = message.splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in message
    assert sum(models.GEMMA3_REINSTALL in line for line in lines) == 1
    assert all(f"{dist}==1.0.0" in models.GEMMA3_REINSTALL for dist in models.GEMMA3_GGUF_DISTRIBUTIONS)


def test_assemble_gguf_joins_the_parts_in_order(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + bytes(range(256)) * 3, b"second", b"", b"fourth" * 1000])
    out = tmp_path / "assembled.gguf"
    assert models.assemble_gguf(parts, out, size, sha256) == out
    assert out.read_bytes() == b"".join(p.read_bytes() for p in parts)


def test_assemble_gguf_refuses_a_corrupt_part_and_leaves_no_file(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + b"a" * 5000, b"b" * 3000])
    parts[1].write_bytes(b"b" * 2999 + b"X")  # same size, one byte changed
    out = tmp_path / "assembled.gguf"
    with pytest.raises(ModelError, match="corrupt") as err:
        models.assemble_gguf(parts, out, size, sha256)
    _one_reinstall_hint(str(err.value))
    assert not out.exists()


def test_assemble_gguf_refuses_a_truncated_part_before_writing(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + b"a" * 5000, b"b" * 3000])
    parts[0].write_bytes(b"GGUF" + b"a" * 4000)
    out = tmp_path / "assembled.gguf"
    with pytest.raises(ModelError, match="truncated") as err:
        models.assemble_gguf(parts, out, size, sha256)
    _one_reinstall_hint(str(err.value))
    assert "7,004 bytes, not the expected 8,004" in str(err.value)
    assert not out.exists()


def test_assemble_gguf_names_a_missing_part(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"one", b"two"])
    parts[1].unlink()
    with pytest.raises(ModelError, match="is missing") as err:
        models.assemble_gguf(parts, tmp_path / "assembled.gguf", size, sha256)
    _one_reinstall_hint(str(err.value))
    assert str(parts[1]) in str(err.value) and not (tmp_path / "assembled.gguf").exists()


def test_a_missing_distribution_gives_the_install_hint():
    with pytest.raises(ModelError, match="gemma3-270m-no-such-part==1.0.0, which is not installed") as err:
        models.gemma3_gguf_parts(["gemma3-270m-no-such-part"])
    assert "make install" in str(err.value)
    _one_reinstall_hint(str(err.value))


def test_a_failed_gemma3_build_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    """A corrupt part stops the build before transformers reads anything: no GGUF, no checkpoint, no staging."""
    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    parts, _, _ = _parts(tmp_path, [b"x" * 100, b"y" * 100])
    monkeypatch.setattr(models, "GEMMA3_GGUF_SIZE", 200)
    with pytest.raises(ModelError, match="corrupt"):
        models._gemma3_checkpoint(parts)
    leftovers = [p.name for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_a_ready_checkpoint_is_never_replaced(tmp_path):
    """Two runs dequantizing at once: the second's copy is discarded, the first's (maybe being read) stays."""
    out, tmp = tmp_path / "model-fp32", tmp_path / ".model-fp32.1-x.tmp"
    for folder, tag in ((out, "first"), (tmp, "second")):
        folder.mkdir()
        (folder / "config.json").write_text(tag)
        (folder / "model.safetensors").write_text(tag)
    models._publish_folder(tmp, out)
    assert (out / "config.json").read_text() == "first"


def test_an_incomplete_checkpoint_folder_is_replaced(tmp_path):
    out, tmp = tmp_path / "model-fp32", tmp_path / ".model-fp32.1-x.tmp"
    out.mkdir()
    (out / "config.json").write_text("left by hand, no weights")
    tmp.mkdir()
    (tmp / "config.json").write_text("new")
    (tmp / "model.safetensors").write_text("new")
    models._publish_folder(tmp, out)
    assert (out / "model.safetensors").read_text() == "new" and not tmp.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model-fp32"]
