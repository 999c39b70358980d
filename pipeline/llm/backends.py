"""Explainer backends (docs/method.md, steps 6-7): one interface, three kinds.

- ``openai``: any OpenAI-compatible chat endpoint through the official ``openai`` client. The endpoint, model
  and key come from the environment only, and none of them is ever stored or logged.
- ``local``: an instruct model in-process with ``transformers``; Yes/No read from the next-token logits.
- ``contrastive``: no LLM. Names the words and bigrams that set active prompts apart from inactive ones
  (smoothed log-odds) and classifies by them: the baseline LLM explanations must beat.

An LLM backend answers ``LlmRequest`` batches with ``LlmResponse`` objects and never raises for a bad answer:
transport failures, empty replies, refusals and replies with no Yes/No become statuses.
"""

from __future__ import annotations

import copy
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from lookups.pipeline.config import LLM_API_KEY_ENV, LLM_BASE_URL_ENV, LLM_MODEL_ENV, ExplanationSettings
from lookups.pipeline.llm import ExplainerError
from lookups.pipeline.llm.templates import SNIPPET_MARKERS, parse_answer, parse_explanation, parse_rating

#: Statuses of an answer that are results (cached, counted); 'error' is a failure to get any answer. 'comparison':
#: an explanation that compares the groups shown instead of stating a rule (``templates.parse_explanation``).
ANSWER_STATUSES = ("ok", "malformed", "refused", "empty", "comparison")
#: What a request asks for: an explanation, a Yes/No classification, a 0-9 rating (the simulation scorer).
PURPOSES = ("explain", "classify", "simulate")
#: The simulation scorer's scale: every rating is one token in tokenizers that split digits, so the expected
#: value over the digits' probabilities is exact (docs/method.md, "Scoring explanations").
RATINGS = tuple(str(r) for r in range(10))
STATUSES = ANSWER_STATUSES + ("error", "budget_exhausted")


@dataclass(frozen=True)
class LlmRequest:
    key: str  # cache key: hash of (pair, examples, backend, model, template version)
    purpose: str  # PURPOSES
    messages: list[dict]
    max_tokens: int


@dataclass
class LlmResponse:
    status: str
    text: str = ""
    answer: bool | None = None  # classify only
    p_yes: float | None = None  # classify only, where the backend gives probabilities
    rating: float | None = None  # simulate only: the expected rating where the backend gives probabilities, else the parsed one
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _finish(request: LlmRequest, text: str, p_yes: float | None, rating: float | None = None, **usage) -> LlmResponse:
    if request.purpose == "explain":
        status, cleaned = parse_explanation(text)
        return LlmResponse(status, cleaned, **usage)
    if request.purpose == "simulate":
        status, parsed = parse_rating(text)
        if rating is not None:  # the digits' distribution: its expectation, whatever the reply's text
            status, parsed = "ok", rating
        return LlmResponse(status, text.strip()[:200], rating=parsed, **usage)
    status, answer = parse_answer(text)
    if status != "ok" and p_yes is not None:
        # The reply's first word is not Yes/No, but the first token's distribution ranks Yes and No: read the
        # answer there, as the local backend reads its logits. Without probabilities the reply stays malformed.
        status, answer = "ok", p_yes >= 0.5
    return LlmResponse(status, text.strip()[:200], answer, p_yes, **usage)


class LlmBackend:
    """Answers requests; ``run`` yields (request, response) as they finish, in any order."""

    kind = "llm"
    model = ""

    @property
    def explainer(self) -> str:
        return f"{self.kind}:{self.model}"

    def run(self, requests: list[LlmRequest], allow: Callable[[], bool]) -> Iterator[tuple[LlmRequest, LlmResponse]]:
        raise NotImplementedError


def _expected_rating(probabilities: dict[str, float]) -> float | None:
    """The expected rating over the digits' probabilities (normalised over the digits), or None without any."""
    total = sum(probabilities.get(r, 0.0) for r in RATINGS)
    return sum(int(r) * probabilities.get(r, 0.0) for r in RATINGS) / total if total > 0 else None


def _rating_from_top_logprobs(top: Iterable) -> float | None:
    """The expected rating over the first token's alternatives that are digits."""
    found: dict[str, float] = {}
    for alt in top:
        token = (alt.token or "").strip()
        if token in RATINGS:
            found[token] = found.get(token, 0.0) + math.exp(alt.logprob)
    return _expected_rating(found)


def _p_yes_from_top_logprobs(top: Iterable) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) over the first token's alternatives, or None when neither is listed."""
    yes = no = 0.0
    for alt in top:
        word = re.sub(r"[^a-z]", "", (alt.token or "").lower())
        if word == "yes":
            yes += math.exp(alt.logprob)
        elif word == "no":
            no += math.exp(alt.logprob)
    return yes / (yes + no) if yes + no > 0 else None


class OpenAIBackend(LlmBackend):
    """Any OpenAI-compatible chat endpoint. Retries with exponential backoff (rate limits, server errors,
    timeouts, connection errors) are the ``openai`` client's own, bounded by ``max_retries``."""

    kind = "openai"

    def __init__(self, settings: ExplanationSettings):
        from openai import OpenAI

        base_url = os.environ.get(LLM_BASE_URL_ENV)
        if not base_url:
            raise ExplainerError(f"The openai backend needs an endpoint: set {LLM_BASE_URL_ENV} (e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1).")
        key = os.environ.get(LLM_API_KEY_ENV) or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.client = OpenAI(base_url=base_url, api_key=key, timeout=settings.timeout_s, max_retries=settings.max_retries)
        self.concurrency = settings.concurrency
        self.model = os.environ.get(LLM_MODEL_ENV) or self._served_model()
        self.logprobs = True  # switched off once if the endpoint rejects the parameter

    def _served_model(self) -> str:
        try:
            served = [m.id for m in self.client.models.list()]
        except Exception as err:  # noqa: BLE001 - any failure means the same thing to the user
            raise ExplainerError(f"Cannot list the endpoint's models ({type(err).__name__}): set {LLM_MODEL_ENV}, or check {LLM_BASE_URL_ENV}.") from err
        if not served:
            raise ExplainerError(f"The endpoint serves no model: set {LLM_MODEL_ENV}.")
        return served[0]

    def _call(self, request: LlmRequest) -> LlmResponse:
        from openai import APIError, BadRequestError

        started = time.perf_counter()
        params = {"model": self.model, "messages": request.messages, "max_tokens": request.max_tokens, "temperature": 0.0}
        if request.purpose in ("classify", "simulate") and self.logprobs:
            params.update(logprobs=True, top_logprobs=20)
        try:
            try:
                reply = self.client.chat.completions.create(**params)
            except BadRequestError:
                if "logprobs" not in params:
                    raise
                self.logprobs = False
                params.pop("logprobs"), params.pop("top_logprobs")
                reply = self.client.chat.completions.create(**params)
        except APIError as err:
            status = getattr(err, "status_code", None)
            return LlmResponse("error", error=f"{type(err).__name__}{f' {status}' if status else ''}: {str(err)[:200]}", seconds=time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - a malformed body must not crash the asset
            return LlmResponse("error", error=f"{type(err).__name__}: {str(err)[:200]}", seconds=time.perf_counter() - started)
        try:
            choice = reply.choices[0]
            text = choice.message.content or ""
        except (AttributeError, IndexError, TypeError):
            choice, text = None, ""
        p_yes = rating = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if request.purpose == "classify" and content:
            p_yes = _p_yes_from_top_logprobs(content[0].top_logprobs or [])
        if request.purpose == "simulate" and content:
            rating = _rating_from_top_logprobs(content[0].top_logprobs or [])
        usage = getattr(reply, "usage", None)
        return _finish(
            request,
            text,
            p_yes,
            rating,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            seconds=time.perf_counter() - started,
        )

    def run(self, requests, allow):
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pending = iter(requests)
            running = {}
            while True:
                while len(running) < self.concurrency:
                    request = next(pending, None)
                    if request is None or not allow():
                        pending = iter(())
                        break
                    running[pool.submit(self._call, request)] = request
                if not running:
                    return
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield running.pop(future), future.result()


class LocalBackend(LlmBackend):
    """An instruct model in-process (``transformers``): greedy explanations; Yes/No from the logits."""

    kind = "local"

    def __init__(self, settings: ExplanationSettings, device: str = "cpu"):
        from transformers import AutoTokenizer

        from lookups.pipeline.inputs.checkpoints import resolve_model

        self.source = resolve_model(settings.local_model)
        self.model = self.source.model_id
        self.tokenizer = AutoTokenizer.from_pretrained(self.source.local_dir)
        if self.tokenizer.chat_template is None:
            raise ExplainerError(f"{settings.local_model} has no chat template: the local backend needs an instruct (chat) model.")
        self.tokenizer.padding_side = "left"  # generation continues every row from its own last token
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = None  # loaded on the first request: a step that finds every answer cached loads nothing
        self.device = device
        self.batch_size = settings.batch_size
        self.yes_ids = self._word_ids("yes")
        self.no_ids = self._word_ids("no")
        self.rating_ids = {rating: self._word_ids(rating) for rating in RATINGS}

    def _load(self):
        if self.lm is None:
            import torch
            from transformers import AutoModelForCausalLM

            self.lm = AutoModelForCausalLM.from_pretrained(self.source.local_dir, dtype=torch.float32).to(self.device).eval()
        return self.lm

    def _word_ids(self, word: str) -> list[int]:
        ids = set()
        for form in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            encoded = self.tokenizer.encode(form, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(encoded[0])
        return sorted(ids)

    def _encode(self, batch: list[LlmRequest]):
        texts = [self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in batch]
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def run(self, requests, allow):
        import torch

        if not requests:
            return
        self._load()
        if all(r.purpose in ("classify", "simulate") for r in requests):
            yield from self._next_token(requests, allow)
            return
        # Similar lengths together: less padding.
        ordered = sorted(requests, key=lambda r: sum(len(m["content"]) for m in r.messages))
        for _, batch in _budgeted_batches([ordered], self.batch_size, allow):
            started = time.perf_counter()
            enc = self._encode(batch)
            prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
            with torch.no_grad():
                max_new = max(r.max_tokens for r in batch)
                # Greedy decoding of a small model loops ("the head of the head of ..."): no repeated trigrams.
                out = self.lm.generate(**enc, max_new_tokens=max_new, do_sample=False, no_repeat_ngram_size=3, pad_token_id=self.tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            seconds = (time.perf_counter() - started) / len(batch)
            for request, row, n in zip(batch, new, prompt_tokens):
                ids = [t for t in row.tolist() if t != self.tokenizer.pad_token_id]
                eos = self.tokenizer.eos_token_id
                ids = ids[: ids.index(eos)] if eos in ids else ids
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                yield request, _finish(request, text, None, prompt_tokens=int(n), completion_tokens=len(ids), seconds=seconds)

    def _next_token(self, requests: list[LlmRequest], allow) -> Iterator[tuple[LlmRequest, LlmResponse]]:
        """Yes/No (classify) or the expected 0-9 rating (simulate) from the next-token distribution. The
        questions about one explanation differ only after the snippet marker, so the shared prefix (instructions
        and explanation) runs once and its KV cache serves every snippet: ``[1, prefix]`` once, then ``[batch,
        suffix]`` right-padded on the repeated cache."""
        import torch

        groups: dict[str, list[tuple[LlmRequest, str]]] = {}
        for request in requests:
            text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            cut = text.rfind(SNIPPET_MARKERS[0])
            cut = cut if cut > 0 else len(text)
            groups.setdefault(text[:cut], []).append((request, text[cut:]))
        pad = self.tokenizer.pad_token_id
        prefixes = list(groups)
        current = None
        for index, chunk in _budgeted_batches([groups[p] for p in prefixes], self.batch_size, allow):
            if index != current:  # a new explanation: run its prefix once
                current = index
                prefix_ids = self.tokenizer(prefixes[index], return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)  # [1, P]
                with torch.no_grad():
                    prefix_cache = self.lm(input_ids=prefix_ids, use_cache=True).cache
            started = time.perf_counter()
            suffixes = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for _, t in chunk]
            width = max(len(ids) for ids in suffixes)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x in suffixes], device=self.device)  # [batch, S], right-padded
            mask = torch.tensor([[1] * (prefix_ids.shape[1] + len(x)) + [0] * (width - len(x)) for x in suffixes], device=self.device)
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
            last = torch.tensor([len(x) - 1 for x in suffixes], device=self.device)
            with torch.no_grad():
                probs = self._last_logits(ids, mask, cache, last).float().softmax(-1)  # [batch, vocab]
            seconds = (time.perf_counter() - started) / len(chunk)
            for (request, _), row, suffix in zip(chunk, probs, suffixes):
                usage = {"prompt_tokens": prefix_ids.shape[1] + len(suffix), "completion_tokens": 1, "seconds": seconds}
                yield request, self._read(request, row, usage)

    def _last_logits(self, ids, mask, cache, last):
        """The logits at each row's position ``last`` ``[batch, vocab]``: only those rows go through the vocabulary
        projection (``logits_to_keep``, a fifth of a small model's work over every position), where the model
        takes it; else all positions, then the chosen ones."""
        import torch

        rows = torch.arange(len(last), device=last.device)
        try:
            return self.lm(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, logits_to_keep=last[:, None]).logits[:, 0]
        except TypeError:  # a model class without logits_to_keep
            return self.lm(input_ids=ids, attention_mask=mask, cache=cache, use_cache=True).logits[rows, last]

    def _read(self, request: LlmRequest, probs, usage: dict) -> LlmResponse:
        """One request's answer from its next-token distribution ``probs`` ``[vocab]``."""
        if request.purpose == "simulate":
            rating = _expected_rating({r: float(probs[ids].sum()) for r, ids in self.rating_ids.items() if ids})
            return LlmResponse("ok" if rating is not None else "malformed", f"{rating:.2f}" if rating is not None else "", rating=rating, **usage)
        yes, no = float(probs[self.yes_ids].sum()), float(probs[self.no_ids].sum())
        p = yes / max(yes + no, 1e-12)
        return LlmResponse("ok", "Yes" if p >= 0.5 else "No", p >= 0.5, p, **usage)


def _budgeted_batches(groups: list[list], size: int, allow: Callable[[], bool]) -> Iterator[tuple[int, list]]:
    """(group index, batch) for batches of at most ``size`` items of each group, every item admitted by
    ``allow()`` (the run budget); everything stops at the first item refused."""
    for index, items in enumerate(groups):
        for start in range(0, len(items), size):
            batch = []
            for item in items[start : start + size]:
                if not allow():
                    if batch:
                        yield index, batch
                    return
                batch.append(item)
            yield index, batch


def make_llm_backend(settings: ExplanationSettings, device: str = "cpu") -> LlmBackend | None:
    """The primary explainer: openai when an endpoint is configured (or asked for), local otherwise; None for
    'contrastive' (the reference alone)."""
    backend = resolve_backend_name(settings.backend)
    if backend == "openai":
        return OpenAIBackend(settings)
    if backend == "local":
        return LocalBackend(settings, device)
    return None


def resolve_backend_name(backend: str) -> str:
    if backend == "auto":
        return "openai" if os.environ.get(LLM_BASE_URL_ENV) else "local"
    if backend not in ("openai", "local", "contrastive"):
        raise ExplainerError(f"Unknown explainer backend '{backend}': use 'auto', 'openai', 'local' or 'contrastive'.")
    return backend
