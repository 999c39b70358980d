"""Ground truth for the LLM scorers with the opt-in Qwen2.5-Coder-1.5B-Instruct (`make install-qwen-1.5b-explainer`):
on the planted circuit's prompts the head is active exactly where the trigger word appears, so a correct
explanation must reach detection AUC >= 0.95 and a clearly positive simulation correlation, while one about
another word stays near chance. Skipped where the 22 parts are not installed (they are not in `make install`);
the first run dequantizes the model into the shared cache (a few minutes on 2 cores, about 6 GB).

``planted_scores`` is also what docs/measurements.md ran for the embedded SmolLM2-135M (which does not pass:
detection AUC 0.594 for the right rule, 0.500 for the wrong one; simulation r -0.19 and -0.22)."""

from __future__ import annotations

import importlib.metadata

import pandas as pd
import pytest

from lookups.pipeline.config import QWEN_CODER_1_5B_MODEL, ExplanationSettings, ScoringSettings
from lookups.pipeline.inputs import checkpoints, planted

SPEC = checkpoints.QWEN_CODER_1_5B_GGUF
RIGHT = f"The head is active when the word {planted.TRIGGER} appears earlier in the snippet."
WRONG = "The head is active when the word river appears earlier in the snippet."


def _installed() -> bool:
    try:
        return all(importlib.metadata.version(d) == SPEC.version for d in SPEC.distributions)
    except importlib.metadata.PackageNotFoundError:
        return False


def planted_scores(local_model: str, n_each: int = 8) -> pd.DataFrame:
    """Detection and simulation rows of RIGHT and WRONG on ``2 * n_each`` planted prompts (half with the trigger),
    judged by ``local_model`` through the pipeline's Judge, nothing cached or stored."""
    from lookups.pipeline.llm.backends import LocalBackend
    from lookups.pipeline.llm.ledger import CallLedger
    from lookups.pipeline.llm.pairs import Pair
    from lookups.pipeline.llm.score import Judge, score_explanations
    from lookups.pipeline.llm.templates import load_template

    class Forgetful:  # the CallLog a ledger needs: nothing cached, nothing kept
        def read(self, name, **params):
            return pd.DataFrame({"calls": [0], "tokens": [0]}) if name == "llm_run_usage" else pd.DataFrame(
                columns=["cache_key", "status", "response", "answer", "p_yes", "rating", "prompt_tokens", "completion_tokens"])

        def append(self, table, frame):
            pass

    settings = ExplanationSettings(backend="local", local_model=local_model, batch_size=4)
    backend = LocalBackend(settings)
    prompts = planted.planted_corpus(n_each, seed=7)
    truth = [planted.TRIGGER in p for p in prompts]
    pair = Pair("next_token", 2, 0, 1, 0, " " + planted.TARGET_WORD, heldout=prompts, heldout_truth=truth,
                heldout_scores=[float(t) for t in truth])
    rows = pd.DataFrame([
        {"explanation_id": name, "explainer": backend.explainer, "status": "ok", "explanation": text, "cohort": "next_token",
         "layer": 2, "neuron": 0, "head_layer": 1, "head": 0, "features": None}
        for name, text in (("right", RIGHT), ("wrong", WRONG))
    ])
    judge = Judge(backend, load_template(settings.classify_template), load_template(settings.simulate_template),
                  CallLedger(Forgetful(), "ground-truth", None, None), settings, "planted@1")
    scoring = ScoringSettings(scorers=["detection", "simulation"], calibrate=False, shuffled_baseline=False)
    return score_explanations(rows, {pair.key: pair}, scoring, judge).set_index(["explanation_id", "scorer"])


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason=f"the opt-in Qwen 1.5B explainer parts are not installed: `make {SPEC.make_target}`")
def test_qwen_1_5b_detects_and_simulates_the_planted_rule_and_not_a_wrong_one():
    scores = planted_scores(QWEN_CODER_1_5B_MODEL)
    right, wrong = scores.loc["right"], scores.loc["wrong"]
    assert (scores["status"] == "scored").all(), scores[["status", "reason"]]
    assert right.at["detection", "auc"] >= 0.95, scores
    assert right.at["simulation", "correlation"] >= 0.5, scores
    # The wrong rule stays within about two standard deviations of chance for 8 + 8 prompts (AUC 0.15, r 0.26), and
    # clearly below the right one. Measured 2026-12-07: right AUC 0.953, r 0.651; wrong AUC 0.719, r 0.325.
    assert wrong.at["detection", "auc"] <= 0.8 and wrong.at["simulation", "correlation"] <= 0.5, scores
    assert right.at["detection", "auc"] - wrong.at["detection", "auc"] >= 0.15, scores
    assert right.at["simulation", "correlation"] - wrong.at["simulation", "correlation"] >= 0.2, scores
