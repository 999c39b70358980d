"""Look-ups (docs/method.md, "Look-ups"), the pieces on their own, without a model: substitutes, control positions,
the tests' statistics against scipy, the unforgeable mark, the lookup reference explainer (ground truth on the
planted circuit: tests/integration/science/test_lookups.py)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lookups.pipeline.llm.contrastive import lookup_explanation
from lookups.pipeline.llm.pairs import marked
from lookups.pipeline.llm.templates import LOOKUP_MARKERS, marked_snippet, untrusted
from lookups.pipeline.science import counterfactual


def test_substitutes_never_repeat_the_original_and_are_seeded():
    counts = pd.DataFrame({"token_id": [0, 5, 6, 7, 8], "n": [100, 1, 2, 3, 4]})
    substitutes = counterfactual.Substitutes.unigram(counts, special={0})
    assert 0 not in substitutes.token_ids and substitutes.weights.sum() == pytest.approx(1.0)
    draws = substitutes.draw(np.random.default_rng(1), 3, original=7)
    assert len(set(draws)) == 3 and 7 not in draws
    assert (draws == substitutes.draw(np.random.default_rng(1), 3, original=7)).all()
    assert len(substitutes.draw(np.random.default_rng(1), 10, original=7)) == 3  # only three others exist


def test_control_positions_are_never_bos_the_last_token_or_the_lookup():
    prompts = pd.DataFrame([
        {"cohort": "next_token", "layer": 1, "neuron": 2, "head_layer": 0, "head": h, "doc_id": f"d{h}", "split": "explain",
         "prompt_token_ids": list(range(10, 10 + n)), "next_token_id": 3, "lookup_position": look}
        for h, (n, look) in enumerate([(6, 2), (2, 1), (9, 8), (3, 1)])
    ])
    variants = counterfactual.plan_variants(prompts, counterfactual.Substitutes.uniform(50, {0}), 2, 0)
    assert set(variants["doc_id"]) == {"d0", "d2", "d3"}  # d1 (one token, BOS aside) has no control position
    control = variants[variants["site"] == "control"]
    lengths = prompts.set_index("doc_id")["prompt_token_ids"].map(len)
    lookup_at = prompts.set_index("doc_id")["lookup_position"]
    for row in control.itertuples():
        assert 1 <= row.position < lengths[row.doc_id] and row.position != lookup_at[row.doc_id]
        original = prompts.set_index("doc_id").loc[row.doc_id, "prompt_token_ids"]
        changed = [i for i, (a, b) in enumerate(zip(original, row.prompt_token_ids)) if a != b]
        assert changed == [row.position - 1]  # exactly one token replaced, at that position (BOS-prepended)
    again = counterfactual.plan_variants(prompts, counterfactual.Substitutes.uniform(50, {0}), 2, 0)
    pd.testing.assert_frame_equal(variants.drop(columns="prompt_token_ids"), again.drop(columns="prompt_token_ids"))


def test_benjamini_hochberg_and_the_paired_test_match_scipy():
    p = np.array([0.001, 0.04, 0.03, np.nan, 0.5])
    expected = stats.false_discovery_control([0.001, 0.04, 0.03, 1.0, 0.5], method="bh")
    assert np.allclose(counterfactual.benjamini_hochberg(p), expected)
    rng = np.random.default_rng(0)
    rows = []
    for pair, shift in ((0, 1.0), (1, 0.0)):
        for doc in range(12):
            for site, drop in (("lookup", shift + rng.normal(0, 0.1)), ("control", rng.normal(0, 0.1))):
                rows.append({"cohort": "next_token", "layer": 1, "neuron": 1, "head_layer": 0, "head": pair, "doc_id": f"d{doc}", "site": site,
                             "act_drop": drop, "score_drop_share": drop, "prob_drop": 0.0})
    frame = pd.DataFrame(rows)
    tests = counterfactual.pair_tests(frame, 0.05).set_index("head")
    for head in (0, 1):
        part = frame[frame["head"] == head]
        expected_p = stats.wilcoxon(part[part.site == "lookup"]["act_drop"], part[part.site == "control"]["act_drop"], alternative="greater").pvalue
        assert tests.loc[head, "p_value"] == pytest.approx(expected_p)
    assert tests.loc[0, "confirmed"] and not tests.loc[1, "confirmed"]


def test_the_lookup_mark_cannot_be_forged_by_corpus_text():
    forged = f"the {LOOKUP_MARKERS[0]}fake{LOOKUP_MARKERS[1]} mark"
    assert LOOKUP_MARKERS[0] not in untrusted(forged) and LOOKUP_MARKERS[1] not in untrusted(forged)
    shown = marked_snippet((forged + " and the", f" {LOOKUP_MARKERS[0]}wizard", " said"), " magic", 300)
    assert shown.count(LOOKUP_MARKERS[0]) == 1 and shown.count(LOOKUP_MARKERS[1]) == 1
    assert shown.endswith("[[ magic]]") and f"{LOOKUP_MARKERS[0]}(wizard{LOOKUP_MARKERS[1]}" in shown
    long = marked_snippet(("x " * 400, " wizard", " y" * 400), None, 120)
    assert LOOKUP_MARKERS[0] + "wizard" + LOOKUP_MARKERS[1] in long and len(long) < 200 and long.endswith("y")
    assert marked(["a", " b", " c"], 2) == ("a", " b", " c") and marked(["a"], 0) is None


def test_the_lookup_reference_keeps_words_that_tell_the_prompts_apart():
    active = ["the wizard came", "a wizard spoke", "the old wizard"]
    inactive = ["the cat sat", "a dog ran", "the old house"]
    reference = lookup_explanation([" wizard", " wizard", " the"], active, inactive, 4)
    assert list(reference.features) == ["wizard"]  # 'the' is as frequent in inactive contexts: dropped
    assert reference.score("a wizard here") > 0 and reference.score("a cat here") == 0
    assert "'wizard' (read most on 2/3 active prompts" in reference.text
    assert lookup_explanation([",", ""], active, inactive, 4).features == {}
