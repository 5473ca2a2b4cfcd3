"""The openai backend against a scripted OpenAI-compatible HTTP server on 127.0.0.1 (real sockets):
retries with backoff on 429/5xx/timeouts/malformed bodies, fallback to the retriever's order, failure
counts, the persistent response cache, and the API key kept out of everything but the request."""

from __future__ import annotations

from pathlib import Path

import pytest
from llm_server import ScriptedEndpoint

from training.generator.base import RankRequest
from training.generator.openai_backend import OpenAIConfig, OpenAIGenerator

IDS = ("tt0078748", "tt2543164", "tt0133093")
MOVIES = {"tt0078748": {"title": "Alien", "year": 1979}, "tt2543164": {"title": "Arrival", "year": 2016},
          "tt0133093": {"title": "The Matrix", "year": 1999}}
SECRET = "sk-test-DO-NOT-LEAK-1234567890"
# The "slow" fault answers after SLOW_S, past the client's timeout; every other answer must arrive well within
# it, also on a machine loaded by parallel test workers (the endpoint runs in the test's own process).
SLOW_S, TIMEOUT_S = 3.0, 1.0


def req(text: str = "I loved Alien, what next?") -> RankRequest:
    return RankRequest.from_text(text, IDS, MOVIES)


def generator(endpoint: ScriptedEndpoint, tmp_path: Path, mode: str = "completion", **overrides) -> OpenAIGenerator:
    settings = dict(max_retries=2, timeout_s=2.0, backoff_initial_s=0.01, backoff_max_s=0.05) | overrides
    config = OpenAIConfig(model="scripted", base_url=endpoint.base_url, mode=mode,
                          cache_path=tmp_path / "cache.sqlite", **settings)
    return OpenAIGenerator(config, api_key=SECRET)


def test_ranks_by_label_logprobs_and_counts_tokens(tmp_path):
    with ScriptedEndpoint() as endpoint:
        gen = generator(endpoint, tmp_path)
        [result] = gen.rank_batch([req()])
    assert result.source == "model" and result.ranking == ("tt2543164", "tt0078748", "tt0133093")
    assert result.scores == (-0.1, -1.0, -2.0)
    assert (gen.stats.calls, gen.stats.prompt_tokens, gen.stats.completion_tokens) == (1, 100, 1)


def test_chat_mode_parses_the_ranked_labels(tmp_path):
    with ScriptedEndpoint(ok_chat="Sure! My ranking: C, A, B.") as endpoint:
        gen = generator(endpoint, tmp_path, mode="chat")
        [result] = gen.rank_batch([req()])
    assert result.ranking == ("tt0133093", "tt0078748", "tt2543164") and result.source == "model"
    assert (gen.stats.prompt_tokens, gen.stats.completion_tokens) == (120, 7)


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "empty", "slow"])
def test_transient_faults_are_retried_then_succeed(tmp_path, fault):
    with ScriptedEndpoint(slow_s=SLOW_S) as endpoint:
        endpoint.script = [fault, fault]
        gen = generator(endpoint, tmp_path, timeout_s=TIMEOUT_S)
        [result] = gen.rank_batch([req()])
        assert endpoint.requests == 3
    assert result.source == "model" and result.ranking[0] == "tt2543164"
    assert (gen.stats.retries, gen.stats.failures, gen.stats.calls) == (2, 0, 3)


@pytest.mark.parametrize("fault", ["429", "500", "malformed", "slow"])
def test_persistent_faults_fall_back_to_retriever_order_without_raising(tmp_path, fault):
    with ScriptedEndpoint(slow_s=SLOW_S) as endpoint:
        endpoint.rules = {"FAULTY": fault}
        gen = generator(endpoint, tmp_path, timeout_s=TIMEOUT_S)
        results = gen.rank_batch([req("FAULTY turn"), req("a good turn")])
        assert endpoint.requests == 3 + 1  # first try + 2 retries for the faulty prompt; one for the good one
    assert results[0].source == "fallback" and results[0].ranking == IDS and results[0].error
    assert results[1].source == "model" and results[1].ranking[0] == "tt2543164"
    assert gen.stats.failures == 1 and gen.stats.requests == 2


def test_client_errors_are_not_retried(tmp_path):
    with ScriptedEndpoint(default="400") as endpoint:
        gen = generator(endpoint, tmp_path)
        [result] = gen.rank_batch([req()])
        assert endpoint.requests == 1
    assert result.source == "fallback" and result.ranking == IDS and "400" in result.error
    assert gen.stats.failures == 1


def test_unreachable_endpoint_falls_back(tmp_path):
    config = OpenAIConfig(model="m", base_url="http://127.0.0.1:9/v1", mode="completion", max_retries=1,
                          timeout_s=0.5, backoff_initial_s=0.01, backoff_max_s=0.02)
    gen = OpenAIGenerator(config)
    [result] = gen.rank_batch([req()])
    assert result.source == "fallback" and gen.stats.failures == 1 and gen.stats.calls == 2


def test_second_identical_batch_makes_no_http_request(tmp_path):
    batch = [req("turn one"), req("turn two"), req("turn three"), req("turn one")]  # one duplicate prompt
    with ScriptedEndpoint() as endpoint:
        first = generator(endpoint, tmp_path).rank_batch(batch)
        assert endpoint.requests == 3
        again = generator(endpoint, tmp_path)  # a new process would read the same SQLite file
        second = again.rank_batch(batch)
        assert endpoint.requests == 3
    assert [r.ranking for r in second] == [r.ranking for r in first]
    assert {r.source for r in second} == {"cache"} and again.stats.cache_hits == 3 and again.stats.calls == 0


def test_failures_are_not_cached(tmp_path):
    with ScriptedEndpoint() as endpoint:
        endpoint.script = ["500"] * 3
        gen = generator(endpoint, tmp_path)
        assert gen.rank_batch([req()])[0].source == "fallback"
        assert gen.rank_batch([req()])[0].source == "model"
        assert endpoint.requests == 4


def test_api_key_is_sent_but_never_stored_or_shown(tmp_path):
    with ScriptedEndpoint() as endpoint:
        gen = generator(endpoint, tmp_path)
        result = gen.rank_batch([req()])[0]
        assert endpoint.auth_headers == [f"Bearer {SECRET}"]
    gen.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("cache.sqlite*"))
    assert stored and SECRET.encode() not in stored
    shown = repr(gen) + repr(result) + repr(gen.stats.as_dict()) + repr(gen.config)
    assert SECRET not in shown


def test_retries_back_off_exponentially(tmp_path):
    import time

    with ScriptedEndpoint() as endpoint:
        endpoint.script = ["429", "500"]
        gen = generator(endpoint, tmp_path, backoff_initial_s=0.2, backoff_max_s=5.0)
        started = time.perf_counter()
        [result] = gen.rank_batch([req()])
        elapsed = time.perf_counter() - started
    assert result.source == "model" and gen.stats.retries == 2
    assert elapsed >= 0.2 + 0.4  # waits of initial * 2**n (plus jitter) before each retry
