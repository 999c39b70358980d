"""The opt-in local explainer `qwen2.5-coder-0.5b-instruct` (`make install-qwen-explainer`): its six GGUF parts
as installed, and the local backend answering with it. The first run dequantizes it into the shared cache (about
a minute on 2 cores, 2.5 GB). Skipped where the parts are not installed: they are not in `make install`."""

import importlib.metadata

import pytest
from checksums import size_and_sha256

from lookups.pipeline.config import QWEN_CODER_MODEL, ExplanationSettings
from lookups.pipeline.inputs import checkpoints

SPEC = checkpoints.QWEN_CODER_GGUF


def _installed() -> bool:
    try:
        return all(importlib.metadata.version(d) == SPEC.version for d in SPEC.distributions)
    except importlib.metadata.PackageNotFoundError:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _installed(), reason=f"the opt-in Qwen explainer parts are not installed: `make {SPEC.make_target}`"),
]


def test_the_installed_parts_assemble_to_the_pinned_hash():
    parts = checkpoints.split_gguf_parts(SPEC)
    assert [p.name for p in parts] == [f"part{i:02d}.bin" for i in range(1, 7)]
    assert size_and_sha256(parts) == (SPEC.size, SPEC.sha256)


@pytest.fixture(scope="module")
def backend():
    from lookups.pipeline.llm.backends import LocalBackend

    return LocalBackend(ExplanationSettings(local_model=QWEN_CODER_MODEL, batch_size=2))


def test_it_resolves_to_a_qwen2_checkpoint_without_the_gguf(backend):
    import json
    from pathlib import Path

    local = Path(backend.source.local_dir)
    config = json.loads((local / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == (24, 896, 4864)
    assert backend.source.origin == "embedded-gguf" and backend.model.startswith("qwen2.5-coder-0.5b-instruct@")
    assert not list(local.parent.glob(f"*{SPEC.file_name}*")), "the assembled GGUF is deleted after dequantization"


def test_the_local_backend_explains_and_classifies_with_qwen(backend):
    from lookups.pipeline.llm.backends import LlmRequest
    from lookups.pipeline.llm.templates import load_template, quoted, snippet

    token = " river"
    active = ["The boat drifted down the long", "They built the mill beside the fast-flowing", "Salmon swim up the"]
    inactive = ["She opened the letter and read the", "The committee voted on the new"]
    explain = load_template("explain.v1").messages(
        token=quoted(token),
        active="\n".join(f"{i + 1}. {snippet(t, token, 300)}" for i, t in enumerate(active)),
        inactive="\n".join(f"{i + 1}. {snippet(t, token, 300)}" for i, t in enumerate(inactive)),
    )
    classify = load_template("classify.v2").messages(
        token=quoted(token), explanation="Active when the text is about water, boats or fish.", prompt=snippet("The fishermen rowed across the", token, 300)
    )
    [(_, explained)] = list(backend.run([LlmRequest("explain", "explain", explain, 48)], lambda: True))
    [(_, answered)] = list(backend.run([LlmRequest("classify", "classify", classify, 3)], lambda: True))
    assert explained.status == "ok" and len(explained.text.split()) >= 3, explained
    assert answered.status == "ok" and answered.answer in (True, False) and 0.0 <= answered.p_yes <= 1.0, answered
