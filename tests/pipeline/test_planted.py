"""The ground-truth test: a tiny model with a planted look-up head and next-token neuron. The whole chain
(catalog, exemplars, attribution, scores, ablation) must find the planted head first for the planted neuron
and flag the pair consistent, and must not flag it in the control model built without the plant."""


from lookups.pipeline import planted, steps
from lookups.pipeline.config import (
    AblationSettings,
    AttributionSettings,
    CatalogSettings,
    CorpusSettings,
    ExemplarSettings,
    HeadScoreSettings,
    ModelSettings,
    PromptSetSettings,
)
from lookups.pipeline.store import Store


def run_chain(folder, plant: bool):
    circuit = planted.build_planted_circuit(folder, planted=plant)
    store = Store()
    model = steps.run_model(ModelSettings(name=circuit.model_dir), store).handle
    catalog = steps.run_catalog(model, CatalogSettings(**planted.CATALOG_CONFIG), store).handle
    corpus = steps.run_corpus(CorpusSettings(source=circuit.corpus_path)).handle
    prompt_set = steps.run_prompt_set(corpus, PromptSetSettings(max_documents=None), store).handle
    exemplar_settings = ExemplarSettings(**planted.EXEMPLAR_CONFIG)
    exemplars = steps.run_exemplars(model, catalog, prompt_set, exemplar_settings, store).handle
    attributions = steps.run_attributions(model, exemplars, AttributionSettings(), store).handle
    head_scores = steps.run_head_scores(attributions, HeadScoreSettings(), store).handle
    ablations = steps.run_ablations(model, head_scores, AblationSettings(), store).handle
    return circuit, store, model, attributions, head_scores, ablations


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
    assert attributions.stats["identity_max_rel_error"] < 1e-5

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
