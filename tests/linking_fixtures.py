"""A movie_corpus frame for the Linker from (movie_id, title, year, aliases, IMDb votes) tuples."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from corpus_build.schema import CORPUS_SCHEMA


def corpus_frame(films: Iterable[tuple]) -> pl.DataFrame:
    """Every corpus column, the other fields empty."""
    rows = [{c: None for c in CORPUS_SCHEMA} | {"movie_id": i, "title": t, "year": y, "aliases": a, "imdb_votes": v,
                                                "genres": [], "directors": [], "cast": [], "sources": ["x"]}
            for i, t, y, a, v in films]
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)
