"""The ``openai`` backend: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Two modes:

- ``completion`` (base models, e.g. llama-cpp-python's server): ``/v1/completions`` with
  ``max_tokens=1`` and ``logprobs=N``; candidates are ranked by the next-token log-probs of their
  labels after "The best recommendation is candidate" (one forward pass per prompt).
- ``chat`` (hosted chat models): ``/v1/chat/completions`` asking for the ranked labels; the answer is
  parsed by :func:`training.generator.parse.parse_ranking`.

Requests run concurrently (bounded by a semaphore) and are retried with exponential backoff on 429,
5xx, timeouts, connection errors and malformed or empty answers. Three clocks bound the time spent:
``timeout_s`` for one HTTP request from send to the last byte (not per read: a server dripping a byte
at a time cannot hold it longer), ``request_budget_s`` for all attempts of one prompt, and
``batch_budget_s`` for one ``rank_batch`` (prompts not answered by then fall back). A response body over
``max_response_bytes`` is cut off and not retried. Usable answers (ones that name a candidate) are
cached in SQLite by (endpoint, model, prompt, params); an empty or unparsable one never is, so a healthy
server is asked again next time. A request that still fails keeps the retriever's order and counts as a
failure (or as ``unparsed``); a batch never raises.

The API key is only handed to the client. Servers may echo it (an error body quoting the Authorization
header): every error message and cached answer goes through :func:`redact` first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
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


class RequestDeadline(Exception):
    """One HTTP request took longer than ``timeout_s`` in all (retried like a timeout)."""


class ResponseTooLarge(Exception):
    """A response body over ``max_response_bytes`` (not retried: it would come back as large)."""


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s'\",;}\]]+")
_AUTHORIZATION = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?!bearer\s)[^\s'\",;}\]]+")
_KEY_SHAPED = re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}")


def redact(text: str, secrets: Sequence[str | None] = ()) -> str:
    """``text`` without the given secrets, any Authorization or Bearer value, or ``sk-...`` key."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _AUTHORIZATION.sub(r"\1***", text)
    return _KEY_SHAPED.sub("***", text)


@dataclass(frozen=True)
class OpenAIConfig:
    model: str
    base_url: str | None = None  # None: api.openai.com
    mode: Mode = "chat"
    max_concurrency: int = 4
    max_retries: int = 4  # retries after the first attempt
    timeout_s: float = 30.0  # one HTTP request, send to last byte
    request_budget_s: float = 120.0  # every attempt of one prompt, backoff included
    batch_budget_s: float | None = 3600.0  # one rank_batch; None: unbounded
    max_response_bytes: int = 1_000_000  # a ranking answer is a few hundred bytes
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    prompt_tokens: int = 2048  # prompt budget (approximate tokens)
    top_logprobs: int = 20  # completion mode: next-token alternatives requested
    cache_path: Path | None = None  # None: no response cache


def _cause(error: BaseException, kind: type | tuple[type, ...]) -> BaseException | None:
    """``error`` or the first exception of its cause chain that is a ``kind``."""
    while error is not None:
        if isinstance(error, kind):
            return error
        error = error.__cause__ or error.__context__
    return None


def _retryable(error: BaseException) -> bool:
    import openai

    if _cause(error, ResponseTooLarge) is not None:
        return False
    if isinstance(error, (MalformedResponse, RequestDeadline, json.JSONDecodeError, openai.APITimeoutError,
                          openai.APIConnectionError)):
        return True
    if isinstance(error, openai.APIResponseValidationError):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def _capped_http_client(max_bytes: int):
    """An httpx client (openai's defaults) whose responses may not exceed ``max_bytes``, whether or not
    the server announces a Content-Length: the body is counted as it streams in."""
    import importlib

    import openai

    # the httpx that this openai release is built on (openai 3.x ships a fork named httpx2)
    httpx = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.partition(".")[0])

    class CappedBody(httpx.AsyncByteStream):
        def __init__(self, stream) -> None:
            self._stream = stream

        async def __aiter__(self):
            seen = 0
            async for chunk in self._stream:
                seen += len(chunk)
                if seen > max_bytes:
                    raise ResponseTooLarge(f"response body larger than {max_bytes:,} bytes")
                yield chunk

        async def aclose(self) -> None:
            await self._stream.aclose()

    class CappedTransport(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request):
            response = await self._inner.handle_async_request(request)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                await response.aclose()
                raise ResponseTooLarge(f"response body larger than {max_bytes:,} bytes ({int(declared):,} announced)")
            response.stream = CappedBody(response.stream)
            return response

        async def aclose(self) -> None:
            await self._inner.aclose()

    return openai.DefaultAsyncHttpxClient(transport=CappedTransport())


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

    def _redact(self, text: str) -> str:
        return redact(text, [self.__api_key])

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
                content = response.choices[0].message.content
            except (AttributeError, IndexError, TypeError) as error:
                raise MalformedResponse(f"chat completion without a message: {type(error).__name__}") from None
            if not (content or "").strip():
                raise MalformedResponse("chat completion with empty content")
            record = {"text": self._redact(str(content))}
        record["usage"] = _usage(response)
        return record

    async def _call_within_deadline(self, client: Any, prompt: Prompt) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self._call(client, prompt), self.config.timeout_s)
        except asyncio.TimeoutError:
            raise RequestDeadline(f"no complete answer within {self.config.timeout_s:g} s") from None

    def _describe(self, error: BaseException) -> str:
        """A one-line, redacted account of why a request failed (the root cause when it is ours)."""
        cause = _cause(error, (ResponseTooLarge, RequestDeadline)) or error
        return self._redact(f"{type(cause).__name__}: {cause}")[:300]

    async def _fetch(self, client: Any, semaphore: asyncio.Semaphore, key: str, prompt: Prompt) -> tuple[dict | None, str | None]:
        """(record, None) from the cache or the endpoint after retries, else (None, error)."""
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_after_attempt,
            stop_after_delay,
            wait_exponential_jitter,
        )

        if self.cache is not None and (cached := self.cache.get(key)) is not None:
            self.stats.add(cache_hits=1)
            return {**cached, "cached": True}, None
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1) | stop_after_delay(self.config.request_budget_s),
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
                        record = await self._call_within_deadline(client, prompt)
        except Exception as error:  # noqa: BLE001 - every failure falls back for this prompt only
            self.stats.add(failures=1)
            return None, self._describe(error)
        self.stats.add(**record["usage"])
        return record, None

    async def _fetch_all(self, client: Any, unique: dict[str, Prompt]) -> list[tuple[dict | None, str | None]]:
        """Every unique prompt's (record, error); those still running when the batch budget is spent
        are cancelled and fall back."""
        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        tasks = [asyncio.ensure_future(self._fetch(client, semaphore, k, p)) for k, p in unique.items()]
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=self.config.batch_budget_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            self.stats.add(failures=len(pending))
        late = f"batch budget of {self.config.batch_budget_s:g} s spent before this request was answered"
        return [(None, late) if task in pending else task.result() for task in tasks]

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
        endpoint = self.config.base_url or "https://api.openai.com/v1"
        keys = [cache_key(endpoint, self.config.model, p.text, self._params()) for p in prompts]
        unique = dict(zip(keys, prompts))  # identical prompts in one batch make one request
        async with openai.AsyncOpenAI(
            api_key=self.__api_key, base_url=self.config.base_url, timeout=self.config.timeout_s, max_retries=0,
            http_client=_capped_http_client(self.config.max_response_bytes),
        ) as client:
            fetched = await self._fetch_all(client, unique)
        by_key = dict(zip(unique, fetched))
        results = [self._result(r, p, *by_key[k]) for r, p, k in zip(requests, prompts, keys)]
        self._cache_usable(by_key, keys, results)
        return results

    def _cache_usable(self, by_key: dict, keys: Sequence[str], results: Sequence[RankResult]) -> None:
        """Cache the fresh answers that ranked their request (an unusable answer is asked again next time)."""
        if self.cache is None:
            return
        for key, result in zip(keys, results):
            record, _ = by_key[key]
            if record is not None and not record.get("cached") and result.source == "model":
                self.cache.put(key, self.config.model, record)
                record["cached"] = True  # a duplicate prompt in the batch is stored once
        self.cache.flush()  # an object-store cache publishes the batch's answers now (a no-op for SQLite)

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
