"""The atlas page: built from a real run on the planted circuit (attention highlights the trigger), and
every corpus or tokenizer string escaped (no markup from the data reaches the page)."""

import re

import numpy as np
import pandas as pd
from chains import run_chain

from lookups.pipeline.config import AtlasSettings
from lookups.pipeline.inputs import planted
from lookups.pipeline.report import atlas

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_the_planted_pair_is_in_the_atlas_with_attention_on_the_trigger(tmp_path):
    from lookups.pipeline import steps

    circuit, store, model, attributions, head_scores, ablations = run_chain(tmp_path / "planted", plant=True)
    result = steps.run_atlas(model, ablations, AtlasSettings(prompts_per_pair=40), store)
    page = open(result.handle.path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page  # nothing fetched
    section = page[page.index(f"id='n{circuit.layer}-{circuit.neuron}'") :]
    pair = section[section.index(f"head L{circuit.head_layer}H{circuit.head}:") :].split("</details>")[0]
    prompts = re.findall(r"<div class=\"prompt\">(.*?)</div>", pair)
    assert len(prompts) >= 10
    for prompt in prompts:
        spans = re.findall(r'rgba\(255,170,0,([0-9.]+)\)" title="attention [0-9.]+">(.*?)</span>', prompt)
        words = [w for _, w in spans]
        if "wizard" in "".join(words):
            assert prompt.startswith('<b class="on">active</b>')
            strongest = max(spans, key=lambda s: float(s[0]))[1]
            assert strongest.strip() == planted.TRIGGER  # the head looks up the trigger word
        else:
            assert prompt.startswith('<b class="off">inactive</b>')
    assert "data:image/png;base64," in page  # figures inline
    again = steps.run_atlas(model, ablations, AtlasSettings(prompts_per_pair=40), store)
    assert again.skipped


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
    )
    attention = {(1, 3, "d"): {0: np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])}}
    page = atlas.render_atlas(data, lambda ids: [HOSTILE, "</div></section><script>"], attention, AtlasSettings(), {})
    assert "<script>alert" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # the page's own search script, nothing else
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<section") == page.count("</section>") == 1
