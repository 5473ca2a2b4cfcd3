"""`rar recommend` end to end on a tiny real corpus (Parquet + LanceDB + MiniLM), the mention finder,
the embedding backend, and GeneratorResource inside a real Dagster run (no key in metadata)."""

from __future__ import annotations

import re

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from corpus_build.linking import Linker
from corpus_build.movie_text import content_hash
from corpus_build.schema import CORPUS_SCHEMA
from rar_pipeline.resources import GENERATOR_API_KEY_ENV, GeneratorResource, generator_api_key
from training.generator.base import RankRequest
from training.recommend import find_mentions

FILMS = [
    ("tt0078748", "Alien", 1979, ["Horror", "Sci-Fi"], "The crew of a spaceship is hunted by a deadly alien creature."),
    ("tt0090605", "Aliens", 1986, ["Action", "Sci-Fi"], "Ripley returns with marines to the moon where the alien was found."),
    ("tt2543164", "Arrival", 2016, ["Drama", "Sci-Fi"], "A linguist learns to talk with aliens who arrive in twelve ships."),
    ("tt0816692", "Interstellar", 2014, ["Adventure", "Sci-Fi"], "Astronauts travel through a wormhole to find humanity a new home."),
    ("tt0114709", "Toy Story", 1995, ["Animation", "Comedy"], "A cowboy doll feels threatened by a new spaceman toy."),
    ("tt0109830", "Forrest Gump", 1994, ["Drama", "Romance"], "A kind man witnesses decades of American history."),
    ("tt0068646", "The Godfather", 1972, ["Crime", "Drama"], "The patriarch of a Mafia dynasty hands power to his son."),
    ("tt1375666", "Inception", 2010, ["Sci-Fi", "Thriller"], "A thief plants ideas in people's dreams."),
]


def corpus() -> pl.DataFrame:
    rows = []
    for movie_id, title, year, genres, plot in FILMS:
        row = dict(movie_id=movie_id, title=title, year=year, genres=genres, directors=[], cast=[],
                   runtime_minutes=None, plot=plot, aliases=[], imdb_rating=None, imdb_votes=1000, sources=["test"])
        rows.append({**row, "content_hash": content_hash(row)})
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)


@pytest.fixture(scope="module")
def torch_one_thread():
    import torch

    torch.set_num_threads(1)


def test_find_mentions_links_exact_titles_only():
    linker = Linker(corpus(), fuzzy_threshold=101.0)
    assert find_mentions("I loved Alien and Arrival, what next?", linker) == ["tt0078748", "tt2543164"]
    assert find_mentions("Loved The Godfather (1972)! Something like Aliens?", linker) == ["tt0068646", "tt0090605"]
    assert find_mentions("i want something fun", linker) == []


@pytest.mark.slow
def test_embedding_backend_ranks_by_similarity_to_the_dialogue(torch_one_thread, tmp_path):
    from training.generator.embedding_backend import EmbeddingGenerator

    movies = {row["movie_id"]: row for row in corpus().iter_rows(named=True)}
    ids = ["tt0068646", "tt0109830", "tt0114709"]
    generator = EmbeddingGenerator(batch_size=8)
    results = generator.rank_batch([
        RankRequest.from_text("My kids want an animated film with toys", ids, movies),
        RankRequest([{"role": "user", "text": "a mafia crime drama"}, {"role": "assistant", "text": "Sure!"}], ids, movies),
    ])
    assert results[0].ranking[0] == "tt0114709" and results[1].ranking[0] == "tt0068646"
    assert all(r.source == "model" and list(r.scores) == sorted(r.scores, reverse=True) for r in results)
    assert generator.stats.requests == 2 and generator.stats.failures == 0

    # Stored film vectors (movie_vectors) are used as they are: give the toy film the mafia film's vector.
    mafia = generator._vectors(["a mafia crime drama"])[0]
    stored = EmbeddingGenerator(embedder=generator.embedder, film_vectors={"tt0114709": mafia, "tt0068646": -mafia})
    [result] = stored.rank_batch([RankRequest.from_text("a mafia crime drama", ids, movies)])
    assert result.ranking[0] == "tt0114709" and result.ranking[-1] == "tt0068646"
    assert len(stored._texts) == 2  # the dialogue and the one film without a stored vector

    # A saved cache answers the same requests in a fresh generator without embedding anything again.
    requests = [RankRequest.from_text("My kids want an animated film with toys", ids, movies)]
    assert generator.save_cache(tmp_path / "vectors.npz") == len(generator._texts) == 5
    restored = EmbeddingGenerator(embedder=generator.embedder)
    assert restored.load_cache(tmp_path / "vectors.npz") == 5
    assert restored.rank_batch(requests)[0].ranking == results[0].ranking
    assert len(restored._texts) == 5


def test_recommend_says_when_the_pipeline_is_not_materialised(rar_home):
    from rar_pipeline.cli import main

    outcome = CliRunner().invoke(main, ["recommend", "I loved Alien"])
    assert outcome.exit_code != 0 and "has not been materialised yet" in outcome.output and "rar materialize" in outcome.output


@pytest.mark.slow
def test_recommend_links_retrieves_and_ranks(rar_home, torch_one_thread):
    from corpus_build.atomic import write_parquet_atomic
    from corpus_build.embed import Embedder
    from corpus_build.vector_store import sync_vectors
    from rar_pipeline.cli import main
    from rar_pipeline.settings import get_settings

    settings = get_settings()
    write_parquet_atomic(corpus(), settings.table_path("movie_corpus"))
    sync_vectors(corpus(), settings.vector_store(), Embedder(batch_size=8, precision="fp32"), progress=False)
    outcome = CliRunner().invoke(main, ["recommend", "I loved Alien and Arrival, what next?", "--k", "3", "--no-service"])
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.stdout.splitlines()
    assert "mentioned: tt0078748; tt2543164" in lines and any("generator: embedding" in line for line in lines)
    picks = [line for line in lines if re.match(r"^\s+\d+\. ", line)]
    assert [p.split(".")[0].strip() for p in picks] == ["1", "2", "3"]
    shown = "\n".join(picks)
    assert "Alien (1979)" not in shown and "Arrival (2016)" not in shown and "Aliens (1986)" in shown


@dg.asset
def ranked(generator: GeneratorResource) -> dg.MaterializeResult:
    """Ranks one request with the configured generator and reports its statistics."""
    with generator.make_generator() as gen:
        result = gen.rank(RankRequest.from_text("hi", ["a", "b", "c"]))
        return dg.MaterializeResult(metadata={"ranking": ",".join(result.ranking), **gen.stats.as_dict()})


def test_generator_resource_in_a_dagster_run_keeps_the_key_out_of_metadata(rar_home, monkeypatch):

    secret = "sk-resource-test-SECRET-42"
    monkeypatch.setenv(GENERATOR_API_KEY_ENV, secret)
    monkeypatch.setenv("RAR_GENERATOR_BACKEND", "openai")
    monkeypatch.setenv("RAR_GENERATOR_MODEL", "scripted")
    from rar_pipeline.settings import get_settings

    get_settings.cache_clear()
    from llm_server import ScriptedEndpoint

    with ScriptedEndpoint() as endpoint:
        monkeypatch.setenv("RAR_GENERATOR_BASE_URL", endpoint.base_url)
        get_settings.cache_clear()

        outcome = dg.materialize([ranked], resources={"generator": GeneratorResource(api_key=generator_api_key())})
        assert endpoint.auth_headers == [f"Bearer {secret}"]
    assert outcome.success
    metadata = outcome.asset_materializations_for_node("ranked")[0].metadata
    assert metadata["ranking"].value == "c,a,b"  # chat mode: the scripted answer "C, A, B"
    assert metadata["generator/calls"].value == 1.0
    assert secret not in repr(metadata)
    cache = get_settings().path("generator_cache", "responses.sqlite")
    assert cache.exists() and not any(secret.encode() in p.read_bytes() for p in cache.parent.iterdir())


def test_recommend_reports_a_misconfigured_generator(rar_home, monkeypatch):
    from corpus_build.atomic import write_parquet_atomic
    from rar_pipeline.cli import main
    from rar_pipeline.settings import get_settings

    write_parquet_atomic(corpus(), get_settings().table_path("movie_corpus"))
    monkeypatch.setattr("rar_pipeline.recommend_service.current_retrieve", lambda settings: ((lambda h, t, k: []), "test"))
    outcome = CliRunner().invoke(main, ["recommend", "I loved Alien", "--backend", "openai"])
    assert outcome.exit_code == 1 and "needs a model name (RAR_GENERATOR_MODEL)" in outcome.output


def _build_home() -> None:
    from corpus_build.atomic import write_parquet_atomic
    from corpus_build.embed import Embedder
    from corpus_build.vector_store import sync_vectors
    from rar_pipeline.settings import get_settings

    settings = get_settings()
    write_parquet_atomic(corpus(), settings.table_path("movie_corpus"))
    sync_vectors(corpus(), settings.vector_store(), Embedder(batch_size=8, precision="fp32"), progress=False)


def _picks(output: str) -> list[str]:
    return [line.split(". ", 1)[1] for line in output.splitlines() if re.match(r"^\s+\d+\. ", line)]


@pytest.mark.slow
def test_recommend_service_answers_later_calls_and_reloads_what_changed(rar_home, monkeypatch, torch_one_thread):
    """The first call starts the service; the next ones are answered by it (the same answer as in-process),
    a corpus rewritten on disk is picked up, and --stop-service ends it."""
    import time

    from corpus_build.atomic import write_parquet_atomic
    from rar_pipeline import recommend_service
    from rar_pipeline.cli import main
    from rar_pipeline.settings import get_settings

    _build_home()
    monkeypatch.setenv("RAR_RECOMMEND_SERVICE", "true")
    get_settings.cache_clear()
    message = ["recommend", "I loved Alien and Arrival, what next?", "--k", "3"]
    runner = CliRunner()
    try:
        first = runner.invoke(main, message)
        assert first.exit_code == 0, first.output
        assert "starting the recommend service" in first.stderr
        started = time.monotonic()
        second = runner.invoke(main, message)
        warm_seconds = time.monotonic() - started
        assert second.exit_code == 0 and "starting" not in second.stderr, second.output
        assert _picks(second.stdout) == _picks(first.stdout) == _picks(runner.invoke(main, message + ["--no-service"]).stdout)
        assert warm_seconds < 10, warm_seconds  # ~0.1-1 s here; the bound only catches a reload on every call

        renamed = corpus().with_columns(pl.col("title").replace({"Aliens": "Aliens (Special Edition)"}))
        write_parquet_atomic(renamed, get_settings().table_path("movie_corpus"))
        after = runner.invoke(main, message)
        assert "Aliens (Special Edition) (1986)" in after.stdout and "starting" not in after.stderr, after.output
    finally:
        stopped = runner.invoke(main, ["recommend", "--stop-service"])
    assert "stopped the recommend service" in stopped.output
    key = recommend_service.service_key(__import__("os").environ, get_settings().home)
    assert not recommend_service.socket_path(key).exists()


@pytest.mark.slow
def test_recommend_service_exits_by_itself_when_idle(rar_home, monkeypatch, torch_one_thread):
    import os
    import time

    from rar_pipeline import recommend_service
    from rar_pipeline.cli import main
    from rar_pipeline.settings import get_settings

    _build_home()
    monkeypatch.setenv("RAR_RECOMMEND_IDLE_MINUTES", "0.03")  # ~2 s
    monkeypatch.setenv("RAR_RECOMMEND_SERVICE", "true")
    get_settings.cache_clear()
    key = recommend_service.service_key(os.environ, get_settings().home)
    try:
        outcome = CliRunner().invoke(main, ["recommend", "Something like Toy Story", "--k", "2"])
        assert outcome.exit_code == 0, outcome.output
        deadline = time.monotonic() + 30
        while recommend_service.socket_path(key).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not recommend_service.socket_path(key).exists()
    finally:
        recommend_service.stop(key)
