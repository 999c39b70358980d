"""Step 6 of docs/method.md: explain each chosen pair, by the primary backend (openai or local) and by the two
no-LLM references (contrastive, lookup), from the pair's explain prompts, active and inactive, each with the
neuron's token appended (explain.v2 also marks, in each active prompt, the token the head reads most). Which
pairs: ``pairs.py``; scoring the explanations: ``score.py``. Every LLM call goes through the ``CallLedger``
(``ledger.py``): answered before (same cache key) means no call; a run-level budget on calls and tokens stops
issuing calls, and what was done is kept."""

from __future__ import annotations

import json

import pandas as pd

from lookups.pipeline.config import ExplanationSettings
from lookups.pipeline.llm.backends import LlmBackend, LlmRequest
from lookups.pipeline.llm.contrastive import contrastive_explanation, lookup_explanation
from lookups.pipeline.llm.ledger import CallLedger, ask, cache_key
from lookups.pipeline.llm.pairs import PAIR_KEYS, Pair, explanation_id
from lookups.pipeline.llm.templates import Template, marked_snippet, quoted, snippet

CONTRASTIVE = "contrastive"
LOOKUP = "lookup"
#: The explainers that need no LLM: their features are what they classify by (``score.py``).
REFERENCES = (CONTRASTIVE, LOOKUP)
EXPLANATION_COLUMNS = [
    "explanation_id", "explainer", "backend", "llm_model", "template_version", "cohort", *PAIR_KEYS, "token",
    "status", "explanation", "features", "error", "n_active_shown", "n_inactive_shown", "prompt_tokens",
    "completion_tokens", "cached",
]


def _numbered(texts: list[str], token: str, settings: ExplanationSettings, marks: list | None = None) -> str:
    """The first ``max_examples`` prompts as numbered snippets; with ``marks`` (per prompt, the head's top
    look-up as (before, token, after) or None), each with that token marked."""
    shown = texts[: settings.max_examples]
    marks = marks or [None] * len(shown)

    def one(text: str, mark) -> str:
        return marked_snippet(mark, token, settings.max_prompt_chars) if mark else snippet(text, token, settings.max_prompt_chars)

    return "\n".join(f"{i + 1}. {one(t, m)}" for i, (t, m) in enumerate(zip(shown, marks))) or "(none)"


def _reference_row(explainer: str, version: str, model_id: str, prompt_set_id: str, pair: Pair, reference, settings: ExplanationSettings) -> dict:
    """An explanations row of a no-LLM reference (its features are what it classifies by)."""
    return {
        "explanation_id": explanation_id(model_id, prompt_set_id, pair, explainer, version),
        "explainer": explainer, "backend": explainer, "llm_model": None, "template_version": version,
        "status": "ok", "explanation": reference.text, "features": json.dumps(reference.features), "error": None,
        "prompt_tokens": 0, "completion_tokens": 0, "cached": False,
        **_pair_columns(pair, settings),
    }


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
        active, inactive = pair.active[: settings.max_examples], pair.inactive[: settings.max_examples]
        contrast = contrastive_explanation(active, inactive, settings.contrastive_features)
        rows.append(_reference_row(CONTRASTIVE, "log-odds", model_id, prompt_set_id, pair, contrast, settings))
        read = lookup_explanation(pair.active_lookups[: settings.max_examples], active, inactive, settings.contrastive_features)
        rows.append(_reference_row(LOOKUP, "top-read", model_id, prompt_set_id, pair, read, settings))
    if backend is None:
        return pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)
    requests = {}
    for pair in pairs:
        messages = template.messages(
            token=quoted(pair.token), active=_numbered(pair.active, pair.token, settings),
            active_marked=_numbered(pair.active, pair.token, settings, pair.active_marked), inactive=_numbered(pair.inactive, pair.token, settings),
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
