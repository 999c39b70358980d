"""Incremental recomputation through Dagster's declarative automation, on the planted circuit: which
(asset, partition) the automation requests after each change, and what the steps then compute, counted in
torch forward passes and LLM calls per step.

Scenarios (one instance, in order, tests/dagster_runs.py): the first materialization; nothing changed; a document
added to the corpus; a new model; a changed code version; here with the contrastive reference (with the local
SmolLM2 explainer: tests/acceptance/test_automation.py). Plus the blocking data-quality gate: a corrupted table
stops the assets downstream of it; and the sources sensor.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
from dagster_runs import StepCounter, check_evaluations, recomputes_exactly_what_changed, requested

from lookups.assets import automation
from lookups.pipeline.inputs import planted
from lookups.pipeline.science import catalog as catalog_mod
from lookups.pipeline.science import exemplars as exemplars_mod
from lookups.pipeline.store.manifest import ALL_PENDING
from lookups.pipeline.store.store import Store


@pytest.mark.parametrize("explainer", ["contrastive"])
def test_automation_recomputes_exactly_what_changed(tmp_path, monkeypatch, settings_defs, explainer):
    """With the contrastive reference (no LLM): what the automation requests after each change, and what the steps
    then compute (with the local SmolLM2 explainer, the LLM calls counted too: tests/acceptance/test_automation.py)."""
    recomputes_exactly_what_changed(tmp_path, monkeypatch, settings_defs, explainer)


@pytest.mark.parametrize("corruption", ["infinite_score", "orphan_exemplar"])
def test_a_corrupted_table_stops_what_depends_on_it(tmp_path, monkeypatch, corruption):
    """A blocking check that fails stops the run before the assets downstream: no forward pass is spent on
    them, and the automation does not request them either."""
    from lookups.assets.definitions import defs
    from lookups.assets.runner import run_partition

    circuit = planted.build_planted_circuit(tmp_path / "planted")
    if corruption == "infinite_score":
        real = catalog_mod.build_catalog

        def corrupted(*args, **kwargs):
            frame = real(*args, **kwargs)
            frame.loc[frame.index[frame["selected"]][0], "score"] = float("inf")  # NaN would not even pass the schema (NOT NULL)
            return frame

        monkeypatch.setattr(catalog_mod, "build_catalog", corrupted)
        failing, first_blocked, reason = "neurons_valid", "neuron_exemplars", "score"
    else:
        real = exemplars_mod.find_exemplars

        def corrupted(*args, **kwargs):
            frame, stats = real(*args, **kwargs)
            orphan = frame.iloc[[0]].copy()
            orphan["neuron"] = 9999  # a neuron the catalog does not have
            return pd.concat([frame, orphan], ignore_index=True), stats

        monkeypatch.setattr(exemplars_mod, "find_exemplars", corrupted)
        failing, first_blocked, reason = "exemplars_valid", "head_attributions", "neuron_found"  # referential integrity
    counter = StepCounter(monkeypatch)
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            run_config = circuit.run_config()
            run_config["ops"]["explanations"] = {"config": {"backend": "contrastive"}}
            result = run_partition(instance, run_config)
            assert not result.success
            checks = {c.check_name: c for c in check_evaluations(result)}
            assert checks[failing].passed is False and reason in str(checks[failing].metadata["failures"].value)
            materialized = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
            assert first_blocked not in materialized and "atlas_report" not in materialized
            ran = set(counter.take()["step"])
            blocked_step = {"neuron_exemplars": "run_exemplars", "head_attributions": "run_attributions"}[first_blocked]
            assert blocked_step not in ran
            # The automation does not request the blocked assets while the check stays failed.
            cursor, _ = requested(defs, instance, None)
            cursor, wanted = requested(defs, instance, cursor)
            assert not {a for a, _ in wanted} & {first_blocked, "atlas_report"}
            table = "neurons" if corruption == "infinite_score" else "neuron_exemplars"
            assert Store(partition=ALL_PENDING).query(f"SELECT count(*) AS n FROM {table}")["n"][0] > 0  # the bad rows are kept to inspect
            assert Store().query(f"SELECT count(*) AS n FROM {table}", require_results=False)["n"][0] == 0  # and not published
    finally:
        counter.close()


def test_the_sources_sensor_adds_folders_and_observes_new_and_changed_sources(tmp_path, monkeypatch):
    from lookups.assets.definitions import defs

    root = tmp_path / "corpus_folders"
    monkeypatch.setenv("LOOKUPS_CORPUS_FOLDERS", str(root))
    (root / "letters").mkdir(parents=True)
    (root / "letters" / "a.txt").write_text("Dear friend, the harvest came early this year.")

    def tick(instance, cursor):
        result = automation.sources_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
        for request in result.dynamic_partitions_requests:  # what the daemon does with them
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result.cursor, sorted(r.job_name for r in result.run_requests)

    with dg.DagsterInstance.ephemeral() as instance:
        cursor, jobs = tick(instance, None)
        assert instance.get_dynamic_partitions("corpus") == ["letters"] and jobs == ["observe_corpora"]
        cursor, jobs = tick(instance, cursor)
        assert jobs == []  # nothing new
        (root / "letters" / "b.txt").write_text("A second letter.")
        cursor, jobs = tick(instance, cursor)
        assert jobs == ["observe_corpora"] and instance.get_dynamic_partitions("corpus") == ["letters"]
        instance.add_dynamic_partitions("model", ["some-model"])  # as the UI's "Add partition" does
        cursor, jobs = tick(instance, cursor)
        assert jobs == ["observe_models"]
        cursor, jobs = tick(instance, cursor)
        assert jobs == []
        # The folder's name is the key; the observed version is its files' content hash.
        from lookups.pipeline.inputs import sources

        assert sources.corpus_source("letters") == str(root / "letters")
        before = sources.corpus_fingerprint("letters")
        (root / "letters" / "b.txt").write_text("A second letter, edited.")
        assert sources.corpus_fingerprint("letters") != before
