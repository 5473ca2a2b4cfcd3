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

# Field caps applied when source rows are merged: longer values are broken upstream rows, not data (the
# longest real titles run to ~250 characters, Wikipedia plots to ~1,500), and would cost the fuzzy
# matching, the vectors and every prompt dearly. A longer title quarantines its row; a longer plot is
# cut at a word boundary; a longer name or alias is dropped. Each is counted per source.
TITLE_MAX_CHARS = 500
PLOT_MAX_CHARS = 10_000
NAME_MAX_CHARS = 300  # one cast member, director or alias
LIST_MAX_ITEMS = 50  # names per list (aliases, directors, cast) of one source row

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

# What every source adapter yields before merging: corpus fields plus where the row came from.
# movie_id / content_hash are assigned by the merge; imdb_id is the source's own id when it has one.
SOURCE_ROW_SCHEMA: dict[str, pl.DataType] = {
    "source": pl.String,  # e.g. "imdb", "wikipedia", "movielens", "wikidata_sample"
    "source_key": pl.String,  # the row's id inside its source (tconst, MovieLens movieId, href, ...)
    "imdb_id": pl.String,  # normalised tt-id or null
    **{k: v for k, v in CORPUS_SCHEMA.items() if k not in ("movie_id", "sources", "content_hash")},
}

# user_sequences: one row per (dataset, user); the LRURec leave-one-out split.
USER_SEQUENCES_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String,  # "ml-latest-small", "ml-100k", "ml-1m", ...
    "user_id": pl.String,
    "movie_ids": pl.List(pl.String),  # whole chronological history
    "train_movie_ids": pl.List(pl.String),  # all but the last two
    "val_movie_id": pl.String,  # second to last
    "test_movie_id": pl.String,  # last
}

# conversation_turns: one row per recommender turn that recommends at least one film.
CONVERSATION_TURNS_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String,  # "redial", "inspired", "reddit", "movielens_synthetic"
    "split": pl.String,  # "train", "validation", "test"
    "dialog_id": pl.String,
    "turn_index": pl.Int32,
    "context": pl.List(pl.Struct({"role": pl.String, "text": pl.String})),
    "history_movie_ids": pl.List(pl.String),  # mentioned before this turn, in order
    "target_movie_ids": pl.List(pl.String),  # recommended in this turn
    "target_mentioned_before": pl.List(pl.Boolean),  # per target: already mentioned earlier
}
