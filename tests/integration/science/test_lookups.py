"""Look-ups (docs/method.md, "Look-ups"): what each head reads, the counterfactual test, the grounded explanations.

Ground truth on the planted circuit (its head reads the trigger word and switches the neuron on), and the control
model without the plant (the pieces on their own, without a model: tests/unit/science/test_lookups.py)."""

import pytest
from chains import run_planted_chain
from numerics import ACROSS_KERNELS_REL, rounding_bound

from lookups.pipeline import steps
from lookups.pipeline.config import AttributionSettings, ExplanationSettings, InterventionSettings, LookupSettings, ScoringSettings
from lookups.pipeline.inputs import architecture, planted
from lookups.pipeline.science import attribution, counterfactual, head_reads


@pytest.fixture(scope="module")
def planted_lookups(tmp_path_factory):
    """The planted chain through look-ups, contrastive and lookup explanations, their scores and the interventions."""
    folder = tmp_path_factory.mktemp("lookups")
    from chains import data_folder

    with data_folder(folder):
        circuit, store, handles = run_planted_chain(folder / "planted", plant=True)
        model, scores = handles["model"], handles["head_neuron_scores"]
        looked_up = steps.run_lookups(model, scores, LookupSettings(), store)
        explained = steps.run_explanations(model, scores, ExplanationSettings(backend="contrastive"), store, head_lookups=looked_up.handle)
        scored = steps.run_explanation_scores(model, explained.handle, ScoringSettings(), store)
        tested = steps.run_interventions(model, looked_up.handle, InterventionSettings(), store)
        yield circuit, store, model, scores, looked_up, explained, scored, tested


def _pair_where(circuit) -> str:
    return f"layer = {circuit.layer} AND neuron = {circuit.neuron} AND head_layer = {circuit.head_layer} AND head = {circuit.head}"


def test_the_planted_head_reads_the_trigger_on_every_active_prompt(planted_lookups):
    circuit, store, *_, looked_up, _, _, _ = planted_lookups
    rows = store.query(f"SELECT * FROM head_lookups WHERE {_pair_where(circuit)}")
    per_prompt = rows.groupby("doc_id")
    longest = int(rows["position"].max()) + 1
    # The terms sum to the head's output of their own pass within the rounding of the model's z = A·V product ...
    assert rows["identity_rel_error"].max() <= rounding_bound(longest + 1) and looked_up.stats["identity_max_rel_error"] <= rounding_bound(longest + 1)
    # ... which agrees with the stored attribution (another pass) within forward rounding; recomputed here from the
    # rows: the terms' sum is within both errors of the stored score.
    assert rows["attribution_rel_error"].max() <= ACROSS_KERNELS_REL
    attributed = store.query(f"SELECT doc_id, score FROM head_attributions WHERE {_pair_where(circuit)}").set_index("doc_id")["score"]
    errors = per_prompt[["identity_abs_error", "attribution_abs_error"]].first().sum(axis=1)
    gap = (per_prompt["contribution"].sum() - attributed).abs()
    float64_sums = 1e-12 * per_prompt["contribution"].apply(lambda c: c.abs().sum())  # this sum's order is not the step's
    assert (gap <= errors + float64_sums).all()
    top = rows[rows["active"] & (rows["rank"] == 1)]
    assert len(top) == rows[rows["active"]]["doc_id"].nunique() > 10
    assert (top["token"].str.strip() == planted.TRIGGER).all(), top["token"].value_counts()
    summary = store.query(f"SELECT * FROM pair_lookups WHERE {_pair_where(circuit)}").iloc[0]
    assert summary["top_tokens"][0].strip() == planted.TRIGGER and summary["concentration"] > 0.9
    assert not summary["copying"] and not summary["reads_bos"]


def test_replacing_the_trigger_removes_the_heads_attribution_and_confirms_the_pair(planted_lookups):
    circuit, store, *_, tested = planted_lookups
    rows = store.query(f"SELECT * FROM lookup_interventions WHERE {_pair_where(circuit)}")
    lookup, control = rows[rows["site"] == "lookup"], rows[rows["site"] == "control"]
    assert len(lookup) == len(control) > 10
    assert (lookup["score_drop_share"] >= 0.9).all(), lookup["score_drop_share"].describe()
    assert (control["score_drop_share"].abs() < 0.05).all(), control["score_drop_share"].describe()
    assert (lookup["act_drop"] > 1.0).all() and (lookup["n_substitutes"] == InterventionSettings().substitutes).all()
    test = store.query(f"SELECT * FROM lookup_tests WHERE {_pair_where(circuit)}").iloc[0]
    assert test["confirmed"] and test["q_value"] < 0.05
    assert tested.stats["next_token_share_confirmed"] == 1.0
    assert store.query("SELECT share_confirmed FROM lookup_confirmation WHERE cohort = 'next_token'")["share_confirmed"][0] == 1.0


def test_the_lookup_explainer_names_the_trigger_with_e_one(planted_lookups):
    circuit, store, *_ = planted_lookups
    explanation = store.query(f"SELECT * FROM explanations WHERE explainer = 'lookup' AND {_pair_where(circuit)}").iloc[0]
    assert f"'{planted.TRIGGER}'" in explanation["explanation"]
    own = store.query(f"SELECT * FROM explanation_scores WHERE explainer = 'lookup' AND baseline = 'none' AND {_pair_where(circuit)}").iloc[0]
    assert own["status"] == "scored" and own["e_score"] == 1.0


def test_nothing_changed_means_nothing_recomputed(planted_lookups):
    circuit, store, model, scores, looked_up, explained, _, _ = planted_lookups
    assert steps.run_lookups(model, scores, LookupSettings(batch_tokens=7), store).skipped  # a tuning setting
    assert steps.run_interventions(model, looked_up.handle, InterventionSettings(batch_tokens=64), store).skipped
    assert not steps.run_interventions(model, looked_up.handle, InterventionSettings(substitutes=2), store).skipped


def test_the_control_models_pair_is_not_confirmed(planted_lookups, tmp_path):
    """Without the plant the pair is not consistent, so no step tests it: run the science on it directly, on the
    prompts where the planted head was active (they hold the trigger), with the control model's own attribution."""
    circuit, store, *_ = planted_lookups
    control, _, handles = run_planted_chain(tmp_path / "control", plant=False, ablate=False)
    arch = architecture.load_architecture(handles["model"].local_dir)
    bos_id = handles["model"].facts.bos_token_id
    where = _pair_where(circuit).replace("layer", "a.layer", 1)
    prompts = store.query(
        "SELECT a.layer, a.neuron, a.doc_id, a.split, e.prompt_token_ids, e.next_token_id FROM head_attributions a "
        f"JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id) WHERE a.active AND {where}"
    )
    attributed = attribution.attribute_exemplars(arch, prompts, bos_id, AttributionSettings()).heads
    pair = (attributed["head_layer"] == circuit.head_layer) & (attributed["head"] == circuit.head)
    rows = attributed[pair].merge(prompts, on=["layer", "neuron", "doc_id", "split"])
    rows = rows.assign(cohort="next_token", active=True)
    assert len(prompts) > 10 and len(rows) == len(prompts)
    terms = head_reads.head_lookups(arch, rows, LookupSettings(), bos_id).rows
    assert terms["identity_rel_error"].max() <= rounding_bound(int(terms["position"].max()) + 2)
    top = terms[terms["position"] > 0].sort_values("contribution", ascending=False).groupby("doc_id").head(1)
    chosen = top.merge(rows[["doc_id", "prompt_token_ids", "next_token_id"]], on="doc_id").rename(columns={"position": "lookup_position"})
    substitutes = counterfactual.Substitutes.uniform(int(arch.model.config.vocab_size), {bos_id})
    variants = counterfactual.plan_variants(chosen, substitutes, 4, 0)
    tests = counterfactual.pair_tests(counterfactual.run_interventions(arch, variants, InterventionSettings(), bos_id), 0.05)
    assert len(tests) == 1 and tests["n_prompts"][0] > 10 and not tests["confirmed"][0], tests.to_dict("records")
