"""The atlas page built from a real run on the planted circuit: attention highlights the trigger, the look-up
summary and the counterfactual test are shown, and once the explanations are scored, their score histograms and the means
with its 95% CI (rendered from hand-made tables without a model: tests/unit/report/test_atlas.py)."""

import base64
import re

import pandas as pd
import pytest
from chains import run_chain

from lookups.pipeline.config import AtlasSettings, ExplanationSettings, ScoringSettings
from lookups.pipeline.inputs import planted

NOT_YET = "appear here once the explanation assets have run"


def test_the_planted_pair_is_in_the_atlas_with_the_trigger_boxed(tmp_path):
    """Each prompt shaded by the head's contribution from each token (stored by the look-up step), the token it
    reads most boxed, its attention kept for the toggle; the look-up summary and the counterfactual test shown."""
    from lookups.pipeline import steps
    from lookups.pipeline.config import InterventionSettings, KnockoutSettings, LookupSettings, QKSettings

    circuit, store, model, attributions, head_scores, ablations = run_chain(tmp_path / "planted", plant=True)
    looked_up = steps.run_lookups(model, head_scores, LookupSettings(), store).handle
    result = steps.run_atlas(model, ablations, AtlasSettings(prompts_per_pair=40), store)
    page = open(result.handle.path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page and "https://" not in page  # nothing fetched
    section = page[page.index(f"id='n{circuit.layer}-{circuit.neuron}'") :]
    pair = section[section.index(f"head L{circuit.head_layer}H{circuit.head}:") :].split("</details>")[0]
    prompts = re.findall(r"<div class=\"prompt\">(.*?)</div>", pair)
    assert len(prompts) >= 10
    for prompt in prompts:
        boxed = re.findall(r"<span class='top' style='background:rgba\(200,40,40,([0-9.]+)\)' data-contribution='[^']*' data-attention='([0-9.]+)'"
                           r" title='[^']*'>(.*?)</span>", prompt)
        if "wizard" in prompt:
            assert prompt.startswith('<b class="on">active</b>')
            assert [w.strip() for *_, w in boxed] == [planted.TRIGGER]  # the head reads the trigger word, boxed
            assert float(boxed[0][0]) == 1.0 and float(boxed[0][1]) > 0.5  # the largest contribution, most of the attention
        else:
            assert prompt.startswith('<b class="off">inactive</b>')
    assert f"<b>reads</b> {repr(' ' + planted.TRIGGER)}" in pair.replace("&#x27;", "'")
    assert "data:image/png;base64," in page  # figures inline
    assert NOT_YET in page and "id='mean-e'" not in page  # nothing explained yet
    assert "counterfactual" not in pair  # not tested yet
    again = steps.run_atlas(model, ablations, AtlasSettings(prompts_per_pair=40), store)
    assert again.skipped
    # The explained pairs are what the counterfactual test takes.
    steps.run_explanations(model, head_scores, ExplanationSettings(backend="contrastive"), store, head_lookups=looked_up)
    tested = steps.run_interventions(model, looked_up, InterventionSettings(), store).handle
    result = steps.run_atlas(model, ablations, AtlasSettings(prompts_per_pair=40), store, lookup_interventions=tested)
    assert not result.skipped
    page = open(result.handle.path, encoding="utf-8").read()
    assert "<b>counterfactual</b> <b class='on'>confirmed</b>" in page
    assert "<b>knockout</b>" not in page and "why it looks there" not in page  # neither run yet
    knocked = steps.run_knockouts(model, looked_up, KnockoutSettings(untruncated=True), store).handle
    why = steps.run_qk(model, looked_up, QKSettings(), store).handle
    result = steps.run_atlas(model, ablations, AtlasSettings(prompts_per_pair=40), store, lookup_interventions=tested, lookup_knockouts=knocked,
                             qk_attributions=why)
    assert not result.skipped
    page = open(result.handle.path, encoding="utf-8").read()
    pair = page[page.index(f"head L{circuit.head_layer}H{circuit.head}:") :].split("</details>")[0]
    assert "<b>knockout</b> <b class='on'>confirmed</b>" in pair and "on the untruncated windows <b class='on'>confirmed</b>" in pair
    assert "<b>why it looks there</b>" in pair and "lexical: the token itself" in pair and "key side embed" in pair


def test_once_explanations_are_scored_the_atlas_shows_them_with_the_score_histograms_and_cis(tmp_path):
    from lookups.pipeline import steps

    circuit, store, model, _, head_scores, ablations = run_chain(tmp_path / "planted", plant=True)
    explained = steps.run_explanations(model, head_scores, ExplanationSettings(backend="contrastive"), store).handle
    scored = steps.run_explanation_scores(model, explained, ScoringSettings(), store).handle
    result = steps.run_atlas(model, ablations, AtlasSettings(), store, scored)
    page = open(result.handle.path, encoding="utf-8").read()
    assert NOT_YET not in page  # the old page said so even now
    histogram = re.search(r"<img alt='histograms of the explanation scores against the baselines' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)
    assert histogram and base64.b64decode(histogram.group(1))[:8] == b"\x89PNG\r\n\x1a\n"  # inline: opens from disk
    assert "http://" not in page and "https://" not in page
    tests = store.rows("explanation_tests", **ablations.keys, explainer="contrastive").set_index(["scorer", "measure", "baseline"])
    table = page[page.index("id='explanation-tests'") :].split("</table>")[0]
    row = re.search(r"<td>contrastive</td><td>detection</td><td>E</td><td>(\d+)</td><td>([0-9.]+)</td><td>(.*?)</td>", table)
    own = tests.loc[("detection", "e_score", "random_neurons")]
    assert row and int(row.group(1)) == own["n"] and float(row.group(2)) == pytest.approx(own["mean"], abs=5e-4)
    low, high = own[["ci_low", "ci_high"]]
    assert row.group(3) == (f"[{low:.3f}, {high:.3f}]" if pd.notna(low) else "n/a")
    assert "<td>embedding</td><td>AUC</td>" in table
    # the planted pair's explanation
    assert f"head L{circuit.head_layer}H{circuit.head}:" in page and "<b>contrastive</b> (AUC 1.00, E 1.00, embedding AUC" in page
