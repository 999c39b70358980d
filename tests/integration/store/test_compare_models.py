"""Neuron roles and several models side by side (docs/data.md): the catalog's roles, the comparison views and named
queries, and the summary's side-by-side block, on a real store that holds the planted circuit and then also its
control (the same weights and next-token neuron, without the planted head)."""

import contextlib
import io

import pytest
from chains import add_control_model, data_folder, explained_store

from lookups.pipeline import steps
from lookups.pipeline.config import CatalogSettings, ModelSettings
from lookups.pipeline.inputs import planted
from lookups.pipeline.report.summary import print_summary
from lookups.pipeline.store import input_suites, quality
from lookups.pipeline.store.queries import PARAMETER, run_query
from lookups.pipeline.store.sql_files import named_queries
from lookups.pipeline.store.store import Store


def summary_text(store, **keys) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_summary(store, **keys)
    return out.getvalue()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """(planted circuit, its model id, control model id, store, the summary printed while the store held one model)."""
    folder = tmp_path_factory.mktemp("two-models")
    circuit, store = explained_store(folder)
    with data_folder(folder):
        planted_id = store.query("SELECT model_id FROM models")["model_id"][0]
        one_model = summary_text(store)
        _, control_id = add_control_model(folder)
    return circuit, planted_id, control_id, store, one_model


def test_one_model_has_no_side_by_side_block(two_models):
    *_, one_model = two_models
    assert "strongest next-token neurons" in one_model and "side by side" not in one_model
    # Why the planted head looks there: its knockout confirmed beside the substitution test, the look-up lexical.
    assert "why          next-token pairs: knockout 1/1 confirmed (100%; untruncated 100%; substitution 100%)" in one_model, one_model
    assert "100% of" in one_model and "looked-up edges lexical, query side mostly embed, key side mostly embed" in one_model


def test_the_planted_neuron_is_a_prediction_neuron_and_the_catalog_passes_its_checks(two_models):
    circuit, planted_id, control_id, store, _ = two_models
    for model_id in (planted_id, control_id):
        rows = store.rows("neurons", model_id=model_id)
        neuron = rows[(rows.layer == circuit.layer) & (rows.neuron == circuit.neuron)].iloc[0]
        assert neuron.role == "prediction" and neuron.vocab_kurtosis > 7 and neuron.vocab_skew > 0
        assert neuron.bottom_score < 0 < neuron.score and neuron.bottom_token != neuron.token
        assert (rows.role == "other").sum() == len(rows) - 1  # the random neurons' rows are near Gaussian
        outcome = quality.validate(input_suites.neuron_check_frame(rows), "neurons", input_suites.neuron_catalog_suite(1))
        assert outcome.success, outcome.summary()
        assert store.version("neuron_catalog", model_id).stats["selected_prediction"] == 1
    roles = run_query("neuron_roles", {"model_id": planted_id}, store)
    assert roles.set_index("layer").loc[circuit.layer, ["selected", "selected_prediction", "selected_suppression"]].tolist() == [1, 1, 0]


def test_compare_models_puts_the_two_models_side_by_side(two_models):
    circuit, planted_id, control_id, store, _ = two_models
    everything = run_query("compare_models", {}, store)
    # The planted model's pair is explained by both no-LLM references; the control model has no pair to explain.
    assert sorted(everything[everything.model_id == planted_id]["explainer"]) == ["contrastive", "lookup"]
    runs = everything[everything["explainer"].isin(["contrastive"]) | everything["explainer"].isna()].set_index("model_id")
    assert set(runs.index) == {planted_id, control_id}
    assert runs["prompt_set_id"].nunique() == 1  # the same corpus: one prompt set
    for model_id in (planted_id, control_id):
        assert runs.loc[model_id, ["selected", "predicting", "suppressing", "shared_tokens"]].tolist() == [1, 1, 0, 1]
        assert list(runs.loc[model_id, "shared_token_examples"]) == [circuit.target_token.strip()]
    planted_run, control_run = runs.loc[planted_id], runs.loc[control_id]
    assert (planted_run.consistent_pairs, planted_run.consistent_heads, control_run.consistent_pairs) == (1, 1, 0)
    assert planted_run.mean_head_depth == round(circuit.head_layer / 3, 2)
    assert planted_run.mean_e == 1.0 and planted_run.mean_auc == 1.0 and planted_run.embedding_auc > 0.55
    assert planted_run.act_drop_ks == 1.0 and control_run.act_drop_ks != control_run.act_drop_ks  # NaN: none
    assert (planted_run.lookup_pairs_tested, planted_run.lookup_confirmed, control_run.lookup_pairs_tested) == (1, 1.0, 0)


def test_shared_tokens_and_relative_depth_views(two_models):
    circuit, planted_id, control_id, store, _ = two_models
    shared = run_query("FROM shared_next_tokens", None, store)
    assert shared[["token", "model_a", "model_b"]].values.tolist() == [[circuit.target_token.strip(), *sorted([planted_id, control_id])]]
    name = f"L{circuit.layer}N{circuit.neuron}"
    assert list(shared["neurons_a"][0]) == list(shared["neurons_b"][0]) == [name]
    depth = run_query("heads_by_relative_depth", {}, store)
    assert depth[["model_id", "depth_from", "consistent_pairs", "heads"]].values.tolist() == [[planted_id, 0.3, 1, 1]]


def test_every_named_query_runs_on_two_models(two_models):
    circuit, planted_id, _, store, _ = two_models
    extra = {
        "model_id": planted_id, "token": circuit.target_token, "layer": circuit.layer, "neuron": circuit.neuron,
        "head_layer": circuit.head_layer, "head": circuit.head, "context_token": planted.TRIGGER,
    }
    for name, sql in named_queries().items():
        wanted = set(PARAMETER.findall(sql))
        assert len(run_query(name, {k: v for k, v in extra.items() if k in wanted}, store)) > 0, name


def test_the_summary_prints_the_models_side_by_side(two_models):
    circuit, planted_id, control_id, store, _ = two_models
    text = summary_text(store, model_id=planted_id)
    block = text[text.index("models side by side"):]
    header = block.splitlines()[1]
    assert planted_id in header and control_id in header

    def row(label):
        return next(line for line in block.splitlines() if line.strip().startswith(label))

    assert "0 / 0" in row("consistent pairs / heads") and "1 / 1" in row("consistent pairs / heads")  # control, planted
    assert "none" in row("pairs by head depth") and "0.3: 1" in row("pairs by head depth")
    assert "1.000 (n=1)" in row("E contrastive") and "1.000, " in row("ablation act_drop: KS, p")
    assert f"shared next tokens '{circuit.target_token.strip()}'" in block


def test_role_thresholds_are_settings(tmp_path, planted_circuit):
    store = Store()
    model = steps.run_model(ModelSettings(name=planted_circuit.model_dir), store).handle
    strict = steps.run_catalog(model, CatalogSettings(**planted.CATALOG_CONFIG, role_kurtosis_min=1e5), store)
    assert strict.handle.stats["prediction"] == 0 and set(store.rows("neurons", model_id=model.model_id)["role"]) == {"other"}
    default = steps.run_catalog(model, CatalogSettings(**planted.CATALOG_CONFIG), store)
    assert not default.skipped and default.handle.stats["selected_prediction"] == 1  # a changed threshold recomputes
