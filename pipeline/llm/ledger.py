"""The call ledger: every LLM call cached by (pair, examples, backend, model, template) in ``llm_calls``, and
the run budget on calls and tokens. It is handed the store by the step (any object with ``read`` and
``append``), so this layer never imports it."""

from __future__ import annotations

import threading
import uuid
from typing import Protocol

import pandas as pd

from lookups.pipeline.common.hashing import stable_hash
from lookups.pipeline.llm.backends import ANSWER_STATUSES, LlmBackend, LlmRequest, LlmResponse


def cache_key(*parts) -> str:
    return stable_hash(*parts, length=32)


class CallLog(Protocol):
    """Where calls are looked up and recorded: the store (``read`` of ``sql/reads/llm_*.sql``, ``append``)."""

    def read(self, name: str, **params) -> pd.DataFrame: ...

    def append(self, table: str, frame: pd.DataFrame) -> None: ...


class CallLedger:
    """LLM calls of one run: cache lookups in ``llm_calls``, budget accounting, and writing each new call
    (answers and failures) in small batches, so a stop or a crash loses at most a few calls' results.

    The budget is per run: calls already recorded under this ``run_id`` (by an earlier asset of the same
    run) count. Calls are reserved when issued, so concurrency cannot overshoot ``max_calls``; tokens are
    known only when a call returns, so ``max_tokens`` may be passed by the calls in flight.
    """

    FLUSH_EVERY = 16

    def __init__(self, store: CallLog, run_id: str, max_calls: int | None, max_tokens: int | None):
        self.store, self.run_id = store, run_id
        self.max_calls, self.max_tokens = max_calls, max_tokens
        used = store.read("llm_run_usage", run_id=run_id)
        self.calls = int(used["calls"][0])
        self.tokens = int(used["tokens"][0])
        self.new_calls = 0
        self.budget_hit = False
        self._buffer: list[dict] = []
        self._lock = threading.Lock()

    def cached(self, keys: list[str]) -> dict[str, LlmResponse]:
        if not keys:
            return {}
        rows = self.store.read("llm_cached_answers", keys=keys, statuses=list(ANSWER_STATUSES))
        return {
            r.cache_key: LlmResponse(
                r.status, r.response or "", None if pd.isna(r.answer) else bool(r.answer), None if pd.isna(r.p_yes) else float(r.p_yes),
                rating=None if pd.isna(r.rating) else float(r.rating), prompt_tokens=0, completion_tokens=0, cached=True,
            )
            for r in rows.itertuples()
        }

    def allow(self) -> bool:
        """Reserve one call, or say the budget is spent."""
        with self._lock:
            over = (self.max_calls is not None and self.calls >= self.max_calls) or (self.max_tokens is not None and self.tokens >= self.max_tokens)
            if over:
                self.budget_hit = True
                return False
            self.calls += 1
            self.new_calls += 1
            return True

    def record(self, backend: LlmBackend, template_version: str, request: LlmRequest, response: LlmResponse) -> None:
        with self._lock:
            self.tokens += response.tokens
            self._buffer.append(
                {
                    "cache_key": request.key, "run_id": self.run_id, "backend": backend.kind, "llm_model": backend.model,
                    "template_version": template_version, "purpose": request.purpose, "status": response.status,
                    "response": response.text, "answer": response.answer, "p_yes": response.p_yes, "rating": response.rating,
                    "error": response.error,
                    "prompt_tokens": response.prompt_tokens, "completion_tokens": response.completion_tokens,
                    "seconds": response.seconds,
                }
            )
            if len(self._buffer) >= self.FLUSH_EVERY:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._buffer:
            self.store.append("llm_calls", pd.DataFrame(self._buffer))
            self._buffer = []


def ask(backend: LlmBackend, template_version: str, requests: list[LlmRequest], ledger: CallLedger, progress=None, phase: str = "") -> dict[str, LlmResponse]:
    """Answer every request: from the cache, else from the backend while the budget lasts. Requests not
    answered because the budget ran out get status 'budget_exhausted'."""
    unique = list({r.key: r for r in requests}.values())
    answers = ledger.cached([r.key for r in unique])
    todo = [r for r in unique if r.key not in answers]
    hits, tokens = len(unique) - len(todo), 0
    if progress:  # the total at once: a slow backend's first batch can take minutes
        progress(phase, hits, len(unique), f"{hits} from the cache, {len(todo)} to ask")
    try:
        for i, (request, response) in enumerate(backend.run(todo, ledger.allow)):
            ledger.record(backend, template_version, request, response)
            answers[request.key] = response
            tokens += response.tokens
            if progress:
                progress(phase, hits + i + 1, len(unique), f"{hits} from the cache, {tokens:,} tokens")
    finally:
        ledger.flush()
    for request in todo:
        answers.setdefault(request.key, LlmResponse("budget_exhausted", error="run budget (max_calls / max_tokens) reached"))
    return answers


def new_run_id() -> str:
    return f"adhoc-{uuid.uuid4().hex[:12]}"
