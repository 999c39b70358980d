"""A forward pass resumed at a block from the stream a clean pass cached there (``capture.Resume``) equals the full
forward pass, with and without an edit of that block's attention output, on every tiny family: what lets the
ablation and the knockout skip the layers below the head they change (docs/method.md, "Interventions")."""

import numpy as np
import pytest
import tiny_models
import torch

from lookups.pipeline.inputs import architecture
from lookups.pipeline.inputs.capture import Resume, block_input, capture
from lookups.pipeline.science.batching import pad_right


@pytest.fixture(scope="module", params=list(tiny_models.FAMILIES))
def arch(request, tmp_path_factory):
    folder = tiny_models.build_tiny(request.param, tmp_path_factory.mktemp("tiny") / request.param)
    return architecture.load_architecture(str(folder))


def _tokens(arch) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    prompts = [np.concatenate([[0], rng.integers(3, arch.model.config.vocab_size, size=n)]) for n in (9, 5, 12)]
    return pad_right(prompts, 0)


def _zero_head(arch, head: int):
    def edit(z: torch.Tensor) -> torch.Tensor:  # the head's z -> 0 at every position
        z = z.clone()
        z[..., head * arch.d_head:(head + 1) * arch.d_head] = 0.0
        return z

    return edit


@pytest.mark.parametrize("edited", [False, True])
def test_resumed_forward_equals_the_full_forward(arch, edited):
    tokens, _ = _tokens(arch)
    blocks = Resume.blocks_of(arch.first_block)
    last = len(arch.layers) - 1
    wanted = {"act": (arch.layers[last].mlp_out, "input"), "final": (arch.final_norm.path, "output")}
    cached = capture(arch.model, tokens, {f"in{layer}": block_input(blocks, layer) for layer in range(len(arch.layers))})
    for layer in range(1, len(arch.layers)):
        edits = {arch.layers[layer].attn_out: _zero_head(arch, 1)} if edited else None
        full = capture(arch.model, tokens, wanted, edits=edits)
        resumed = capture(arch.model, tokens, wanted, edits=edits, resume=Resume(blocks, layer, cached[f"in{layer}"]))
        for key in wanted:
            torch.testing.assert_close(resumed[key], full[key], rtol=1e-6, atol=1e-6)
    # Nothing of the resumed pass is left on the model: a plain pass after it is unchanged.
    torch.testing.assert_close(capture(arch.model, tokens, wanted)["final"], capture(arch.model, tokens, wanted)["final"], rtol=0, atol=0)
    assert len(getattr(arch.model.get_submodule(blocks.rpartition(".")[0]) if "." in blocks else arch.model, blocks.rpartition(".")[2])) == len(arch.layers)


def test_ablation_resumed_equals_ablation_from_the_embedding(arch):
    """The ablation step resumes each ablated row at its head's layer: the same activations and probabilities as
    running every row from the embedding (same batches, so equal to the bit here; 1e-6 allows other kernels)."""
    import pandas as pd

    from lookups.pipeline.config import AblationSettings
    from lookups.pipeline.science import ablation

    rng = np.random.default_rng(2)
    vocab = arch.model.config.vocab_size
    prompts = [rng.integers(3, vocab, size=5 + d).tolist() for d in range(4)]
    rows = [
        {"layer": layer, "neuron": neuron, "doc_id": f"d{d}", "split": "explain", "head_layer": head_layer, "head": head, "active": bool(d % 2),
         "prompt_token_ids": prompts[d], "next_token_id": 7 + d}
        for d in range(4) for layer, neuron in [(1, 5), (2, 40)] for head_layer in range(layer + 1) for head in (0, 3)
    ]
    frame = pd.DataFrame(rows)
    settings = AblationSettings(batch_tokens=48)  # several batches and chunks
    resumed = ablation.ablate_pairs(ablation.Intervener(arch), frame, settings, bos_id=0, pad_id=0)
    full = ablation.ablate_pairs(ablation.Intervener(arch, resume=False), frame, settings, bos_id=0, pad_id=0)
    for column in ("clean_act", "ablated_act", "clean_prob", "ablated_prob"):
        np.testing.assert_allclose(resumed[column], full[column], rtol=1e-6, atol=1e-7)
    assert (resumed["act_drop"].abs() > 0).any()


def test_a_pass_without_the_probability_stops_at_the_neuron_and_reads_the_same(arch):
    """Without token ids the resumed pass stops at the deepest neuron's layer (nothing after it, no logits) and
    reads the same activations as the pass that runs to the logits."""
    from lookups.pipeline.science import ablation

    tokens, lengths = _tokens(arch)
    intervener = ablation.Intervener(arch)
    read = np.array([[1, 5], [1, 9], [1, 40]])
    clean = intervener.run(tokens, lengths, read, np.array([3, 4, 5]), cache=(1,))
    edit = intervener.zero_heads(1, np.array([0, 1, 2]))
    with_prob = intervener.run(tokens, lengths, read, np.array([3, 4, 5]), start=(1, clean.streams[1]), edit=edit)
    stopped = intervener.run(tokens, lengths, read, None, start=(1, clean.streams[1]), edit=edit)
    np.testing.assert_allclose(stopped.acts, with_prob.acts, rtol=1e-6, atol=1e-7)
    assert np.isnan(stopped.probs).all() and not np.isnan(with_prob.probs).any()
