"""The steps' versions: what Dagster sees as each asset's code version."""

from lookups.pipeline import steps
from lookups.pipeline.config import ExplanationSettings

TEMPLATE = "--- system ---\nYou explain attention heads.\n--- user ---\nToken $token.\nActive:\n$active\nInactive:\n$inactive\n"


def test_editing_a_prompt_template_changes_the_llm_steps_code_versions(tmp_path):
    own = tmp_path / "explain.mine.txt"
    own.write_text(TEMPLATE)
    settings = ExplanationSettings(explain_template=str(own))
    before = steps.code_version("explanations", settings)
    assert before.startswith(steps.STEPS["explanations"].code_version + "+explain.mine@")
    own.write_text(TEMPLATE.replace("Token", "The next token is"))
    assert steps.code_version("explanations", settings) != before
    assert steps.code_version("explanation_scores", settings) == steps.code_version("explanation_scores")  # its own template
    assert steps.code_version("head_ablations") == steps.STEPS["head_ablations"].code_version


def test_settings_that_only_change_speed_are_marked_and_left_out_of_data_versions():
    """Batch sizes, concurrency, transport, budgets, the device and a check's tolerance change how a step runs,
    not what it computes: each is a tuning field, and result_settings (the data version's part) leaves it out."""
    from lookups.pipeline import config

    tuning = {
        "ModelSettings": {"device"}, "ExemplarSettings": {"batch_tokens"}, "AttributionSettings": {"batch_tokens", "identity_tolerance"},
        "AblationSettings": {"batch_tokens"}, "AtlasSettings": {"batch_tokens"},
        "ExplanationSettings": {"concurrency", "timeout_s", "max_retries", "batch_size", "max_calls", "max_tokens"},
    }
    for name, fields in tuning.items():
        cls = getattr(config, name)
        marked = {f for f, info in cls.model_fields.items() if (info.json_schema_extra or {}).get("tuning")}
        assert marked == fields, name
        assert not fields & set(config.result_settings(cls())), name
    # Everything else stays in: a result setting changes the data version.
    assert config.result_settings(config.ExemplarSettings()) == config.ExemplarSettings().model_dump(exclude={"batch_tokens"})


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
