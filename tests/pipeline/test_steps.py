"""The steps' versions: what Dagster sees as each asset's code version."""

from lookups.pipeline import steps
from lookups.pipeline.config import ExplanationSettings

TEMPLATE = "--- system ---\nYou explain attention heads.\n--- user ---\nToken $token.\nActive:\n$active\nInactive:\n$inactive\n"


def test_editing_a_prompt_template_changes_the_llm_steps_code_versions(tmp_path):
    own = tmp_path / "explain.mine.txt"
    own.write_text(TEMPLATE)
    settings = ExplanationSettings(explain_template=str(own))
    before = steps.asset_code_version("explanations", settings)
    assert before.startswith(steps.CODE_VERSIONS["explanations"] + "+explain.mine@")
    own.write_text(TEMPLATE.replace("Token", "The next token is"))
    assert steps.asset_code_version("explanations", settings) != before
    assert steps.asset_code_version("explanation_scores", settings) == steps.asset_code_version("explanation_scores")  # its own template
    assert steps.asset_code_version("head_ablations") == steps.CODE_VERSIONS["head_ablations"]
