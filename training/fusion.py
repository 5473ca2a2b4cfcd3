"""The pipeline's final order of the K candidates: the generator's order anchored on the retriever's.

The generator is a black box that only re-orders the retriever's top K. Used alone, its order throws away
what the retriever ranked by (popularity in the learning pool, the learned history and dialogue signals);
a re-ranker that orders by text similarity alone ranks worse than the retriever it re-orders. The fused
order keeps both: each film's score is a weighted sum of its rank in the two orders, lowest first, ties
to the retriever's order. Weight 1 is the generator's order alone (the paper's pipeline), 0 the retriever's.
"""

from __future__ import annotations

from collections.abc import Sequence


def fuse_rankings(retriever_order: Sequence[str], generator_order: Sequence[str], generator_weight: float) -> list[str]:
    """``retriever_order`` re-ordered by ``(1 - w) * retriever rank + w * generator rank`` (0-based ranks,
    ``w = generator_weight``), ties kept in the retriever's order. ``generator_order`` must be a
    permutation of ``retriever_order``."""
    if not 0.0 <= generator_weight <= 1.0:
        raise ValueError(f"generator_weight must be in [0, 1], got {generator_weight}")
    if sorted(generator_order) != sorted(retriever_order):
        raise ValueError("the generator's order is not a permutation of the retriever's candidates")
    retriever_rank = {movie_id: rank for rank, movie_id in enumerate(retriever_order)}
    generator_rank = {movie_id: rank for rank, movie_id in enumerate(generator_order)}

    def score(movie_id: str) -> float:  # rounded: equal sums tie exactly, whatever the float error
        return round((1.0 - generator_weight) * retriever_rank[movie_id] + generator_weight * generator_rank[movie_id], 9)

    return sorted(retriever_order, key=score)  # stable: ties keep the retriever's order
