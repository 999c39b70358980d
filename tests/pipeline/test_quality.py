"""Great Expectations suites catch what they claim to (no model)."""

import numpy as np
import pandas as pd

from lookups.pipeline import quality


def exemplar_frame():
    return pd.DataFrame(
        {
            "model_id": "m", "prompt_set_id": "p", "layer": [1, 1, 2], "neuron": [5, 5, 7], "doc_id": ["a", "b", "a"],
            "doc_max_act": [2.0, 1.5, 3.0], "prompt_act": [1.8, 1.5, 2.7], "act_ratio": [0.9, 1.0, 0.9],
            "prompt_n_tokens": [3, 10, 99], "prompt_start": [7, 0, 1], "doc_max_pos": [9, 9, 99],
        }
    )


def run(frame):
    return quality.validate(quality.exemplar_check_frame(frame), "neuron_exemplars", quality.exemplars_suite(0.8, 100))


def failed(outcome):
    return {(f["expectation"], f["kwargs"].get("column") or str(f["kwargs"].get("column_list"))) for f in outcome.failures}


def test_clean_exemplars_pass():
    outcome = run(exemplar_frame())
    assert outcome.success, outcome.summary()


def test_duplicates_infinities_low_ratios_long_prompts_and_wrong_ends_fail():
    frame = exemplar_frame()
    frame.loc[1, "doc_id"] = "a"  # duplicate key
    frame.loc[0, "prompt_act"] = np.inf
    frame.loc[2, "act_ratio"] = 0.5
    frame.loc[2, "prompt_n_tokens"] = 100
    outcome = run(frame)
    assert not outcome.success
    kinds = failed(outcome)
    assert ("expect_compound_columns_to_be_unique", str(["model_id", "prompt_set_id", "layer", "neuron", "doc_id"])) in kinds
    assert ("expect_column_values_to_be_between", "prompt_act") in kinds
    assert ("expect_column_values_to_be_between", "act_ratio") in kinds
    assert ("expect_column_values_to_be_between", "prompt_n_tokens") in kinds
    assert ("expect_column_values_to_be_in_set", "ends_at_max") in kinds  # row 2 now ends at 100, not 99


def test_coverage_warns_below_the_share():
    frame = pd.DataFrame({"n_exemplars": [3, 0, 0, 2]})
    assert not quality.validate(frame, "c", quality.coverage_suite(0.8)).success
    assert quality.validate(frame, "c", quality.coverage_suite(0.5)).success


def decomposition_frame():
    return pd.DataFrame(
        {
            "model_id": "m", "prompt_set_id": "p", "layer": [2, 2], "neuron": [7, 7], "doc_id": ["a", "b"],
            "pre_in": [1.0, -0.5], "sum_in": [1.0, -0.5], "act": [0.8, -0.1], "identity_abs_error": [1e-7, 2e-7], "identity_rel_error": [1e-8, 3e-8],
        }
    )


def test_attribution_identity_fails_above_the_tolerance():
    assert quality.validate(decomposition_frame(), "d", quality.attribution_identity_suite(1e-3)).success
    broken = decomposition_frame()
    broken.loc[1, "identity_rel_error"] = 2e-3  # a decomposition that misses its pre-activation
    outcome = quality.validate(broken, "d", quality.attribution_identity_suite(1e-3))
    assert not outcome.success and ("expect_column_values_to_be_between", "identity_rel_error") in failed(outcome)


def test_head_rows_from_later_layers_and_bad_fractions_fail():
    heads = pd.DataFrame(
        {"model_id": "m", "prompt_set_id": "p", "layer": [2, 2], "neuron": [7, 7], "doc_id": "a", "head_layer": [1, 3], "head": [0, 0],
         "in_contribution": [0.1, 0.2], "score": [0.1, 0.2]}
    )
    outcome = quality.validate(heads, "h", quality.head_attributions_suite())
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "None") in failed(outcome)
    scores = pd.DataFrame(
        {"model_id": "m", "prompt_set_id": "p", "layer": 2, "neuron": 7, "head_layer": [0, 1], "head": [0, 0], "mean_score": [1.0, 0.5],
         "std_score": [0.1, 0.1], "active_fraction": [0.5, 1.5], "heldout_active_fraction": [0.5, None], "rank": [1, 1], "n_prompts": [8, 8]}
    )
    kinds = failed(quality.validate(scores, "s", quality.head_scores_suite()))
    assert ("expect_column_values_to_be_between", "active_fraction") in kinds
    assert ("expect_compound_columns_to_be_unique", str(["model_id", "prompt_set_id", "layer", "neuron", "rank"])) in kinds
