"""The steps' versions: what Dagster sees as each asset's code version, and which settings are left out of the data
versions (no model; a step skipped or recomputed on the planted circuit: tests/integration/steps/test_steps.py)."""

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
