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
