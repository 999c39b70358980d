"""The substitution test's cached path (docs/method.md, "Look-ups"): each substituted variant runs only the positions
from its substituted token on, the earlier positions' keys and values taken from the clean prompt's pass.

- on every tiny family, equal to the full-sequence path (the reference) within fp32 rounding, on prompts of several
  lengths (longer than the sliding windows) with substitutions from the second position to the last, in several
  passes or one, and chosen by the 'auto' probe;
- batched equal to one (pair, prompt) at a time;
- on the planted circuit, every pair's verdict, of the planted and the control model, the same both ways.
"""

import numpy as np
import pandas as pd
import pytest
import tiny_models

from lookups.pipeline.config import InterventionSettings
from lookups.pipeline.inputs import architecture
from lookups.pipeline.science import counterfactual

#: Two fp32 passes that differ only in how many positions they run: the cached path must agree with the full one
#: within this share of max(1, |the clean value|) (activation, head score) or absolutely (probability). Measured
#: at most 3.4e-6 on the tiny families (AVX-512, AVX2 and the default kernels): fp32 rounding, not a shortcut.
TOLERANCE = 1e-5
KEYS = ["layer", "neuron", "head_layer", "head", "doc_id", "site", "position", "distance", "original_token_id", "n_substitutes"]
VALUES = (("substituted_act", "clean_act"), ("clean_act", "clean_act"), ("substituted_score", "clean_score"),
          ("clean_score", "clean_score"), ("substituted_prob", None), ("clean_prob", None))


@pytest.fixture(scope="module", params=list(tiny_models.FAMILIES))
def arch(request, tmp_path_factory):
    folder = tiny_models.build_tiny(request.param, tmp_path_factory.mktemp("tiny") / request.param)
    return architecture.load_architecture(str(folder))


def _variants(arch) -> pd.DataFrame:
    """Three pairs on five prompts of 5 to 17 tokens (two of the same length), the looked-up position from the
    second token to the last one, so the substituted suffixes run 1 to 16 positions."""
    rng = np.random.default_rng(3)
    vocab = arch.model.config.vocab_size
    rows = []
    for d, n in enumerate((9, 5, 12, 17, 12)):
        ids = rng.integers(3, vocab, size=n).tolist()
        for p, (layer, neuron, head_layer, head) in enumerate([(2, 7, 1, 2), (2, 30, 2, 0), (1, 11, 0, 3)]):
            lookup = [1, n, n - 2][(d + p) % 3]
            rows.append({"cohort": "next_token", "layer": layer, "neuron": neuron, "head_layer": head_layer, "head": head, "doc_id": f"d{d}",
                         "split": "explain", "prompt_token_ids": ids, "next_token_id": 5 + d, "lookup_position": lookup})
    substitutes = counterfactual.Substitutes.uniform(int(vocab), {0})
    return counterfactual.plan_variants(pd.DataFrame(rows), substitutes, 3, 0)


def _assert_within_rounding(got: pd.DataFrame, reference: pd.DataFrame) -> None:
    """The same rows, and every value within ``TOLERANCE`` of the reference's scale."""
    got, reference = got.sort_values(KEYS).reset_index(drop=True), reference.sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[KEYS], reference[KEYS], check_dtype=False)
    for column, clean in VALUES:
        scale = np.maximum(1.0, reference[clean].abs()) if clean else 1.0
        apart = (got[column] - reference[column]).abs() / scale
        assert (apart <= TOLERANCE).all(), (column, float(apart.max()))


@pytest.mark.parametrize("batch_tokens", [40, 4096])
def test_cached_substitutions_equal_the_full_sequence_path(arch, batch_tokens):
    variants = _variants(arch)
    assert set(variants["position"]) >= {1, 17} and variants["prompt_token_ids"].map(len).max() > 6  # past the sliding windows
    run = {path: counterfactual.run_interventions(arch, variants, InterventionSettings(batch_tokens=batch_tokens, path=path), bos_id=0, pad_id=0)
           for path in ("cached", "full", "auto")}
    assert {path: frame.attrs["intervention_path"] for path, frame in run.items()} == {"cached": "cached", "full": "full", "auto": "cached"}
    pd.testing.assert_frame_equal(run["auto"], run["cached"])
    assert len(run["cached"]) == 2 * 15 and (run["full"]["act_drop"].abs() > 1e-3).sum() >= 10  # substitutions that move the neuron
    _assert_within_rounding(run["cached"], run["full"])


def test_batched_cached_substitutions_equal_one_prompt_at_a_time(arch):
    variants = _variants(arch)
    settings = InterventionSettings(path="cached")
    batched = counterfactual.run_interventions(arch, variants, settings, bos_id=0, pad_id=0)
    alone = pd.concat([counterfactual.run_interventions(arch, group, settings, bos_id=0, pad_id=0)
                       for _, group in variants.groupby(["layer", "neuron", "head_layer", "head", "doc_id"])], ignore_index=True)
    _assert_within_rounding(batched, alone)


def _both_ways(model_dir, variants: pd.DataFrame, bos_id: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The variants' rows by the full path and the cached one, checked within rounding, and the same verdicts; the
    full path's rows and per-pair tests."""
    arch = architecture.load_architecture(str(model_dir))
    run = {path: counterfactual.run_interventions(arch, variants, InterventionSettings(path=path), bos_id) for path in ("cached", "full")}
    _assert_within_rounding(run["cached"], run["full"])
    tests = {path: counterfactual.pair_tests(frame, 0.05).set_index(["layer", "neuron", "head_layer", "head"]) for path, frame in run.items()}
    pd.testing.assert_series_equal(tests["cached"]["confirmed"], tests["full"]["confirmed"])
    np.testing.assert_allclose(tests["cached"]["p_value"], tests["full"]["p_value"], rtol=1e-9)
    return run["full"], tests["full"]


def test_the_planted_verdicts_are_the_same_both_ways(planted_store):
    """Every consistent pair of the planted model (not only the explained ones), and the planted pair on the control
    model (no step tests it there: not consistent without the plant) on the same prompts: the same rows within
    rounding and the same verdicts both ways; the planted pair confirmed on the planted model only; and the rows the
    step stored ('auto') within rounding of the full path."""
    circuit, store, planted_id, _, control = planted_store
    keys = store.query("SELECT DISTINCT model_id, prompt_set_id FROM lookup_interventions WHERE model_id = ?", [planted_id]).iloc[0].to_dict()
    bos_id = int(store.query("SELECT bos_token_id FROM models WHERE model_id = ?", [planted_id]).iloc[0, 0])
    prompts = store.read("intervention_prompts", **keys, pairs=["-"], all_pairs=True)
    substitutes = counterfactual.Substitutes.unigram(store.read("prompt_token_counts", **keys), {bos_id})
    variants = counterfactual.plan_variants(prompts, substitutes, InterventionSettings().substitutes, 0)
    rows, tests = _both_ways(circuit.model_dir, variants, bos_id)
    assert tests.loc[circuit.key, "confirmed"] and tests.loc[circuit.key, "n_prompts"] > 10
    stored = store.query("SELECT * FROM lookup_interventions WHERE model_id = ?", [planted_id])
    _assert_within_rounding(stored, rows.merge(stored[["layer", "neuron", "head_layer", "head"]].drop_duplicates()))
    pair = variants.set_index(["layer", "neuron", "head_layer", "head"]).index == circuit.key
    _, on_control = _both_ways(control.model_dir, variants[pair], bos_id)
    assert len(on_control) == 1 and not on_control["confirmed"].iloc[0]
