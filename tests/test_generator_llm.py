"""The local LLM end to end (marked ``llm``): llama-cpp-python's OpenAI-compatible server with the
offline Gemma-3-270M GGUF, ranked through the ``openai`` backend over real HTTP; and the same model
in-process through the ``llama_cpp`` backend. Both read the next-token scores of the labels, so on
the same prompt they must agree.

The ``llama_cpp`` backend runs in a child process (``isolated.IsolatedObject``): a build that executes
an instruction this CPU cannot run fails these tests with a clear message, not the whole session."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("llama_cpp", reason='needs the local-llm extra: pip install -e ".[local-llm]"')

from isolated import IsolatedObject  # noqa: E402
from llm_server import llama_cpp_server  # noqa: E402

from training.generator.base import RankRequest  # noqa: E402
from training.generator.llama_cpp_backend import (  # noqa: E402
    LlamaCppGenerator,
    compiled_cpu_features,
    packaged_gguf_path,
    unportable_features,
)
from training.generator.openai_backend import OpenAIConfig, OpenAIGenerator  # noqa: E402
from training.generator.prompt import build_prompt  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.slow]

MOVIES = {
    "tt0109830": {"title": "Forrest Gump", "year": 1994, "genres": ["Drama", "Romance"]},
    "tt0078748": {"title": "Alien", "year": 1979, "genres": ["Horror", "Sci-Fi"]},
    "tt0107290": {"title": "Jurassic Park", "year": 1993, "genres": ["Adventure", "Sci-Fi"]},
    "tt0114709": {"title": "Toy Story", "year": 1995, "genres": ["Animation", "Comedy"]},
}
REQUESTS = [
    RankRequest.from_text("I loved Alien. Any other scary space horror?", list(MOVIES), MOVIES),
    RankRequest.from_text("My kids want an animated comedy.", list(MOVIES)[::-1], MOVIES),
]
N_CTX = 512


@pytest.fixture(scope="module")
def gguf():
    return packaged_gguf_path()


@pytest.fixture(scope="module")
def in_process(gguf):
    """The llama_cpp backend, living in a child process."""
    with IsolatedObject(LlamaCppGenerator, gguf, N_CTX, 2) as generator:
        yield generator
        generator.call("close")


def test_llama_cpp_build_is_portable():
    """The wheel must run on any x86-64 machine of our kind: AVX-512/AMX code traps in some VMs."""
    with IsolatedObject(compiled_cpu_features) as child:  # the child holds the feature dict
        features = child.call("copy")
    assert features.get("AVX2"), f"llama.cpp built without AVX2: {features}"
    assert not unportable_features(features), (
        f"llama.cpp was built with {unportable_features(features)}: rebuild it with ./install.sh (portable flags)"
    )


def test_llama_cpp_backend_ranks_in_process_by_label_scores(in_process):
    results = in_process.call("rank_batch", REQUESTS)
    for request, result in zip(REQUESTS, results):
        assert result.source == "model" and sorted(result.ranking) == sorted(request.candidate_ids)
        assert list(result.scores) == sorted(result.scores, reverse=True)
        probability_on_labels = sum(math.exp(s) for s in result.scores)
        assert 0.2 < probability_on_labels <= 1.0001  # the prompt makes a label the likely next token
    stats = in_process.call("stats.as_dict")
    assert stats["generator/calls"] == 2 and stats["generator/failures"] == 0
    assert stats["generator/prompt_tokens"] > 100


def test_openai_backend_against_llama_cpp_server_end_to_end(gguf, in_process, tmp_path):
    config = OpenAIConfig(model="gemma-3-270m", mode="completion", max_retries=1, timeout_s=120,
                          prompt_tokens=N_CTX - 64, top_logprobs=20, cache_path=tmp_path / "cache.sqlite")
    with llama_cpp_server(gguf, n_ctx=N_CTX) as base_url:
        generator = OpenAIGenerator(OpenAIConfig(**{**config.__dict__, "base_url": base_url}))
        served = generator.rank_batch(REQUESTS)
        again = generator.rank_batch(REQUESTS)
    assert [r.source for r in served] == ["model", "model"] and generator.stats.failures == 0
    # a retry (a slow answer on a loaded machine) is one more call; the second batch must cost none
    assert generator.stats.calls == 2 + generator.stats.retries
    assert generator.stats.cache_hits == 2 and [r.source for r in again] == ["cache"] * 2
    assert generator.stats.prompt_tokens > 100 and generator.stats.completion_tokens == 2
    # Same model, same prompt, same verbalizer: the server's top logprobs agree with the in-process scores.
    for request, result in zip(REQUESTS, served):
        prompt = build_prompt(request, "completion", N_CTX - 64)
        local = in_process.call("label_logprobs", prompt.text, prompt.labels)
        best_local = max(local, key=local.get)
        assert result.ranking[0] == prompt.label_of()[best_local]
        assert result.scores[0] == pytest.approx(local[best_local], abs=0.05)


def test_calibration_subtracts_the_content_free_label_prior(in_process):
    request = REQUESTS[0]
    prompt = build_prompt(request, "completion", N_CTX - 8, lambda text: in_process.call("count_tokens", text))
    raw = in_process.call("label_logprobs", prompt.text, prompt.labels)
    prior = in_process.call("label_prior", len(request.candidate_ids))
    assert set(prior) == set(prompt.labels) and all(p < 0 for p in prior.values())
    in_process.set("calibrate", True)
    try:
        [result] = in_process.call("rank_batch", [request])
    finally:
        in_process.set("calibrate", False)
    expected = sorted(prompt.labels, key=lambda label: -(raw[label] - prior[label]))
    assert result.ranking == tuple(prompt.label_of()[label] for label in expected)
    assert result.scores[0] == pytest.approx(raw[expected[0]] - prior[expected[0]], abs=1e-6)
