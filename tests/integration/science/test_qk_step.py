"""The QK attribution step on the planted circuit's store: the planted pair's edges say why its head looks there (the key
side on the trigger token's embedding, the query side on the last token's embedding: a lexical look-up), the views and
the named query answer a researcher's first questions, and the qk_identity check passes."""

import pytest
from chains import data_folder, explained_store

from lookups.pipeline.steps import checks
from lookups.pipeline.store.queries import run_query


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qk")
    circuit, store = explained_store(folder)
    return circuit, store, folder


def test_the_planted_pair_looks_up_its_trigger_by_its_embedding(planted_store):
    circuit, store, _ = planted_store
    why = store.query("SELECT * FROM pair_qk WHERE layer = ? AND neuron = ? AND head_layer = ? AND head = ?", list(circuit.key))
    assert len(why) == 1
    row = why.iloc[0]
    assert row["key_components"][0] == "embed" and row["query_components"][0] == "embed", row.to_dict()
    assert bool(row["lexical"]) and row["lexical_edges_share"] == 1.0 and row["median_lexical_share"] > 0.5
    edges = store.query(
        "SELECT DISTINCT doc_id, position, identity_rel_error FROM qk_attributions WHERE layer = ? AND neuron = ? AND head_layer = ? AND head = ?",
        list(circuit.key),
    )
    assert len(edges) >= 5 and edges["identity_rel_error"].max() <= 1e-5
    summary = store.query("SELECT * FROM qk_summary WHERE cohort = 'next_token'").iloc[0]
    assert summary["most_frequent_key_component"] == "embed" and summary["identity_max_rel_error"] <= 1e-5


def test_the_named_query_says_which_tokens_the_head_looks_up_and_why(planted_store):
    circuit, store, folder = planted_store
    keys = store.query("SELECT DISTINCT model_id, prompt_set_id FROM qk_attributions").iloc[0].to_dict()
    with data_folder(folder):
        frame = run_query("head_qk", {**keys, "head_layer": circuit.head_layer, "head": circuit.head, "limit": 5}, store)
    top = frame.iloc[0]
    assert top["query_component"] == "embed" and top["usual_key_component"] == "embed"
    assert top["looked_up_token"].strip() == "wizard" and top["neurons"] == 1


def test_the_qk_check_passes_on_the_planted_store(planted_store):
    _, store, _ = planted_store
    keys = store.query("SELECT DISTINCT model_id, prompt_set_id FROM qk_attributions").iloc[0].to_dict()

    class Handle:  # what the check reads of the step's handle
        model_id, prompt_set_id, identity_tolerance = keys["model_id"], keys["prompt_set_id"], 1e-4

    outcome = checks.QK_IDENTITY.evaluate(Handle(), store, "run")
    assert outcome.result.success, outcome.result
    assert outcome.metadata["identity_max_rel_error"] <= 1e-5
