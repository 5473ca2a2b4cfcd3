"""The failure path of every blocking check that the other tests only see passing: each check reads a
real table (Parquet, LanceDB) that was broken on purpose, fails, and names what is wrong; the same
check passes on the table before it was broken, so it cannot pass or fail whatever the data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from corpus_build.atomic import write_parquet_atomic
from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, CORPUS_SCHEMA
from rar_pipeline.settings import get_settings

FILMS = {"tt0000001": ("Alpha", 1975), "tt0000002": ("Bravo", 1995), "tt0000003": ("Charlie", 2001)}
MINILM_DIMENSION = 384  # the packaged all-MiniLM-L6-v2


def _corpus_row(movie_id: str, title: str, year: int | None, **fields) -> dict:
    from corpus_build.movie_text import content_hash

    row = {c: None for c in CORPUS_SCHEMA} | {
        "movie_id": movie_id, "title": title, "year": year, "genres": ["Drama"], "directors": ["Someone"],
        "cast": ["Actor One"], "runtime_minutes": 100, "plot": f"A film called {title}.", "aliases": [],
        "imdb_rating": 7.0, "imdb_votes": 1000, "sources": ["test"],
    } | fields
    return row | {"content_hash": content_hash(row)}


def _write_corpus(rows) -> pl.DataFrame:
    corpus = pl.DataFrame(rows, schema=CORPUS_SCHEMA)
    write_parquet_atomic(corpus, get_settings().table_path("movie_corpus"))
    return corpus


def _good_corpus() -> pl.DataFrame:
    return _write_corpus([_corpus_row(m, t, y) for m, (t, y) in FILMS.items()])


# --- movie_vectors -----------------------------------------------------------------------------


def _write_vectors(vectors: dict[str, np.ndarray], dimension: int = MINILM_DIMENSION) -> None:
    """A real LanceDB movie_vectors table with exactly these rows (replacing any earlier one)."""
    import pyarrow as pa

    from corpus_build.vector_store import VectorStore, table_schema

    store = VectorStore(get_settings().vector_db_uri)
    store.create(dimension, replace=True)
    ids = list(vectors)
    n = len(ids)
    data = {"movie_id": ids, "vector": [np.asarray(v, np.float32) for v in vectors.values()],
            "content_hash": ["h"] * n, "model": ["test"] * n, "title": ids, "year": [None] * n,
            "genres": [[]] * n, "directors": [[]] * n, "cast": [[]] * n, "plot": [None] * n}
    store.upsert(pa.Table.from_pydict(data, schema=table_schema(dimension)))


def _unit_vectors(ids, dimension: int = MINILM_DIMENSION, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for movie_id in ids:
        v = rng.normal(size=dimension).astype(np.float32)
        out[movie_id] = v / np.linalg.norm(v)
    return out


def test_vectors_ids_in_corpus_fails_on_a_vector_of_a_film_the_corpus_lacks(rar_home):
    from assets.vectors import vectors_ids_in_corpus, vectors_row_count_matches_corpus

    _good_corpus()
    _write_vectors(_unit_vectors(FILMS))
    assert vectors_ids_in_corpus().passed and vectors_row_count_matches_corpus().passed
    _write_vectors(_unit_vectors([*FILMS, "tt0999999"]))
    result = vectors_ids_in_corpus()
    assert not result.passed
    assert result.metadata["not_in_corpus"].value == 1 and result.metadata["examples"].value == ["tt0999999"]
    counts = vectors_row_count_matches_corpus()
    assert not counts.passed and (counts.metadata["vectors"].value, counts.metadata["corpus"].value) == (4, 3)


def test_vectors_finite_nonzero_fails_on_infinite_and_zero_vectors(rar_home):
    """LanceDB's writer refuses NaN itself; an infinite value or a zero vector gets through, and the check
    catches them."""
    from assets.vectors import vectors_finite_nonzero

    _good_corpus()
    vectors = _unit_vectors(FILMS)
    _write_vectors(vectors)
    assert vectors_finite_nonzero().passed
    inf, minus_inf = vectors["tt0000001"].copy(), vectors["tt0000002"].copy()
    inf[5], minus_inf[0] = np.inf, -np.inf
    _write_vectors({"tt0000001": inf, "tt0000002": minus_inf, "tt0000003": vectors["tt0000003"]})
    result = vectors_finite_nonzero()
    assert not result.passed and sorted(result.metadata["examples"].value) == ["tt0000001", "tt0000002"]
    _write_vectors({**vectors, "tt0000003": np.zeros(MINILM_DIMENSION)})
    result = vectors_finite_nonzero()
    assert not result.passed and result.metadata["examples"].value == ["tt0000003"]


@pytest.mark.slow  # loads the packaged MiniLM to learn its dimension
def test_vectors_dimension_fails_on_a_table_of_another_dimension(rar_home):
    from assets.vectors import vectors_dimension

    _good_corpus()
    _write_vectors(_unit_vectors(FILMS))
    assert vectors_dimension().passed
    _write_vectors(_unit_vectors(FILMS, dimension=16), dimension=16)
    result = vectors_dimension()
    assert not result.passed
    assert (result.metadata["table_dimension"].value, result.metadata["model_dimension"].value) == (16, 384)


# --- movie_corpus: the Great Expectations suite --------------------------------------------------


BROKEN_ROWS = [  # (a change to one row, the column whose expectation it breaks)
    ({"imdb_rating": 11.5}, "imdb_rating"),
    ({"imdb_votes": -3}, "imdb_votes"),
    ({"runtime_minutes": 0}, "runtime_minutes"),
    ({"content_hash": "not-the-hash"}, "content_hash"),
    ({"movie_id": "imdb:0000003"}, "movie_id"),
    ({"sources": []}, "n_sources"),
]


def test_great_expectations_suite_fails_on_each_broken_row(rar_home):
    from assets.corpus import great_expectations_suite

    _good_corpus()
    assert great_expectations_suite().passed
    for change, column in BROKEN_ROWS:
        rows = [_corpus_row(m, t, y) for m, (t, y) in FILMS.items()]
        rows[2] = rows[2] | change
        _write_corpus(rows)
        result = great_expectations_suite()
        assert not result.passed, change
        assert [f["column"] for f in result.metadata["failed"].value] == [column], change


# --- conversation_turns: targets_in_corpus ---------------------------------------------------------


def _turn(dialog_id: str, targets: list[str]) -> dict:
    return {"dataset": "redial", "split": "test", "dialog_id": dialog_id, "turn_index": 1,
            "context": [{"role": "seeker", "text": "hi"}], "history_movie_ids": ["tt0000001"],
            "target_movie_ids": targets, "target_mentioned_before": [False] * len(targets)}


def _write_turns(rows) -> None:
    write_parquet_atomic(pl.DataFrame(rows, schema=CONVERSATION_TURNS_SCHEMA),
                         get_settings().table_path("conversation_turns"))


def test_targets_in_corpus_fails_on_an_unknown_target_and_on_a_turn_without_target(rar_home):
    from assets.interactions import targets_in_corpus

    _good_corpus()
    _write_turns([_turn("d1", ["tt0000002"]), _turn("d2", ["tt0000003", "tt0000001"])])
    assert targets_in_corpus().passed
    _write_turns([_turn("d1", ["tt0000002", "tt0999999"]), _turn("d2", ["tt0000003"])])
    unknown = targets_in_corpus()
    assert not unknown.passed
    assert (unknown.metadata["targets_not_in_corpus"].value, unknown.metadata["turns_without_target"].value) == (1, 0)
    _write_turns([_turn("d1", ["tt0000002"]), _turn("d2", [])])
    empty = targets_in_corpus()
    assert not empty.passed
    assert (empty.metadata["targets_not_in_corpus"].value, empty.metadata["turns_without_target"].value) == (0, 1)
