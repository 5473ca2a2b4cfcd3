"""The openai backend against a misbehaving OpenAI-compatible server on 127.0.0.1 (real sockets, a
thread per connection): null answers, a body dripped a byte every 2 s, a 50 MB body, an error body that
echoes the Authorization header, and two servers that serve one model name differently."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import dagster as dg
import pytest
from llm_server import MisbehavingServer

from training.generator.base import RankRequest
from training.generator.openai_backend import OpenAIConfig, OpenAIGenerator
from training.rollouts import GeneratorUnavailable

pytestmark = pytest.mark.hostile

IDS = ("tt0078748", "tt2543164", "tt0133093")
MOVIES = {"tt0078748": {"title": "Alien", "year": 1979}, "tt2543164": {"title": "Arrival", "year": 2016},
          "tt0133093": {"title": "The Matrix", "year": 1999}}
SECRET = "sk-hostile-0123456789abcdefDO-NOT-LEAK"


@pytest.fixture
def server():
    servers: list[MisbehavingServer] = []

    def start(**kwargs) -> MisbehavingServer:
        servers.append(MisbehavingServer(**kwargs))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def generator(base_url: str, cache: Path, **overrides) -> OpenAIGenerator:
    settings = dict(max_retries=0, timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05) | overrides
    return OpenAIGenerator(OpenAIConfig(model="scripted", base_url=base_url, mode="chat", cache_path=cache, **settings),
                           api_key=SECRET)


def req(text: str = "I loved Alien, what next?") -> RankRequest:
    return RankRequest.from_text(text, IDS, MOVIES)


def cache_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("select key, model, response from responses").fetchall()


def test_a_null_answer_is_never_cached_and_a_healthy_server_is_asked_again(server, tmp_path):
    endpoint = server(default="ok:C, A, B")
    endpoint.script = ["null"]
    cache = tmp_path / "cache.sqlite"
    with generator(endpoint.base_url, cache) as gen:
        [first] = gen.rank_batch([req()])
    assert first.source == "fallback" and first.ranking == IDS
    assert cache_rows(cache) == []
    with generator(endpoint.base_url, cache) as again:
        [second] = again.rank_batch([req()])
    assert endpoint.requests == 2 and second.source == "model" and second.ranking[0] == "tt0133093"
    assert len(cache_rows(cache)) == 1


def test_an_answer_naming_no_candidate_is_counted_unparsed_and_not_cached(server, tmp_path):
    endpoint = server(default="ok:I cannot help with that.")
    cache = tmp_path / "cache.sqlite"
    with generator(endpoint.base_url, cache) as gen:
        [result] = gen.rank_batch([req()])
        assert result.source == "fallback" and gen.stats.unparsed == 1 and gen.stats.failures == 0
    assert cache_rows(cache) == []


def test_a_server_dripping_a_byte_every_two_seconds_hits_the_request_deadline(server, tmp_path):
    endpoint = server(default="drip", drip_s=2.0, drip_total_s=30.0)
    started = time.monotonic()
    with generator(endpoint.base_url, tmp_path / "cache.sqlite", timeout_s=3.0) as gen:
        [result] = gen.rank_batch([req()])
    elapsed = time.monotonic() - started
    assert elapsed < 6.0, f"a 3 s deadline held the request for {elapsed:.1f} s"
    assert result.source == "fallback" and "3" in result.error and "s" in result.error


def test_a_batch_stops_at_its_budget_and_the_rest_falls_back(server, tmp_path):
    endpoint = server(default="slow", slow_s=1.5)
    started = time.monotonic()
    batch = [req(f"turn {i}") for i in range(4)]
    with generator(endpoint.base_url, tmp_path / "cache.sqlite", max_concurrency=1, timeout_s=5.0,
                   batch_budget_s=2.5) as gen:
        results = gen.rank_batch(batch)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, f"a 2.5 s batch budget took {elapsed:.1f} s"
    assert results[0].source == "model"
    assert [r.source for r in results[1:]] == ["fallback"] * 3
    assert all("budget" in r.error for r in results[1:])
    assert gen.stats.failures == 3


def test_a_fifty_megabyte_body_is_cut_off_and_never_cached(server, tmp_path):
    endpoint = server(default="huge")
    cache = tmp_path / "cache.sqlite"
    started = time.monotonic()
    with generator(endpoint.base_url, cache, max_retries=2) as gen:
        [result] = gen.rank_batch([req()])
    assert time.monotonic() - started < 10
    assert result.source == "fallback" and "larger than" in result.error
    assert endpoint.requests == 1  # a body over the cap is not retried: it would come back as big
    assert sum(p.stat().st_size for p in tmp_path.glob("cache.sqlite*")) < 1_000_000


def test_the_key_never_leaves_the_request_even_when_the_server_echoes_it(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    endpoint = server(default="echo_error")
    cache = tmp_path / "cache.sqlite"
    with generator(endpoint.base_url, cache, max_retries=1) as gen:
        [failed] = gen.rank_batch([req("one")])
        endpoint.default = "echo_ok"
        [answered] = gen.rank_batch([req("two")])
    assert failed.source == "fallback" and "400" in failed.error and "Bearer ***" in failed.error
    assert answered.source == "model"
    shown = repr(failed) + repr(answered) + caplog.text + repr(gen.stats.as_dict())
    assert SECRET not in shown and SECRET[:20] not in shown
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("cache.sqlite*"))
    assert stored and SECRET.encode() not in stored and SECRET[:20].encode() not in stored

    # what reaches Dagster's event log: the alignment round raises with the first failed ranking's error
    @dg.asset
    def ranks_with_the_echoing_server(context) -> None:
        endpoint.default = "echo_error"
        with generator(endpoint.base_url, None) as gen:
            [result] = gen.rank_batch([req("three")])
        context.log.error(f"ranking failed: {result.error}")
        raise GeneratorUnavailable(f"1 of 1 rankings failed: {result.error}")

    instance = dg.DagsterInstance.ephemeral()
    run = dg.materialize([ranks_with_the_echoing_server], instance=instance, raise_on_error=False)
    events = instance.all_logs(run.run_id)
    logged = "".join(str(e.user_message) + str(e.dagster_event) for e in events)
    assert "ranking failed" in logged and SECRET not in logged and SECRET[:20] not in logged


def test_the_response_cache_is_keyed_by_endpoint_as_well_as_model(server, tmp_path):
    first, second = server(default="ok:C, A, B"), server(default="ok:B, A, C")
    cache = tmp_path / "cache.sqlite"
    with generator(first.base_url, cache) as gen:
        assert gen.rank_batch([req()])[0].ranking[0] == "tt0133093"
    with generator(second.base_url, cache) as gen:
        [result] = gen.rank_batch([req()])
    assert second.requests == 1 and result.source == "model" and result.ranking[0] == "tt2543164"
