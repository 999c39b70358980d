"""Consistent pairs from per-prompt active flags (no model)."""

import pandas as pd

from lookups.pipeline.config import HeadScoreSettings
from lookups.pipeline.science.head_scores import SCORE_COLUMNS, head_neuron_scores


def frame(active_by_head: dict, split="explain", layer=5, neuron=7):
    rows = []
    for (head_layer, head), flags in active_by_head.items():
        for i, flag in enumerate(flags):
            rows.append(
                {"layer": layer, "neuron": neuron, "split": split, "doc_id": f"{split}{i}", "head_layer": head_layer, "head": head,
                 "gate_contribution": None, "in_contribution": 2.0 * flag + 0.01 * head, "score": 2.0 * flag + 0.01 * head, "active": flag}
            )
    return pd.DataFrame(rows)


def test_consistent_means_active_on_a_quarter_to_three_quarters_of_explain_prompts():
    explain = frame(
        {
            (0, 0): [True] * 8,  # always on: not context-dependent
            (0, 1): [True] * 4 + [False] * 4,  # half: consistent
            (1, 0): [True] * 2 + [False] * 6,  # exactly a quarter: consistent (bounds inclusive)
            (1, 1): [True] + [False] * 7,  # one in eight: not
        }
    )
    heldout = frame({(0, 1): [True, False, False], (1, 1): [False, False, False]}, split="heldout")
    raw = head_neuron_scores(pd.concat([explain, heldout]), HeadScoreSettings())
    assert list(raw.columns) == SCORE_COLUMNS
    out = raw.set_index(["head_layer", "head"])
    assert out["consistent"].to_dict() == {(0, 0): False, (0, 1): True, (1, 0): True, (1, 1): False}
    assert out.loc[(0, 1), "active_fraction"] == 0.5 and out.loc[(0, 1), "n_prompts"] == 8
    assert out["rank"].to_dict() == {(0, 0): 1, (0, 1): 2, (1, 0): 3, (1, 1): 4}  # by mean score
    assert out.loc[(0, 1), "heldout_active_count"] == 1 and out.loc[(0, 1), "heldout_n_prompts"] == 3
    assert out.loc[(0, 0), "heldout_n_prompts"] == 0 and pd.isna(out.loc[(0, 0), "heldout_active_fraction"])


def test_thresholds_and_minimum_prompts_are_configuration():
    explain = frame({(0, 0): [True] * 3 + [False]})  # 4 prompts, 75% active
    assert bool(head_neuron_scores(explain, HeadScoreSettings(min_prompts=4))["consistent"][0])
    assert not head_neuron_scores(explain, HeadScoreSettings(min_prompts=5))["consistent"][0]
    assert not head_neuron_scores(explain, HeadScoreSettings(min_prompts=1, consistent_max=0.7))["consistent"][0]
