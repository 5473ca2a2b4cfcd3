"""The ``openai`` backend: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Two modes:

- ``completion`` (base models, e.g. llama-cpp-python's server): ``/v1/completions`` with
  ``max_tokens=1`` and ``logprobs=N``; candidates are ranked by the next-token log-probs of their
  labels after "The best recommendation is candidate" (one forward pass per prompt).
- ``chat`` (hosted chat models): ``/v1/chat/completions`` asking for the ranked labels; the answer is
  parsed by :func:`training.generator.parse.parse_ranking`.

Requests run concurrently (bounded by a semaphore), are retried with exponential backoff on 429,
5xx, timeouts, connection errors and malformed bodies, and are cached by (model, prompt, params) in
SQLite. A request that still fails keeps the retriever's order and counts as a failure; a batch
never raises. The API key is only handed to the client: it is never logged, cached or returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.generator.base import Generator, RankRequest, RankResult, fallback
from training.generator.cache import ResponseCache, cache_key
from training.generator.parse import label_scores_from_tokens, parse_ranking, ranking_from_scores
from training.generator.prompt import Mode, Prompt, build_prompt

SYSTEM_MESSAGE = "You are a movie recommender. You rank candidate movies for a conversation."


class MalformedResponse(Exception):
    """The endpoint answered 2xx but the body lacks what the mode needs."""


@dataclass(frozen=True)
class OpenAIConfig:
    model: str
    base_url: str | None = None  # None: api.openai.com
    mode: Mode = "chat"
    max_concurrency: int = 4
    max_retries: int = 4  # retries after the first attempt
    timeout_s: float = 60.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    prompt_tokens: int = 2048  # prompt budget (approximate tokens)
    top_logprobs: int = 20  # completion mode: next-token alternatives requested
    cache_path: Path | None = None  # None: no response cache


def _retryable(error: BaseException) -> bool:
    import openai

    if isinstance(error, (MalformedResponse, json.JSONDecodeError, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(error, openai.APIResponseValidationError):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def _usage(response: Any) -> dict[str, int]:
    usage = getattr(response, "usage", None)
    return {
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
    }


class OpenAIGenerator(Generator):
    name = "openai"

    def __init__(self, config: OpenAIConfig, api_key: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.__api_key = api_key or "unused"  # local servers need a non-empty key; never stored elsewhere
        self.cache = ResponseCache(config.cache_path) if config.cache_path else None

    def __repr__(self) -> str:  # no key in reprs, logs or tracebacks' locals
        return f"OpenAIGenerator(model={self.config.model!r}, base_url={self.config.base_url!r}, mode={self.config.mode!r})"

    # -- requests --------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        if self.config.mode == "completion":
            return {"mode": "completion", "max_tokens": 1, "temperature": 0.0, "logprobs": self.config.top_logprobs}
        return {"mode": "chat", "temperature": 0.0}

    async def _call(self, client: Any, prompt: Prompt) -> dict[str, Any]:
        """One HTTP request; returns the cacheable part of the response or raises."""
        if self.config.mode == "completion":
            response = await client.completions.create(
                model=self.config.model, prompt=prompt.text, max_tokens=1, temperature=0.0,
                logprobs=self.config.top_logprobs,
            )
            try:
                top = response.choices[0].logprobs.top_logprobs[0]
                record = {"top_logprobs": {str(k): float(v) for k, v in dict(top).items()}}
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
                raise MalformedResponse(f"completion without top_logprobs: {type(error).__name__}") from None
        else:
            response = await client.chat.completions.create(
                model=self.config.model, temperature=0.0, max_tokens=8 * len(prompt.labels) + 16,
                messages=[{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": prompt.text}],
            )
            try:
                record = {"text": str(response.choices[0].message.content or "")}
            except (AttributeError, IndexError, TypeError) as error:
                raise MalformedResponse(f"chat completion without a message: {type(error).__name__}") from None
        record["usage"] = _usage(response)
        return record

    async def _fetch(self, client: Any, semaphore: asyncio.Semaphore, key: str, prompt: Prompt) -> tuple[dict | None, str | None]:
        """(record, None) from the cache or the endpoint after retries, else (None, error)."""
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            self.stats.add(cache_hits=1)
            return {**cached, "cached": True}, None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=wait_exponential_jitter(initial=self.config.backoff_initial_s, max=self.config.backoff_max_s,
                                         jitter=self.config.backoff_initial_s),
            retry=retry_if_exception(_retryable),
            before_sleep=lambda _state: self.stats.add(retries=1),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with semaphore:
                        self.stats.add(calls=1)
                        record = await self._call(client, prompt)
        except Exception as error:  # noqa: BLE001 - every failure falls back for this prompt only
            self.stats.add(failures=1)
            return None, f"{type(error).__name__}: {str(error)[:200]}"
        self.stats.add(**record["usage"])
        if self.cache is not None:
            self.cache.put(key, self.config.model, record)
        return record, None

    def _result(self, request: RankRequest, prompt: Prompt, record: dict | None, error: str | None) -> RankResult:
        if record is None:
            return fallback(request, error)
        source = "cache" if record.get("cached") else "model"
        if "top_logprobs" in record:
            label_scores = label_scores_from_tokens(record["top_logprobs"], prompt.labels)
            ranking, scores = ranking_from_scores(label_scores, prompt, request.candidate_ids)
            named = len(label_scores)
        else:
            ranking, named = parse_ranking(record["text"], prompt, request.candidate_ids, request.movies)
            scores = None
        if named == 0:
            self.stats.add(unparsed=1)
            return RankResult(request.candidate_ids, "fallback", None, "the answer named no candidate")
        return RankResult(ranking, source, scores)

    async def _rank_async(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        import openai

        prompts = [build_prompt(r, self.config.mode, self.config.prompt_tokens) for r in requests]
        keys = [cache_key(self.config.model, p.text, self._params()) for p in prompts]
        unique = dict(zip(keys, prompts))  # identical prompts in one batch make one request
        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        async with openai.AsyncOpenAI(
            api_key=self.__api_key, base_url=self.config.base_url, timeout=self.config.timeout_s, max_retries=0
        ) as client:
            fetched = await asyncio.gather(*(self._fetch(client, semaphore, k, p) for k, p in unique.items()))
        by_key = dict(zip(unique, fetched))
        return [self._result(r, p, *by_key[k]) for r, p, k in zip(requests, prompts, keys)]

    def _rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._rank_async(requests))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside an event loop
            return pool.submit(asyncio.run, self._rank_async(requests)).result()

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
