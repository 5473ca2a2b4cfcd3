"""Dagster resources shared by the assets."""

from __future__ import annotations

import os

import dagster as dg

from rar_pipeline.settings import get_settings

GENERATOR_API_KEY_ENV = "RAR_GENERATOR_API_KEY"


class GeneratorResource(dg.ConfigurableResource):
    """The generator that ranks retrieved candidates, configured by the RAR_GENERATOR_* settings; a run
    may pick another ``backend`` or ``model`` (the launchpad's resource config).

    The API key only ever arrives through ``dg.EnvVar`` (see :func:`generator_api_key`): Dagster shows
    the variable's name, never its value, and the key is not logged, cached or put in metadata.
    """

    backend: str | None = None  # embedding | llama_cpp | openai (None: RAR_GENERATOR_BACKEND)
    model: str | None = None  # None: RAR_GENERATOR_MODEL
    api_key: str | None = None

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


RESOURCES: dict = {
    "generator": GeneratorResource(api_key=generator_api_key()),
}
