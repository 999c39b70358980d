"""The Dagster layer on the real SmolLM2 (slow): the graph materializes in-process on a tiny configuration with every
check passing; re-materializing with nothing changed runs no model (on the planted circuit:
tests/integration/assets/test_definitions.py)."""

import dagster as dg
import pytest
from dagster_runs import ALL_CHECK_NAMES, check_evaluations

from lookups.assets.definitions import ALL_ASSETS
from lookups.assets.runner import run_partition
from lookups.pipeline.science import catalog, harvest
from lookups.pipeline.store.store import Store

REPO_TEXTS = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp. Ships passing the rocky coast relied on it.",
    "The market opened at dawn, and farmers arrived with carts full of apples, cabbages and fresh bread for the villagers.",
    "A violin is a wooden string instrument. Most violins have a hollow body and four strings tuned in perfect fifths.",
    "The expedition reached the summit after three weeks of climbing, but a storm forced them to descend the same night.",
    "Engineers designed the new bridge to withstand earthquakes, using steel cables anchored deep in the bedrock.",
    "The library holds more than two million books, including rare manuscripts from the fifteenth century.",
]


@pytest.mark.slow
def test_materialize_tiny_graph_then_nothing_recomputes(tmp_path, monkeypatch):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for i, text in enumerate(REPO_TEXTS):
        (corpus_dir / f"doc{i}.txt").write_text(text)
    run_config = {
        "ops": {
            "corpus": {"config": {"source": str(corpus_dir)}},
            "prompt_set": {"config": {"max_documents": None, "heldout_fraction": 0.3}},
            "neuron_catalog": {"config": {"neurons_per_layer": 1, "last_layers": 2, "random_per_layer": 1}},
            "neuron_exemplars": {"config": {"top_k": 3, "keep": 2, "window_tokens": 32}},
        }
    }
    calls = {"forward": 0, "catalog": 0}
    real_call, real_build = harvest.NeuronReader.__call__, catalog.build_catalog

    def counting_call(self, *args, **kwargs):
        calls["forward"] += 1
        return real_call(self, *args, **kwargs)

    def counting_build(*args, **kwargs):
        calls["catalog"] += 1
        return real_build(*args, **kwargs)

    monkeypatch.setattr(harvest.NeuronReader, "__call__", counting_call)
    monkeypatch.setattr(catalog, "build_catalog", counting_build)

    with dg.DagsterInstance.ephemeral() as instance:
        first = run_partition(instance, run_config)
        assert first.success
        checks = check_evaluations(first)
        assert {c.check_name for c in checks} == ALL_CHECK_NAMES
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]
        assert calls["forward"] > 0 and calls["catalog"] == 1

        store = Store()
        counts = store.query("SELECT (SELECT count(*) FROM neurons) AS n, (SELECT count(*) FROM neuron_exemplars) AS e, (SELECT count(*) FROM documents) AS d")
        assert counts.values.tolist() == [[30 * 1536, counts.e[0], len(REPO_TEXTS)]] and counts.e[0] > 0

        calls.update(forward=0, catalog=0)
        second = run_partition(instance, run_config)
        assert second.success
        assert calls == {"forward": 0, "catalog": 0}
        for key in (
            "model", "neuron_catalog", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations",
            "head_lookups", "lookup_interventions", "lookup_knockouts", "qk_attributions", "explanations", "explanation_scores", "atlas_report",
        ):
            materialization = second.asset_materializations_for_node(key)[0]
            assert materialization.metadata["skipped (unchanged inputs)"].value is True
        # Data versions are unchanged, so Dagster sees nothing stale downstream.
        before = [first.output_for_node(a.key.path[-1]).data_version for a in ALL_ASSETS]
        after = [second.output_for_node(a.key.path[-1]).data_version for a in ALL_ASSETS]
        assert before == after
