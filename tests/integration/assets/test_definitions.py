"""The Dagster layer on the planted circuit: the whole graph materializes in-process with every check passing, the
planted pair arrives in DuckDB, and a look-up check that fails says so in one line (without running the graph:
tests/unit/assets/test_definitions.py)."""

from pathlib import Path

import dagster as dg
from dagster_runs import ALL_CHECK_NAMES, check_evaluations
from numerics import pre_activation_bound

from lookups.assets.runner import run_partition
from lookups.pipeline.inputs import planted
from lookups.pipeline.store.store import Store


def test_materialize_the_planted_circuit_with_every_check(tmp_path):
    """The whole graph through Dagster on the planted model (fast: a 3-layer model): every check runs and
    passes, and the planted pair arrives in DuckDB as a consistent pair with its ablation test."""
    circuit = planted.build_planted_circuit(tmp_path / "planted")
    run_config = circuit.run_config()
    run_config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}  # the LLM backends have their own tests
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_partition(instance, run_config)
    assert result.success
    checks = check_evaluations(result)
    assert {c.check_name for c in checks} == ALL_CHECK_NAMES
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]
    identity = next(c for c in checks if c.check_name == "attribution_identity")
    # Within the rounding bound of the planted model's pre-activations (tests/numerics.py).
    assert identity.metadata["identity_max_rel_error"].value <= pre_activation_bound(planted.N_LAYERS, planted.D_MODEL)
    pairs = Store().query("SELECT layer, neuron, head_layer, head, rank FROM consistent_pairs")
    assert [circuit.layer, circuit.neuron, circuit.head_layer, circuit.head, 1] in pairs.values.tolist()
    scores_md = result.asset_materializations_for_node("head_neuron_scores")[0].metadata
    assert scores_md["consistent_pairs"].value >= 1
    ablation_md = result.asset_materializations_for_node("head_ablations")[0].metadata
    assert ablation_md["act_drop_ks"].value > 0.9
    atlas_md = result.asset_materializations_for_node("atlas_report")[0].metadata
    assert Path(atlas_md["html_path"].value).exists(), atlas_md["html_path"]
    assert atlas_md["figure: ablation"].value.startswith("![ablation](data:image/png;base64,")
    # The contrastive reference explains the planted head by its trigger word and scores perfectly on held-out prompts.
    explained = Store().query("SELECT explanation FROM explanations WHERE layer = ? AND neuron = ? AND head_layer = ? AND head = ?", list(circuit.key))
    assert f"'{planted.TRIGGER}'" in explained["explanation"][0]
    scores_md = result.asset_materializations_for_node("explanation_scores")[0].metadata
    assert scores_md["detection e_score[contrastive]"].value == 1.0 and scores_md["detection auc[contrastive]"].value == 1.0
    assert scores_md["embedding auc[lookup]"].value >= 0.9  # the real sentence encoder, on an explanation naming the word the head reads
    assert scores_md["figure: score histograms"].value.startswith("![score histograms](data:image/png;base64,")

    # A look-up whose terms miss its head's output fails the check in one line that names it and says what it means.
    from lookups.pipeline.steps import checks

    store, looked_up = Store(), result.output_for_node("head_lookups")
    rows = store.rows("head_lookups", **looked_up.keys)
    doc = rows.loc[rows["layer"] == circuit.layer, "doc_id"].iloc[0]
    broken = (rows["layer"] == circuit.layer) & (rows["neuron"] == circuit.neuron) & (rows["head_layer"] == circuit.head_layer)
    broken &= (rows["head"] == circuit.head) & (rows["doc_id"] == doc)
    rows.loc[broken, "identity_rel_error"] = 0.25
    store.replace("head_lookups", looked_up.keys, rows)
    (line,) = checks.LOOKUPS_IDENTITY.evaluate(looked_up, store, "r").result.lines()
    pair = f"neuron {circuit.layer}:{circuit.neuron}, head {circuit.head_layer}.{circuit.head} on document {doc}"
    assert line.startswith("1 of ") and f"worst: {pair}, 0.25 (" in line and "head_lookups.identity_tolerance (0.001)" in line, line
