"""The planted circuit run through the pipeline's steps (no Dagster), for the tests that need its tables."""

import os
from contextlib import contextmanager

from lookups.pipeline import steps
from lookups.pipeline.config import (
    AblationSettings,
    AttributionSettings,
    CatalogSettings,
    CorpusSettings,
    ExemplarSettings,
    ExplanationSettings,
    HeadScoreSettings,
    InterventionSettings,
    KnockoutSettings,
    LookupSettings,
    ModelSettings,
    PromptSetSettings,
    QKSettings,
    ScoringSettings,
)
from lookups.pipeline.inputs import planted
from lookups.pipeline.store.store import Store


def run_planted_chain(folder, plant: bool = True, head_scores: HeadScoreSettings | None = None, ablate: bool = True):
    """Model to ablation on the planted (or control) circuit; returns (circuit, store, handles by step name)."""
    circuit = planted.build_planted_circuit(folder, planted=plant)
    store = Store()
    handles = {}
    handles["model"] = model = steps.run_model(ModelSettings(name=circuit.model_dir), store).handle
    catalog = steps.run_catalog(model, CatalogSettings(**planted.CATALOG_CONFIG), store).handle
    corpus = steps.run_corpus(CorpusSettings(source=circuit.corpus_path), store).handle
    prompt_set = steps.run_prompt_set(corpus, PromptSetSettings(max_documents=None), store).handle
    exemplars = steps.run_exemplars(model, catalog, prompt_set, ExemplarSettings(**planted.EXEMPLAR_CONFIG), store).handle
    handles["head_attributions"] = steps.run_attributions(model, exemplars, AttributionSettings(), store).handle
    handles["head_neuron_scores"] = steps.run_head_scores(handles["head_attributions"], head_scores or HeadScoreSettings(), store).handle
    if ablate:
        handles["head_ablations"] = steps.run_ablations(model, handles["head_neuron_scores"], AblationSettings(), store).handle
    return circuit, store, handles


def run_chain(folder, plant: bool):
    """The planted (or control) chain as (circuit, store, model, attributions, head scores, ablations)."""
    circuit, store, handles = run_planted_chain(folder, plant)
    return circuit, store, handles["model"], handles["head_attributions"], handles["head_neuron_scores"], handles["head_ablations"]


@contextmanager
def data_dir(path):
    """``LOOKUPS_DATA_DIR`` at ``path`` for the block (module-scoped fixtures, which the per-test data folder
    does not reach)."""
    old = os.environ.get("LOOKUPS_DATA_DIR")
    os.environ["LOOKUPS_DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("LOOKUPS_DATA_DIR")
        else:
            os.environ["LOOKUPS_DATA_DIR"] = old


def data_folder(folder):
    """``LOOKUPS_DATA_DIR`` at ``folder/data`` for the block."""
    return data_dir(folder / "data")


def run_every_named_query(circuit, store) -> dict:
    """Each named query's frame on a planted store, with the planted pair's values for the parameters it takes."""
    from lookups.pipeline.store import queries
    from lookups.pipeline.store.queries import run_query
    from lookups.pipeline.store.sql_files import named_queries

    values = {"token": circuit.target_token, "layer": circuit.layer, "neuron": circuit.neuron, "head_layer": circuit.head_layer,
              "head": circuit.head, "context_token": planted.TRIGGER}
    frames = {}
    for name, sql in named_queries().items():
        wanted = set(queries.PARAMETER.findall(sql))
        frames[name] = run_query(name, {k: v for k, v in values.items() if k in wanted}, store)
    return frames


def explain(model, head_scores, store):
    """The chain's consistent pairs' look-ups, their contrastive and lookup explanations and scores, and the
    counterfactual test, the attention knockout and the QK attribution of the explained pairs."""
    looked_up = steps.run_lookups(model, head_scores, LookupSettings(), store).handle
    explained = steps.run_explanations(model, head_scores, ExplanationSettings(backend="contrastive"), store, head_lookups=looked_up)
    steps.run_explanation_scores(model, explained.handle, ScoringSettings(), store)
    steps.run_interventions(model, looked_up, InterventionSettings(), store)
    steps.run_knockouts(model, looked_up, KnockoutSettings(untruncated=True), store)
    steps.run_qk(model, looked_up, QKSettings(), store)


def explained_store(folder):
    """A real store in ``folder/data``: the planted chain, its contrastive explanations and their scores
    (for module-scoped fixtures, which the per-test data folder does not reach); (circuit, store)."""
    with data_folder(folder):
        circuit, store, model, _, head_scores, _ = run_chain(folder / "planted", plant=True)
        explain(model, head_scores, store)
    return circuit, store


def add_control_model(folder):
    """A second model in the store of ``explained_store(folder)``: the control circuit (the same weights without the
    planted head, so the same next-token neuron) run through the same steps; returns its circuit and model id."""
    with data_folder(folder):
        control, store, model, _, head_scores, _ = run_chain(folder / "control", plant=False)
        explain(model, head_scores, store)
    return control, model.model_id


def run_bench(folder, script: str, *args: str) -> str:
    """Run ``bench/<script>`` on the planted chain's explained store in ``folder/data`` (the benchmarks' end-to-end
    tests: they must not rot); its stdout. Figures are printed, never asserted."""
    import subprocess
    import sys
    from pathlib import Path

    from lookups.pipeline.config import database_path

    explained_store(folder)
    with data_folder(folder):
        database = database_path()
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "bench" / script), "--database", str(database), *args],
        capture_output=True, text=True, timeout=300, cwd=folder, env={**os.environ, "LOOKUPS_DATA_DIR": str(folder / "data")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
