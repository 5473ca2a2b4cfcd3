"""The generator interface: rank a conversation's retrieved candidates, never raising out of a batch.

Every backend (``openai``, ``llama_cpp``, ``embedding``) takes :class:`RankRequest` s and returns one
:class:`RankResult` per request: a permutation of exactly the request's candidates. When a backend
cannot rank a request (the API failed after its retries, the answer was unusable) the result keeps
the retriever's order and says why, so the RL rounds can treat the generator as a black box.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

Turn = Mapping[str, str]  # {"role": "user" | "assistant" | ..., "text": "..."} (CONVERSATION_TURNS_SCHEMA)
ResultSource = Literal["model", "cache", "fallback", "skipped"]


@dataclass(frozen=True)
class RankRequest:
    """One conversation and its retrieved candidates (in the retriever's order)."""

    context: tuple[Turn, ...]
    candidate_ids: tuple[str, ...]
    movies: Mapping[str, Mapping] = field(default_factory=dict)  # corpus rows by movie_id (metadata)

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", tuple(self.context))
        object.__setattr__(self, "candidate_ids", tuple(self.candidate_ids))
        if len(set(self.candidate_ids)) != len(self.candidate_ids):
            raise ValueError(f"duplicate candidate ids in {list(self.candidate_ids)}")

    @classmethod
    def from_text(cls, text: str, candidate_ids: Sequence[str], movies: Mapping[str, Mapping] | None = None):
        """A one-turn conversation (the user's message)."""
        return cls(({"role": "user", "text": text},), tuple(candidate_ids), movies or {})


@dataclass(frozen=True)
class RankResult:
    """The generator's ranking of one request's candidates (best first)."""

    ranking: tuple[str, ...]
    # "model": ranked now; "cache": from the response cache; "fallback": retriever order (the backend failed);
    # "skipped": retriever order, never sent (no target among the candidates, see Generator.rank_scored)
    source: ResultSource
    scores: tuple[float, ...] | None = None  # per ranked item, when the backend scores (same order)
    error: str | None = None  # why the result fell back (never contains credentials)


@dataclass
class GeneratorStats:
    """Running counters of one generator (thread-safe increments through :meth:`add`)."""

    requests: int = 0  # RankRequests answered
    calls: int = 0  # model calls made (HTTP requests or forward passes), retries included
    cache_hits: int = 0
    failures: int = 0  # requests that fell back to the retriever's order after every retry
    skipped_no_target: int = 0  # requests never sent: no target among the candidates (see rank_scored)
    retries: int = 0
    unparsed: int = 0  # answers that named none of the candidates (ranking = retriever order)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # wall time spent in rank_batch
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **increments: float) -> None:
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, float]:
        """Every counter as a float (Dagster metadata plots floats as trends)."""
        names = [f.name for f in fields(self) if not f.name.startswith("_")]
        return {f"generator/{name}": float(getattr(self, name)) for name in names}


def fallback(request: RankRequest, error: str | None = None) -> RankResult:
    """The retriever's order, used whenever a backend cannot rank a request."""
    return RankResult(request.candidate_ids, "fallback", None, error)


class Generator(abc.ABC):
    """A ranker of retrieved candidates. Subclasses implement :meth:`_rank_batch`."""

    name: str = "generator"

    def __init__(self) -> None:
        self.stats = GeneratorStats()

    @abc.abstractmethod
    def _rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        """Rank every request; may fall back per request but must return one result each."""

    def rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        """One result per request, in order. Never raises for a request the backend cannot rank."""
        import time

        requests = list(requests)
        started = time.perf_counter()
        try:
            results = self._rank_batch(requests)
        except Exception as error:  # noqa: BLE001 - a batch never fails: every request falls back
            self.stats.add(failures=len(requests))
            results = [fallback(r, f"{type(error).__name__}: {error}") for r in requests]
        self.stats.add(requests=len(requests), seconds=time.perf_counter() - started)
        for request, result in zip(requests, results, strict=True):
            if sorted(result.ranking) != sorted(request.candidate_ids):
                raise AssertionError(f"{self.name} returned a ranking that is not a permutation of the candidates")
        return results

    def rank_scored(self, requests: Sequence[RankRequest], targets: Sequence[Collection[str]]) -> list[RankResult]:
        """Like :meth:`rank_batch`, but only the requests whose candidates hold one of their ``targets``
        reach the backend; the others keep the retriever's order (source ``"skipped"``) at no cost.

        Exact wherever a ranking is only scored against targets: with no target among the candidates,
        NDCG, Recall and MRR are 0 in every order (the RL reward is 0 by definition). On the mirror
        data this leaves 87% of the evaluation's ReDial test requests unsent (Recall@20 is low).
        """
        requests = list(requests)
        if len(targets) != len(requests):
            raise ValueError(f"{len(targets)} target sets for {len(requests)} requests")
        scored = [i for i, (r, t) in enumerate(zip(requests, targets)) if not set(t).isdisjoint(r.candidate_ids)]
        results: list[RankResult] = [RankResult(r.candidate_ids, "skipped") for r in requests]
        for i, result in zip(scored, self.rank_batch([requests[i] for i in scored]) if scored else []):
            results[i] = result
        self.stats.add(skipped_no_target=len(requests) - len(scored))
        return results

    def rank(self, request: RankRequest) -> RankResult:
        return self.rank_batch([request])[0]

    def close(self) -> None:  # noqa: B027 (a hook: backends that hold nothing keep this no-op)
        """Release models, clients and connections."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
