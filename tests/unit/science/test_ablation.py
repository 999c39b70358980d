"""The KS summary of zero-ablation drops, active against inactive prompts (no model; the ablation itself on the
planted model: tests/integration/science/test_ablation.py)."""

import numpy as np
import pandas as pd

from lookups.pipeline.science import ablation


def test_ks_summary_separates_active_from_inactive_drops():
    rows = pd.DataFrame({"active": [True] * 20 + [False] * 20, "act_drop": np.r_[np.linspace(2, 3, 20), np.linspace(-0.1, 0.1, 20)], "prob_drop": 0.0})
    out = ablation.ks_summary(rows).set_index("metric")
    assert out.loc["act_drop", "ks_statistic"] == 1.0 and out.loc["act_drop", "p_value"] < 1e-8
    assert out.loc["prob_drop", "ks_statistic"] == 0.0
    assert out.loc["act_drop", "n_active"] == 20 and out.loc["act_drop", "n_inactive"] == 20
    one_sided = ablation.ks_summary(rows[rows.active])
    assert one_sided["ks_statistic"].isna().all()
    no_pairs = ablation.ks_summary(pd.DataFrame(columns=ablation.ABLATION_COLUMNS))  # a model without consistent pairs
    assert (no_pairs["n_active"] == 0).all() and no_pairs["p_value"].isna().all()
