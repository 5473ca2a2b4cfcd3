"""The movie corpus schema: the contract between corpus building, vectors, linking and training."""

from __future__ import annotations

import polars as pl

# One row per film (CORPUS_COLUMN_DESCRIPTIONS below says what each column holds).
CORPUS_SCHEMA: dict[str, pl.DataType] = {
    "movie_id": pl.String,
    "title": pl.String,
    "year": pl.Int32,
    "genres": pl.List(pl.String),
    "directors": pl.List(pl.String),
    "cast": pl.List(pl.String),
    "runtime_minutes": pl.Int32,
    "plot": pl.String,
    "aliases": pl.List(pl.String),
    "imdb_rating": pl.Float32,
    "imdb_votes": pl.Int64,
    "sources": pl.List(pl.String),
    "content_hash": pl.String,
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
    "line": pl.Int64,
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
    "dataset": pl.String,
    "user_id": pl.String,
    "movie_ids": pl.List(pl.String),
    "train_movie_ids": pl.List(pl.String),
    "val_movie_id": pl.String,
    "test_movie_id": pl.String,
}

# conversation_turns: one row per recommender turn that recommends at least one film.
CONVERSATION_TURNS_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String,
    "split": pl.String,
    "dialog_id": pl.String,
    "turn_index": pl.Int32,
    "context": pl.List(pl.Struct({"role": pl.String, "text": pl.String})),
    "history_movie_ids": pl.List(pl.String),
    "target_movie_ids": pl.List(pl.String),
    "target_mentioned_before": pl.List(pl.Boolean),
}

# What each column of a table means: the column descriptions the Dagster UI shows (dagster/column_schema)
# and the reference for anyone querying the tables (`rar sql`). Keys match the schemas above.
CORPUS_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "movie_id": "Stable film id: the IMDb id (tt0133093) when any source knows it, else rar: + a hash of the "
    "normalised title and year.",
    "title": "Title, Unicode NFC, articles in natural order (The Matrix).",
    "year": "Release year (null when no source gives one).",
    "genres": "Genres on the pipeline's canonical vocabulary, union over the sources.",
    "directors": "Directors, in source order.",
    "cast": f"Top-billed cast, at most {CAST_LIMIT} names.",
    "runtime_minutes": "Runtime in minutes.",
    "plot": f"Plot summary (Wikipedia when present), cut at a word after {PLOT_MAX_CHARS:,} characters.",
    "aliases": "Other titles seen for the film across sources.",
    "imdb_rating": "IMDb average rating (0-10).",
    "imdb_votes": "Number of IMDb votes.",
    "sources": "Upstream sources that contributed the row.",
    "content_hash": "Hash of the film's text (title, year, genres, directors, cast, plot): what movie_vectors "
    "embeds; a change re-embeds the film.",
}

QUARANTINE_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "source": "Upstream source of the rejected record.",
    "file": "File the record came from.",
    "line": "1-based line or record number in the file (null when unknown).",
    "reason": "Why the record was rejected.",
    "raw": "The rejected record as text (truncated).",
}

USER_SEQUENCES_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "dataset": "MovieLens dataset of the history (ml-latest-small, ml-100k, ml-1m, ...).",
    "user_id": "User id inside its dataset.",
    "movie_ids": "The user's whole chronological history as movie_ids.",
    "train_movie_ids": "History without its last two films (what the retriever trains on).",
    "val_movie_id": "Second-to-last film: the validation target.",
    "test_movie_id": "Last film: the test target.",
}

CONVERSATION_TURNS_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "dataset": "Conversation dataset (redial, inspired, reddit, movielens_synthetic).",
    "split": "train, validation or test.",
    "dialog_id": "Dialogue id inside its dataset.",
    "turn_index": "Position of the recommender turn in its dialogue.",
    "context": "The dialogue before this turn: a list of {role, text} utterances.",
    "history_movie_ids": "Films mentioned before this turn, in order.",
    "target_movie_ids": "Films the recommender recommends in this turn.",
    "target_mentioned_before": "Per target: whether it was already mentioned earlier in the dialogue.",
}

VECTORS_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "movie_id": CORPUS_COLUMN_DESCRIPTIONS["movie_id"],
    "vector": "L2-normalised embedding of the film's text (float32).",
    "content_hash": "Hash of the embedded text; equal to movie_corpus's while the film is unchanged.",
    "model": "Embedding model that produced the vector.",
    **{name: CORPUS_COLUMN_DESCRIPTIONS[name] for name in ("title", "year", "genres", "directors", "cast", "plot")},
}
