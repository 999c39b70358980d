"""Step 6 of docs/method.md: explain each chosen pair, by the primary backend (openai or local) and by the
contrastive reference, from the pair's explain prompts, active and inactive, each with the neuron's token
appended. Which pairs: ``pairs.py``; scoring the explanations: ``score.py``. Every LLM call goes through the
``CallLedger`` (``ledger.py``): answered before (same cache key) means no call; a run-level budget on calls and
tokens stops issuing calls, and what was done is kept."""

from __future__ import annotations

import json

import pandas as pd

from lookups.pipeline.config import ExplanationSettings
from lookups.pipeline.llm.backends import LlmBackend, LlmRequest
from lookups.pipeline.llm.contrastive import contrastive_explanation
from lookups.pipeline.llm.ledger import CallLedger, ask, cache_key
from lookups.pipeline.llm.pairs import PAIR_KEYS, Pair, explanation_id
from lookups.pipeline.llm.templates import Template, quoted, snippet

CONTRASTIVE = "contrastive"
EXPLANATION_COLUMNS = [
    "explanation_id", "explainer", "backend", "llm_model", "template_version", "cohort", *PAIR_KEYS, "token",
    "status", "explanation", "features", "error", "n_active_shown", "n_inactive_shown", "prompt_tokens",
    "completion_tokens", "cached",
]


def _numbered(texts: list[str], token: str, settings: ExplanationSettings) -> str:
    shown = texts[: settings.max_examples]
    return "\n".join(f"{i + 1}. {snippet(t, token, settings.max_prompt_chars)}" for i, t in enumerate(shown)) or "(none)"


def explain_pairs(
    pairs: list[Pair],
    model_id: str,
    prompt_set_id: str,
    settings: ExplanationSettings,
    template: Template,
    backend: LlmBackend | None,
    ledger: CallLedger | None,
    progress=None,
) -> pd.DataFrame:
    """The ``explanations`` rows: the contrastive reference for every pair, and the LLM backend's."""
    rows = []
    for pair in pairs:
        contrast = contrastive_explanation(pair.active[: settings.max_examples], pair.inactive[: settings.max_examples], settings.contrastive_features)
        rows.append(
            {
                "explanation_id": explanation_id(model_id, prompt_set_id, pair, CONTRASTIVE, "log-odds"),
                "explainer": CONTRASTIVE, "backend": CONTRASTIVE, "llm_model": None, "template_version": "log-odds",
                "status": "ok", "explanation": contrast.text, "features": json.dumps(contrast.features), "error": None,
                "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
                **_pair_columns(pair, settings),
            }
        )
    if backend is None:
        return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)
    requests = {}
    for pair in pairs:
        messages = template.messages(
            token=quoted(pair.token), active=_numbered(pair.active, pair.token, settings), inactive=_numbered(pair.inactive, pair.token, settings)
        )
        key = cache_key("explain", model_id, pair.key, messages, backend.kind, backend.model, template.version)
        requests[pair.key] = LlmRequest(key, "explain", messages, settings.max_new_tokens)
    answers = ask(backend, template.version, list(requests.values()), ledger, progress, "explanations")
    for pair in pairs:
        answer = answers[requests[pair.key].key]
        rows.append(
            {
                "explanation_id": explanation_id(model_id, prompt_set_id, pair, backend.explainer, template.version),
                "explainer": backend.explainer, "backend": backend.kind, "llm_model": backend.model, "template_version": template.version,
                "status": answer.status, "explanation": answer.text, "features": None, "error": answer.error,
                "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens, "cached": answer.cached,
                **_pair_columns(pair, settings),
            }
        )
    return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)


def _pair_columns(pair: Pair, settings: ExplanationSettings) -> dict:
    return {
        "cohort": pair.cohort, "layer": pair.layer, "neuron": pair.neuron, "head_layer": pair.head_layer, "head": pair.head,
        "token": pair.token, "n_active_shown": min(len(pair.active), settings.max_examples),
        "n_inactive_shown": min(len(pair.inactive), settings.max_examples),
    }
