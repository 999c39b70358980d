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
