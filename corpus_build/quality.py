"""Data-quality rules for ``movie_corpus``: plain checks and a Great Expectations 1.x suite.

The suite validates a frame of scalar columns plus list lengths: GX is ~20x slower on frames that hold
list columns, and lengths are what the rules need. GX is imported inside the function (~3.5 s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import polars as pl

from corpus_build.merge import FIRST_FILM_YEAR, adjacent_year_blocks
from corpus_build.normalise import title_keys

# UTF-8 text decoded as latin-1 or cp1252 ("LumiÃ¨re", "â€™", "Â "), and U+FFFD, which a lossy decoder
# puts where a byte was invalid. Real titles almost never hold these sequences (none of the 82.5k
# films of the mirror corpus does), so their share measures a decoding accident upstream.
MOJIBAKE = "[ÃÂ][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u2013-\u203a\u2122]|â€|\ufffd"
GARBLED_TITLES_MAX_SHARE = 0.001
# A refresh may add a few films without an IMDb id that look like films already there (a remake in an
# adjacent year); more than this many means rows that used to join a film now fail to (split films).
SPLIT_FILMS_MAX, SPLIT_FILMS_MAX_SHARE = 5, 0.0001
SPLIT_MATCH_SCORE = 92.0  # the merge's fuzzy threshold
# Share of the source records read that the corpus build may reject; more means an upstream changed its
# format or a file arrived damaged (the mirror's full profile rejects none, the sample profile a handful).
QUARANTINE_MAX_SHARE = 0.05

LIST_COLUMNS = ("genres", "directors", "cast", "aliases", "sources")


@dataclass
class SuiteOutcome:
    success: bool
    evaluated: int
    failed: list[dict] = field(default_factory=list)  # expectation type, column, unexpected count/sample


def scalar_view(corpus: pl.DataFrame) -> pl.DataFrame:
    """Scalar columns plus ``n_<list column>`` lengths: what the suite validates."""
    scalars = [c for c, t in corpus.schema.items() if not isinstance(t, pl.List)]
    lengths = [pl.col(c).list.len().alias(f"n_{c}") for c in LIST_COLUMNS if c in corpus.columns]
    return corpus.select(*scalars, *lengths, pl.col("title").str.strip_chars().str.len_chars().alias("title_length"))


def run_expectation_suite(corpus: pl.DataFrame, max_year: int) -> SuiteOutcome:
    """Validate ``movie_corpus`` with a Great Expectations suite; return what failed and why."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # offline: no usage statistics
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame = scalar_view(corpus).to_pandas()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("movie_corpus_source")
        .add_dataframe_asset("movie_corpus")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="movie_corpus")
    for expectation in _expectations(gxe, max_year):
        suite.add_expectation(expectation)
    result = batch.validate(suite)
    failed = [
        {
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "unexpected_count": r.result.get("unexpected_count"),
            "sample": [str(v) for v in (r.result.get("partial_unexpected_list") or [])[:5]],
        }
        for r in result.results
        if not r.success
    ]
    return SuiteOutcome(success=bool(result.success), evaluated=len(result.results), failed=failed)


def _expectations(gxe, max_year: int) -> list:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column="movie_id"),
        gxe.ExpectColumnValuesToBeUnique(column="movie_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="movie_id", regex=r"^(tt\d{7,}|rar:[0-9a-f]{12})$"),
        gxe.ExpectColumnValuesToBeBetween(column="title_length", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="year", min_value=FIRST_FILM_YEAR, max_value=max_year),
        # films with an IMDb id may lack a year (announced titles); rows without one never do
        gxe.ExpectColumnValuesToNotBeNull(column="year", mostly=0.9),
        gxe.ExpectColumnValuesToBeBetween(column="imdb_rating", min_value=1.0, max_value=10.0),
        gxe.ExpectColumnValuesToBeBetween(column="imdb_votes", min_value=0),
        # a handful of experimental films run for days; the bulk must be feature length or shorter
        gxe.ExpectColumnValuesToBeBetween(column="runtime_minutes", min_value=1, max_value=1000, mostly=0.999),
        gxe.ExpectColumnValuesToBeBetween(column="n_sources", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="n_cast", min_value=0, max_value=10),
        gxe.ExpectColumnValueLengthsToEqual(column="content_hash", value=16),
    ]


# --- the blocking rules, as plain functions (the asset checks call these) ----------------------


def duplicate_ids(corpus: pl.DataFrame) -> pl.DataFrame:
    """movie_ids that occur more than once, with their count."""
    return corpus.group_by("movie_id").len().filter(pl.col("len") > 1).sort("len", descending=True)


def empty_titles(corpus: pl.DataFrame) -> pl.DataFrame:
    return corpus.filter(pl.col("title").is_null() | (pl.col("title").str.strip_chars() == ""))


def years_out_of_range(corpus: pl.DataFrame, max_year: int) -> pl.DataFrame:
    """Films whose year is known and impossible (a missing year is allowed for IMDb-id films only)."""
    year = pl.col("year")
    undated_without_id = year.is_null() & ~pl.col("movie_id").str.starts_with("tt")
    return corpus.filter(undated_without_id | ~year.is_between(FIRST_FILM_YEAR, max_year))


def garbled_titles(corpus: pl.DataFrame) -> pl.DataFrame:
    """Films whose title (or an alias) shows mojibake or replacement characters (:data:`MOJIBAKE`)."""
    aliases = pl.col("aliases").list.eval(pl.element().str.contains(MOJIBAKE)).list.any().fill_null(False)
    return corpus.filter(pl.col("title").str.contains(MOJIBAKE) | aliases)


def garbled_titles_ok(garbled: int, films: int) -> bool:
    return garbled <= GARBLED_TITLES_MAX_SHARE * films


def films_split_from(previous: pl.DataFrame | None, current: pl.DataFrame) -> pl.DataFrame:
    """New ``rar:`` films of ``current`` whose title matches a film of ``previous`` (same or adjacent year).

    A film the last materialisation knew under one id that now comes back as a second film: rows that
    used to join it no longer do (a garbled title, a broken link file). Columns: movie_id, title, year,
    previous_movie_id, previous_title. Both frames need movie_id, title, year.
    """
    from rapidfuzz import fuzz, process

    schema = {"movie_id": pl.String, "title": pl.String, "year": pl.Int32,
              "previous_movie_id": pl.String, "previous_title": pl.String}
    if previous is None or previous.is_empty():
        return pl.DataFrame(schema=schema)
    new = current.filter(pl.col("movie_id").str.starts_with("rar:") & pl.col("year").is_not_null()).join(
        previous.select("movie_id"), on="movie_id", how="anti")
    if new.is_empty():
        return pl.DataFrame(schema=schema)
    old = previous.filter(pl.col("year").is_not_null()).select(
        pl.col("movie_id").alias("previous_movie_id"), pl.col("title").alias("previous_title"), "year")
    old = old.with_columns(title_keys(old["previous_title"]).alias("_old_key"))
    new = new.select("movie_id", "title", "year").with_columns(title_keys(new["title"]).alias("_key"))
    import numpy as np

    found = []
    for block, choices in adjacent_year_blocks(new, old):
        scores = process.cdist(block["_key"].to_list(), choices["_old_key"].to_list(), scorer=fuzz.ratio,
                               score_cutoff=SPLIT_MATCH_SCORE, dtype=np.uint8)
        for qi in np.flatnonzero(scores.max(axis=1) > 0):
            if not block["_key"][int(qi)]:
                continue
            hit = choices.row(int(scores[qi].argmax()), named=True)
            found.append({**{c: block[c][int(qi)] for c in ("movie_id", "title", "year")},
                          "previous_movie_id": hit["previous_movie_id"], "previous_title": hit["previous_title"]})
    return pl.DataFrame(found, schema=schema)


def films_split_since(previous_path, corpus: pl.DataFrame) -> pl.DataFrame | None:
    """:func:`films_split_from` against the corpus file at ``previous_path`` (read before it is replaced);
    None when there is nothing comparable: no file, or one built from another set of sources (a profile
    switch legitimately turns IMDb films into ``rar:`` ones)."""
    from corpus_build.storage import as_path, read_parquet

    if not as_path(previous_path).is_file():
        return None
    previous = read_parquet(previous_path, columns=["movie_id", "title", "year", "sources"])
    sources = [set(frame["sources"].explode().drop_nulls().unique().to_list()) for frame in (previous, corpus)]
    if sources[0] != sources[1]:
        return None
    return films_split_from(previous, corpus)


def split_films_ok(split: int, films: int) -> bool:
    return split <= max(SPLIT_FILMS_MAX, SPLIT_FILMS_MAX_SHARE * films)


def row_count_ok(current: int, previous: int | None, min_ratio: float = 0.95) -> bool:
    """The corpus may grow or shrink a little, never lose more than 5% between materialisations."""
    return previous is None or current >= min_ratio * previous
