"""The steps' versions on the planted circuit: a setting that only changes speed does not recompute a step, a result
setting does (the versions themselves, without a model: tests/unit/steps/test_steps.py)."""

from lookups.pipeline import steps


def test_a_batch_size_change_does_not_recompute_exemplars_but_a_result_setting_does(planted_circuit):
    """The 14-minute step of the demo: changing its batch size is not a reason to run it again."""
    from lookups.pipeline.config import CatalogSettings, CorpusSettings, ExemplarSettings, ModelSettings, PromptSetSettings
    from lookups.pipeline.inputs import planted
    from lookups.pipeline.store.store import Store

    store = Store()
    model = steps.run_model(ModelSettings(name=planted_circuit.model_dir), store).handle
    catalog = steps.run_catalog(model, CatalogSettings(**planted.CATALOG_CONFIG), store).handle
    corpus = steps.run_corpus(CorpusSettings(source=planted_circuit.corpus_path), store).handle
    prompt_set = steps.run_prompt_set(corpus, PromptSetSettings(max_documents=None), store).handle
    first = steps.run_exemplars(model, catalog, prompt_set, ExemplarSettings(**planted.EXEMPLAR_CONFIG), store)
    assert not first.skipped and first.stats["exemplars"] > 0
    smaller = steps.run_exemplars(model, catalog, prompt_set, ExemplarSettings(**planted.EXEMPLAR_CONFIG, batch_tokens=256), store)
    assert smaller.skipped and smaller.handle.data_version == first.handle.data_version
    assert smaller.stats["compute_seconds"] == first.stats["compute_seconds"]  # the stored stats of the run that computed
    stricter = steps.run_exemplars(model, catalog, prompt_set, ExemplarSettings(**{**planted.EXEMPLAR_CONFIG, "act_ratio": 0.9}), store)
    assert not stricter.skipped and stricter.handle.data_version != first.handle.data_version


def test_a_worker_without_the_model_steps_folder_resolves_the_model_again(planted_circuit, tmp_path):
    """A model handle made on another machine names a folder this one lacks (docs/workers.md): the model key is
    resolved again here, and must give the same weights."""
    import dataclasses

    import pytest

    from lookups.pipeline.common.errors import LookupsError
    from lookups.pipeline.config import ModelSettings
    from lookups.pipeline.store.store import Store

    model = steps.run_model(ModelSettings(name=planted_circuit.model_dir), Store()).handle
    elsewhere = dataclasses.replace(model, local_dir=str(tmp_path / "another-machines-cache" / "planted"))
    assert elsewhere.runtime().facts == model.runtime().facts
    other = dataclasses.replace(elsewhere, model_id="planted@0000")
    with pytest.raises(LookupsError, match="resolves on this machine to .* not to planted@0000"):
        other.runtime()
