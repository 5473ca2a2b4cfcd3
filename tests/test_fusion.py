"""The pipeline's fused order (training.fusion.fuse_rankings), every expectation worked out by hand.

Scores are (1 - w) x retriever rank + w x generator rank (0-based), lowest first, ties in the retriever's order.
"""

from __future__ import annotations

import pytest

from training.fusion import fuse_rankings

RETRIEVER = ["a", "b", "c", "d"]
GENERATOR = ["d", "c", "b", "a"]  # the reverse: every film's two ranks sum to 3


@pytest.mark.parametrize(("weight", "expected"), [
    (0.0, ["a", "b", "c", "d"]),  # the retriever's order
    (1.0, ["d", "c", "b", "a"]),  # the generator's order
    # w = 0.25: a 0.75, b 1.25, c 1.75, d 2.25
    (0.25, ["a", "b", "c", "d"]),
    # w = 0.5: every film scores 1.5, a four-way tie kept in the retriever's order
    (0.5, ["a", "b", "c", "d"]),
    # w = 0.75: a 2.25, b 1.75, c 1.25, d 0.75
    (0.75, ["d", "c", "b", "a"]),
])
def test_reversed_orders_flip_past_half(weight, expected):
    assert fuse_rankings(RETRIEVER, GENERATOR, weight) == expected


def test_a_film_the_generator_lifts_far_overtakes_only_when_its_weight_outweighs_the_gap():
    # the generator moves e from the retriever's 4th place (rank 4) to the front: e scores 4 (1 - w),
    # the others r (1 - w) + w (r + 1) = r + w for retriever ranks r = 0..3
    retriever, generator = ["a", "b", "c", "d", "e"], ["e", "a", "b", "c", "d"]
    assert fuse_rankings(retriever, generator, 0.3) == ["a", "b", "c", "e", "d"]  # e 2.8: between c 2.3 and d 3.3
    assert fuse_rankings(retriever, generator, 0.6) == ["a", "b", "e", "c", "d"]  # e 1.6 ties b 1.6: b stays first
    assert fuse_rankings(retriever, generator, 0.9) == ["e", "a", "b", "c", "d"]  # e 0.4, a 0.9
    assert fuse_rankings(retriever, generator, 0.1) == ["a", "b", "c", "d", "e"]  # e 3.6, d 3.1


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fuse_rankings(RETRIEVER, GENERATOR, 1.5)
    with pytest.raises(ValueError, match="not a permutation"):
        fuse_rankings(RETRIEVER, ["a", "b", "c", "x"], 0.5)


def test_recommend_fuses_the_generators_order_with_the_retrievers(tmp_path):
    """``Recommender`` with the real ``preference`` generator (films before 1980 first): retrieved B C A
    (C 1978, A 1975), generator C A B. At w = 0.4: B 0.8, C 0.6, A 1.6 -> C B A; at 1: C A B; at 0: B C A."""
    import polars as pl

    from corpus_build.schema import CORPUS_SCHEMA
    from training.generator.preference_backend import PreferenceGenerator
    from training.recommend import Recommender

    years = {"tt0000001": 1975, "tt0000002": 1995, "tt0000003": 1978}
    corpus = pl.DataFrame(
        [{c: None for c in CORPUS_SCHEMA} | {"movie_id": m, "title": f"Film {m[-1]}", "year": y, "genres": [],
                                             "directors": [], "cast": [], "aliases": [], "sources": ["test"]}
         for m, y in years.items()], schema=CORPUS_SCHEMA)
    corpus.write_parquet(tmp_path / "movie_corpus.parquet")
    retrieved = ["tt0000002", "tt0000003", "tt0000001"]

    def retrieve(history, text, k):
        return [(m, 1.0 - i / 10) for i, m in enumerate(retrieved[:k])]

    for weight, expected in ((0.0, retrieved), (0.4, ["tt0000003", "tt0000002", "tt0000001"]),
                             (1.0, ["tt0000003", "tt0000001", "tt0000002"])):
        recommender = Recommender(tmp_path / "movie_corpus.parquet", retrieve, PreferenceGenerator("year<1980"),
                                  candidates=3, generator_weight=weight)
        rows, mentioned = recommender.recommend("anything old please", 3)
        assert mentioned == []
        assert [r["movie_id"] for r in rows] == expected, weight
