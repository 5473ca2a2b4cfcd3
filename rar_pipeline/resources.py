"""Dagster resources shared by the assets."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from rar_pipeline.settings import get_settings

GENERATOR_API_KEY_ENV = "RAR_GENERATOR_API_KEY"


class GeneratorResource(dg.ConfigurableResource):
    """The frozen generator that ranks the retriever's candidates. The values shown are the RAR_GENERATOR_BACKEND
    and RAR_GENERATOR_MODEL settings in effect when the code location loaded; a run may pick another backend or
    model in the launchpad. The other RAR_GENERATOR_ settings (endpoint, mode, timeouts, budgets) apply as the
    README lists them. The API key only arrives through the environment variable RAR_GENERATOR_API_KEY (read
    with dg.EnvVar): Dagster shows the variable's name, never its value, and the key is never logged, cached
    or written to metadata."""

    backend: str | None = Field(
        default=None, description="embedding (offline, no LLM), llama_cpp (a local GGUF model) or openai (any "
        "OpenAI-compatible endpoint); empty: RAR_GENERATOR_BACKEND.",
    )
    model: str | None = Field(
        default=None, description="openai: the model name; llama_cpp: a GGUF path (empty: the packaged "
        "Gemma-3-270M); embedding: not used (it ranks with movie_vectors' embedder).",
    )
    api_key: str | None = Field(
        default=None, description="openai only: the API key, from the RAR_GENERATOR_API_KEY environment variable.",
    )

    @classmethod
    def from_settings(cls) -> GeneratorResource:
        """The resource with the backend and model of the RAR_GENERATOR_* settings, as the UI should show them."""
        settings = get_settings()
        return cls(backend=settings.generator_backend, model=settings.generator_model, api_key=generator_api_key())

    def make_generator(self):
        """A fresh generator (close it when done); its response cache lives under RAR_HOME."""
        from training.generator import make_generator
        from training.layout import generator_cache_path

        settings = get_settings()
        backend = self.backend or settings.generator_backend
        options = settings.generator_options() | ({"model": self.model} if self.model is not None else {})
        embedding = _embedding_inputs(settings) if backend == "embedding" else {}
        return make_generator(backend, **options, api_key=self.api_key, cache_path=generator_cache_path(settings.home),
                              **embedding)


def _embedding_inputs(settings) -> dict:
    """The embedding backend uses movie_vectors' embedder and, when that table was built with the
    same model, its stored film vectors (so a round or a report embeds dialogues only)."""
    import numpy as np
    import polars as pl

    store = settings.vector_store()
    embedder = store.embedder
    if not store.exists():
        return {"embedder": embedder}
    stored = store.read_columns(["movie_id", "vector", "model"]).filter(pl.col("model") == embedder.model_name)
    matrix = np.asarray(stored["vector"].to_list(), dtype=np.float32).reshape(stored.height, -1)
    return {"embedder": embedder, "film_vectors": dict(zip(stored["movie_id"].to_list(), matrix))}


def generator_api_key() -> dg.EnvVar | None:
    """``dg.EnvVar(RAR_GENERATOR_API_KEY)`` when the variable is set, else None (local and offline
    backends need no key, and Dagster fails a run whose resource names an unset EnvVar)."""
    return dg.EnvVar(GENERATOR_API_KEY_ENV) if os.environ.get(GENERATOR_API_KEY_ENV) else None


class StepValues(dg.FilesystemIOManager):
    """Where steps hand each other small values (the shard descriptions of movie_vectors): pickles under
    `$RAR_HOME/dagster_io`, so a step in another process or pod (the k8s executor) reads what a step wrote,
    on the local disk or on the object store."""


def step_io_manager() -> StepValues:
    """The io_manager of every step, under RAR_HOME."""
    return StepValues(base_dir=str(get_settings().home / "dagster_io"))


RESOURCES: dict = {
    "generator": GeneratorResource.from_settings(),
    "io_manager": step_io_manager(),
}
