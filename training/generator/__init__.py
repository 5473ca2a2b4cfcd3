"""The generator: a black-box ranker of retrieved candidates (prompt, parsing, backends).

``make_generator("embedding" | "llama_cpp" | "openai", ...)`` builds a backend behind the one
:class:`~training.generator.base.Generator` interface (``rank_batch(requests) -> results``).
"""

from __future__ import annotations

from pathlib import Path

from training.generator.base import Generator, GeneratorStats, RankRequest, RankResult

BACKENDS = ("embedding", "llama_cpp", "openai")


def make_generator(
    backend: str = "embedding",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    mode: str = "chat",
    max_concurrency: int = 4,
    max_retries: int = 4,
    timeout_s: float = 30.0,
    request_budget_s: float = 120.0,
    batch_budget_s: float | None = 3600.0,
    prompt_tokens: int = 2048,
    cache_path: Path | None = None,
    embedder=None,
    film_vectors=None,
) -> Generator:
    """A generator of the named backend (heavy libraries are imported by the backend, lazily)."""
    if backend == "embedding":
        from training.generator.embedding_backend import EmbeddingGenerator

        return EmbeddingGenerator(embedder=embedder, film_vectors=film_vectors)
    if backend == "llama_cpp":
        from training.generator.llama_cpp_backend import LlamaCppGenerator

        return LlamaCppGenerator(model_path=model, n_ctx=prompt_tokens + 64)
    if backend == "openai":
        from training.generator.openai_backend import OpenAIConfig, OpenAIGenerator

        if not model:
            raise ValueError("the openai backend needs a model name (RAR_GENERATOR_MODEL)")
        config = OpenAIConfig(model=model, base_url=base_url, mode=mode, max_concurrency=max_concurrency,
                              max_retries=max_retries, timeout_s=timeout_s, request_budget_s=request_budget_s,
                              batch_budget_s=batch_budget_s, prompt_tokens=prompt_tokens, cache_path=cache_path)
        return OpenAIGenerator(config, api_key=api_key)
    raise ValueError(f"unknown generator backend {backend!r}; expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Generator", "GeneratorStats", "RankRequest", "RankResult", "make_generator"]
