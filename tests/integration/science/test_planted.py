"""The ground-truth test: a tiny model with a planted look-up head and next-token neuron. The whole chain
(catalog, exemplars, attribution, scores, ablation) must find the planted head first for the planted neuron
and flag the pair consistent, and must not flag it in the control model built without the plant."""


from chains import run_chain
from numerics import pre_activation_bound

from lookups.pipeline import steps
from lookups.pipeline.config import ExplanationSettings, ScoringSettings
from lookups.pipeline.inputs import planted


def pair_row(store, circuit, model_id):
    return store.query(
        "SELECT * FROM head_neuron_scores WHERE model_id = ? AND layer = ? AND neuron = ? AND head_layer = ? AND head = ?",
        [model_id, circuit.layer, circuit.neuron, circuit.head_layer, circuit.head],
    )


def test_the_chain_finds_the_planted_head(tmp_path):
    circuit, store, model, attributions, head_scores, _ = run_chain(tmp_path / "planted", plant=True)
    selected = store.query("SELECT layer, neuron, token FROM neurons WHERE model_id = ? AND selected", [model.model_id])
    assert selected.values.tolist() == [[circuit.layer, circuit.neuron, circuit.target_token]]

    pair = pair_row(store, circuit, model.model_id)
    assert len(pair) == 1
    assert pair["rank"][0] == 1, "the planted head has the highest mean attribution for the planted neuron"
    assert bool(pair["consistent"][0]), pair.to_dict("records")
    assert 0.3 < pair["active_fraction"][0] < 0.7  # active on the trigger documents, not on the cue documents

    # Ground truth per prompt: the head is active exactly on the prompts that contain the trigger word.
    active = store.query(
        "SELECT a.active, contains(e.prompt_text, ?) AS has_trigger FROM head_attributions a "
        "JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id) "
        "WHERE a.model_id = ? AND a.layer = ? AND a.neuron = ? AND a.head_layer = ? AND a.head = ?",
        [planted.TRIGGER, model.model_id, *circuit.key],
    )
    assert len(active) > 20 and (active["active"] == active["has_trigger"]).all()

    # The decomposition identity holds to float precision.
    assert attributions.stats["identity_max_rel_error"] <= pre_activation_bound(planted.N_LAYERS, planted.D_MODEL)

    # Ablating the head removes the neuron's activation where it was active, and only there.
    tests = store.query("SELECT metric, ks_statistic, p_value, mean_active, mean_inactive FROM ablation_tests WHERE model_id = ?", [model.model_id])
    act = tests.set_index("metric").loc["act_drop"]
    assert act["ks_statistic"] > 0.9 and act["p_value"] < 1e-4
    assert act["mean_active"] > 3.0 and abs(act["mean_inactive"]) < 0.2
    by_layer = store.query("SELECT head_layer, consistent_pairs FROM heads_by_layer WHERE model_id = ? ORDER BY head_layer", [model.model_id])
    assert by_layer.set_index("head_layer")["consistent_pairs"][circuit.head_layer] >= 1


def test_the_control_model_has_no_such_pair(tmp_path):
    circuit, store, model, *_ = run_chain(tmp_path / "control", plant=False)
    pair = pair_row(store, circuit, model.model_id)
    assert len(pair) == 1
    assert not bool(pair["consistent"][0])
    assert pair["active_fraction"][0] < 0.25


def test_the_contrastive_reference_explains_the_planted_head_by_its_trigger(tmp_path):
    """Steps 6-7 of docs/method.md on the planted pair: the no-LLM baseline must name the trigger word and score E = 1 on
    held-out prompts; nothing changed means nothing recomputed."""
    circuit, store, model, _, head_scores, _ = run_chain(tmp_path / "planted", plant=True)
    settings = ExplanationSettings(backend="contrastive")
    explained = steps.run_explanations(model, head_scores, settings, store)
    assert explained.stats["explainers"] == ["contrastive"] and explained.stats["llm_calls"] == 0
    row = store.query("SELECT * FROM explanations WHERE layer = ? AND neuron = ? AND head_layer = ? AND head = ?", list(circuit.key))
    assert f"'{planted.TRIGGER}'" in row["explanation"][0]
    scored = steps.run_explanation_scores(model, explained.handle, ScoringSettings(), store)
    own = store.query(
        "SELECT * FROM explanation_scores WHERE baseline = 'none' AND explainer = 'contrastive' AND layer = ? AND neuron = ? AND head_layer = ? "
        "AND head = ?", list(circuit.key)
    ).set_index("scorer")
    assert set(own.index) == {"detection", "embedding"}  # no LLM: no simulation
    detection, embedding = own.loc["detection"], own.loc["embedding"]
    assert detection["status"] == "scored" and detection["e_score"] == 1.0 and detection["auc"] == 1.0 and detection["calibrated_e"] == 1.0
    assert detection["n_positive"] > 3 and detection["n_negative"] > 3
    # Its text names the trigger and, as what the head is not active on, the cue: a cosine cannot read the negation,
    # so the embedding scorer ranks the prompts better than chance but far from perfectly (a rule naming the trigger
    # alone gets 0.97: tests/integration/llm/test_embedding_scorer.py).
    assert embedding["status"] == "scored" and embedding["auc"] > 0.55, embedding.to_dict()
    assert scored.handle.figures["score histograms"].endswith(".png")
    assert steps.run_explanations(model, head_scores, settings, store).skipped
    assert steps.run_explanation_scores(model, explained.handle, ScoringSettings(), store).skipped
