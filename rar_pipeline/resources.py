"""Dagster resources shared by the assets."""

from __future__ import annotations

import os

import dagster as dg

from rar_pipeline.settings import get_settings

GENERATOR_API_KEY_ENV = "RAR_GENERATOR_API_KEY"


class GeneratorResource(dg.ConfigurableResource):
    """The generator that ranks retrieved candidates; unset fields come from the RAR_GENERATOR_* settings.

    The API key only ever arrives through ``dg.EnvVar`` (see :func:`generator_api_key`): Dagster shows
    the variable's name, never its value, and the key is not logged, cached or put in metadata.
    """

    backend: str | None = None  # embedding | llama_cpp | openai
    model: str | None = None
    base_url: str | None = None
    mode: str | None = None  # openai: chat | completion
    max_concurrency: int | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    request_budget_s: float | None = None
    batch_budget_s: float | None = None
    prompt_tokens: int | None = None
    api_key: str | None = None

    def make_generator(self):
        """A fresh generator (close it when done); its response cache lives under RAR_HOME."""
        from training.generator import make_generator
        from training.layout import generator_cache_path

        settings = get_settings()

        def pick(value, default):
            return default if value is None else value

        backend = pick(self.backend, settings.generator_backend)
        embedding = _embedding_inputs(settings) if backend == "embedding" else {}
        return make_generator(
            backend,
            model=pick(self.model, settings.generator_model),
            base_url=pick(self.base_url, settings.generator_base_url),
            api_key=self.api_key,
            mode=pick(self.mode, settings.generator_mode),
            max_concurrency=pick(self.max_concurrency, settings.generator_max_concurrency),
            max_retries=pick(self.max_retries, settings.generator_max_retries),
            timeout_s=pick(self.timeout_s, settings.generator_timeout_s),
            request_budget_s=pick(self.request_budget_s, settings.generator_request_budget_s),
            batch_budget_s=pick(self.batch_budget_s, settings.generator_batch_budget_s),
            prompt_tokens=pick(self.prompt_tokens, settings.generator_prompt_tokens),
            cache_path=generator_cache_path(settings.home),
            **embedding,
        )


def _embedding_inputs(settings) -> dict:
    """The embedding backend uses movie_vectors' embedder and, when that table was built with the
    same model, its stored film vectors (so a round or a report embeds dialogues only)."""
    import numpy as np
    import polars as pl

    from corpus_build.embed import Embedder
    from corpus_build.vector_store import VectorStore

    embedder = Embedder.from_settings(settings)
    store = VectorStore.from_settings(settings)
    if not store.exists():
        return {"embedder": embedder}
    stored = store.read_columns(["movie_id", "vector", "model"]).filter(pl.col("model") == embedder.model_name)
    matrix = np.asarray(stored["vector"].to_list(), dtype=np.float32).reshape(stored.height, -1)
    return {"embedder": embedder, "film_vectors": dict(zip(stored["movie_id"].to_list(), matrix))}


def generator_api_key() -> dg.EnvVar | None:
    """``dg.EnvVar(RAR_GENERATOR_API_KEY)`` when the variable is set, else None (local and offline
    backends need no key, and Dagster fails a run whose resource names an unset EnvVar)."""
    return dg.EnvVar(GENERATOR_API_KEY_ENV) if os.environ.get(GENERATOR_API_KEY_ENV) else None


RESOURCES: dict = {
    "generator": GeneratorResource(api_key=generator_api_key()),
}
