"""Data-quality rules for ``movie_corpus``: plain checks and a Great Expectations 1.x suite.

The suite validates a frame of scalar columns plus list lengths: GX is ~20x slower on frames that hold
list columns, and lengths are what the rules need. GX is imported inside the function (~3.5 s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import polars as pl

from corpus_build.merge import FIRST_FILM_YEAR

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


def row_count_ok(current: int, previous: int | None, min_ratio: float = 0.95) -> bool:
    """The corpus may grow or shrink a little, never lose more than 5% between materialisations."""
    return previous is None or current >= min_ratio * previous
