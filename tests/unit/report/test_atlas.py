"""The atlas page rendered from small hand-made tables (no model): the not-yet-explained note only without
explanations, the score histograms and each measure with its 95% CI against the baselines once they are scored, and every corpus or tokenizer string
escaped (no markup from the data reaches the page). Built from real runs on the planted circuit:
tests/integration/report/test_atlas.py."""

import pandas as pd

from lookups.pipeline.config import AtlasSettings
from lookups.pipeline.llm import significance
from lookups.pipeline.report import atlas, figures

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
NOT_YET = "appear here once the explanation assets have run"


def atlas_data(**explained) -> atlas.AtlasData:
    return atlas.AtlasData(
        model={"model_id": "m@1", "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "d_mlp": 8, "mlp_kind": "ungated"},
        prompt_set_id="ps-1",
        neurons=pd.DataFrame(columns=["layer", "neuron", "token", "score", "zscore"]),
        scores=pd.DataFrame(columns=["layer", "neuron", "head_layer", "head", "mean_score", "active_fraction", "consistent", "rank", "n_prompts"]),
        exemplars=pd.DataFrame(columns=["layer", "neuron", "doc_id", "split", "rank", "prompt_token_ids", "prompt_act", "next_token"]),
        active=pd.DataFrame(columns=["layer", "neuron", "doc_id", "head_layer", "head", "score", "active"]),
        ablations=pd.DataFrame(columns=["layer", "neuron", "head_layer", "head", "active", "act_drop"]),
        tests=pd.DataFrame(),
        heads_by_layer=pd.DataFrame({"head_layer": [0], "consistent_pairs": [0]}),
        **explained,
    )


def test_the_not_yet_explained_note_shows_only_without_explanations():
    assert NOT_YET in atlas.render_atlas(atlas_data(), lambda ids: [], AtlasSettings(), {})
    explanations = pd.DataFrame(
        {"layer": [1], "neuron": [3], "head_layer": [0], "head": [1], "explainer": ["contrastive"], "status": ["ok"], "explanation": ["x"],
         "e_score": [0.75], "auc": [0.8], "calibrated_e": [None], "embedding_auc": [None], "simulation_correlation": [None], "reason": [None]}
    )
    scores = pd.DataFrame(
        {"explanation_id": [f"e{i}" for i in range(6)], "explainer": "contrastive", "scorer": "detection",
         "cohort": ["next_token"] * 4 + ["random"] * 2, "baseline": ["none", "none", "shuffled", "shuffled", "none", "none"], "status": "scored",
         "e_score": [0.75, 0.5, 0.5, 0.625, 0.5, 0.375], "auc": [0.8, 0.6, 0.5, 0.55, 0.5, 0.4], "calibrated_e": None, "correlation": None}
    )
    scores.loc[2:3, "explanation_id"] = ["e0", "e1"]  # the shuffled rows of e0 and e1
    tests = significance.explanation_tests(scores).assign(signal=False)
    page = atlas.render_atlas(
        atlas_data(explanations=explanations, explanation_scores=scores, explanation_tests=tests), lambda ids: [], AtlasSettings(),
        {"score_histograms": figures.score_histograms(scores, "t")},
    )
    assert NOT_YET not in page
    assert "<img alt='histograms of the explanation scores against the baselines' src='data:image/png;base64," in page
    table = page[page.index("id='explanation-tests'") :].split("</table>")[0]
    by = tests.set_index(["measure", "baseline"])
    low, high = by.loc[("e_score", "random_neurons"), ["ci_low", "ci_high"]]
    assert f"<td>contrastive</td><td>detection</td><td>E</td><td>2</td><td>0.625</td><td>[{low:.3f}, {high:.3f}]</td><td>0.438 (n=2)</td>" in table
    assert "<td>0.562 (n=2)</td>" in table  # the shuffled explanations' mean E
    assert "<td>detection</td><td>AUC</td><td>2</td><td>0.700</td>" in table
    assert "(AUC 0.80, E 0.75)" in atlas._explanations(explanations, 1, 3, 0, 1)[0]  # the pair's own line


def test_everything_from_the_data_is_escaped():
    data = atlas.AtlasData(
        model={"model_id": "m@1", "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "d_mlp": 8, "mlp_kind": "ungated"},
        prompt_set_id="ps-1",
        neurons=pd.DataFrame({"layer": [1], "neuron": [3], "token": [HOSTILE], "score": [1.0], "zscore": [5.0]}),
        scores=pd.DataFrame(
            {
                "layer": [1], "neuron": [3], "head_layer": [0], "head": [1], "mean_score": [0.5], "active_fraction": [0.5], "consistent": [True],
                "rank": [1], "n_prompts": [6],
            }
        ),
        exemplars=pd.DataFrame(
            {
                "layer": [1], "neuron": [3], "doc_id": ["d"], "split": ["explain"], "rank": [1], "prompt_token_ids": [[5, 6]], "prompt_act": [1.0],
                "next_token": [HOSTILE],
            }
        ),
        active=pd.DataFrame({"layer": [1], "neuron": [3], "doc_id": ["d"], "head_layer": [0], "head": [1], "score": [0.5], "active": [True]}),
        ablations=pd.DataFrame(columns=["layer", "neuron", "head_layer", "head", "active", "act_drop"]),
        tests=pd.DataFrame(),
        heads_by_layer=pd.DataFrame({"head_layer": [0], "consistent_pairs": [1]}),
        lookups=pd.DataFrame(
            {"layer": 1, "neuron": 3, "head_layer": 0, "head": 1, "doc_id": "d", "position": [0, 1, 2], "token": HOSTILE, "attention": [0.1, 0.2, 0.7],
             "contribution": [0.0, -0.1, 0.4], "rank": [2, 3, 1]}
        ),
        pair_lookups=pd.DataFrame(
            {"layer": [1], "neuron": [3], "head_layer": [0], "head": [1], "n_active_prompts": [1], "top_tokens": [[HOSTILE]], "concentration": [0.8],
             "median_distance": [1.0], "copying": [False], "previous_token": [True], "reads_bos": [False], "tested_prompts": [None]}
        ),
    )
    page = atlas.render_atlas(data, lambda ids: [HOSTILE, "</div></section><script>"], AtlasSettings(), {})
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # the page's own search script, nothing else
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<section") == page.count("</section>") == 1
    assert "previous token" in page and "class='top'" in page and "rgba(40,80,200" in page  # a negative contribution is blue
