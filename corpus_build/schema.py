"""The movie corpus schema: the contract between corpus building, vectors, linking and training."""

from __future__ import annotations

import polars as pl

# One row per film. List columns hold names in billing / source order.
CORPUS_SCHEMA: dict[str, pl.DataType] = {
    "movie_id": pl.String,  # IMDb id (tt0133093) when known, else "rar:" + hash of title + year
    "title": pl.String,  # unicode-normalised (NFC), articles in natural order ("The Matrix")
    "year": pl.Int32,
    "genres": pl.List(pl.String),
    "directors": pl.List(pl.String),
    "cast": pl.List(pl.String),  # top billed, at most CAST_LIMIT
    "runtime_minutes": pl.Int32,
    "plot": pl.String,
    "aliases": pl.List(pl.String),  # other titles seen for the film across sources
    "imdb_rating": pl.Float32,
    "imdb_votes": pl.Int64,
    "sources": pl.List(pl.String),  # which upstreams contributed the row
    "content_hash": pl.String,  # hash of movie_text(row): what is embedded
}

CAST_LIMIT = 10

# Rows rejected anywhere in corpus building, with the reason; never silently dropped.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,
    "file": pl.String,
    "line": pl.Int64,  # 1-based line or record number in the file, null when unknown
    "reason": pl.String,
    "raw": pl.String,  # the rejected record as text (truncated)
}


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)
