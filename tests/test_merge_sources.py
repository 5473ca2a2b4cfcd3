"""From fetched files on disk to the written corpus: which sources are read or skipped (and why), reader
quarantine carried into the merge, the most-voted sample, and the two Parquet tables written.

Real MovieLens-format files in tmp_path, read by the real readers of the source registry.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from pathlib import Path

import polars as pl
import pytest

from corpus_build.merge import (
    SOURCE_COUNTERS,
    build_corpus,
    default_max_year,
    local_files,
    merge_rows,
    most_voted,
    read_fetched_sources,
    read_source,
    write_corpus,
)
from corpus_build.movie_text import rar_movie_id
from corpus_build.schema import CORPUS_SCHEMA, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import RemoteFile, SourceResult, SourceSpec
from corpus_build.sources.movielens import read_movielens_csv
from corpus_build.sources.registry import SOURCES

# movies.csv lines of MovieLens (movieId,title,genres) and links.csv (movieId,imdbId,tmdbId)
MOVIES = "movieId,title,genres\n1,Heat (1995),Action|Crime\n2,Jumanji (1995),Adventure\n3,Casino (1995),Drama\n"
LINKS = "movieId,imdbId,tmdbId\n1,0113277,949\n2,0113497,8844\n3,0112641,524\n"
# ml-1m movies.dat (latin-1, no IMDb ids): 'Heat' joins the MovieLens film by title + year
MOVIES_DAT = "1::Heat (1995)::Action\n2::Nixon (1995)::Drama\n"

# MovieLens with links.csv optional: a release without it still gives films (without IMDb ids)
OPTIONAL_LINKS = SourceSpec(
    name="movielens_nolinks",
    description="movies.csv, links.csv when fetched",
    files=(RemoteFile(name="movies.csv", url=None), RemoteFile(name="links.csv", url=None, optional=True)),
    reader=partial(read_movielens_csv, source="movielens_nolinks"),
    profiles=(),
)


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_bytes(text.encode("latin-1"))
    return folder


def test_local_files_need_every_required_file(tmp_path):
    both = write(tmp_path / "both", movies_csv=MOVIES, links_csv=LINKS)
    assert local_files(SOURCES["movielens"], both) == {"movies.csv": both / "movies.csv", "links.csv": both / "links.csv"}
    only_movies = write(tmp_path / "only_movies", movies_csv=MOVIES)
    assert local_files(SOURCES["movielens"], only_movies) is None  # links.csv is required there
    assert local_files(OPTIONAL_LINKS, only_movies) == {"movies.csv": only_movies / "movies.csv"}
    only_links = write(tmp_path / "only_links", links_csv=LINKS)
    assert local_files(OPTIONAL_LINKS, only_links) is None  # the optional file alone is not a source
    (tmp_path / "empty").mkdir()
    assert local_files(OPTIONAL_LINKS, tmp_path / "empty") is None


def test_read_source_leaves_out_files_that_are_not_there(tmp_path):
    folder = write(tmp_path / "ml", movies_csv=MOVIES)
    result = read_source(OPTIONAL_LINKS, {"movies.csv": folder / "movies.csv", "links.csv": folder / "links.csv"})
    assert result.rows["title"].to_list() == ["Heat", "Jumanji", "Casino"]
    assert result.rows["imdb_id"].to_list() == [None, None, None]  # no links.csv: no ids, no error


def test_read_fetched_sources_reads_what_is_there_and_says_why_not(tmp_path):
    raw = tmp_path / "raw"
    write(raw / "movielens", movies_csv=MOVIES, links_csv=LINKS)
    write(raw / "movielens_1m", movies_dat=MOVIES_DAT)
    write(raw / "movielens_small", movies_csv=MOVIES)  # links.csv missing
    write(raw / "movielens_nolinks", movies_csv=MOVIES)
    specs = [SOURCES["movielens"], SOURCES["movielens_small"], SOURCES["movielens_1m"], SOURCES["wikipedia"],
             OPTIONAL_LINKS]
    results, skipped = read_fetched_sources(specs, raw)
    assert list(results) == ["movielens", "movielens_1m", "movielens_nolinks"]
    assert skipped == {
        "movielens_small": f"files not fetched under {raw / 'movielens_small'}",
        "wikipedia": f"files not fetched under {raw / 'wikipedia'}",
    }
    assert results["movielens"].rows["imdb_id"].to_list() == ["tt0113277", "tt0113497", "tt0112641"]
    assert results["movielens_1m"].rows["title"].to_list() == ["Heat", "Nixon"]
    assert results["movielens_nolinks"].rows.height == 3

    # and into the corpus: Heat from ml-1m joins the MovieLens film; Nixon is a film of its own
    merged = build_corpus({k: results[k] for k in ("movielens", "movielens_1m")}, max_year=2000)
    assert merged.corpus["movie_id"].to_list() == [rar_movie_id("Nixon", 1995), "tt0112641", "tt0113277", "tt0113497"]
    heat = merged.corpus.filter(pl.col("movie_id") == "tt0113277").row(0, named=True)
    assert heat["sources"] == ["movielens", "movielens_1m"] and heat["genres"] == ["Action", "Crime"]
    assert merged.source_stats["movielens_1m"]["matched_title_year"] == 1
    assert merged.source_stats["movielens_1m"]["new_films"] == 1


def test_build_corpus_passes_its_options_and_counts_every_quarantined_row(tmp_path):
    """Three films from movies.csv plus a line the reader rejects; max_year=1994 pushes every 1995 film
    into the merge quarantine: 1 reader row + 3 merge rows = 4 quarantined, 0 films."""
    folder = write(tmp_path / "ml", movies_csv=MOVIES + "4;a line cut short\n", links_csv=LINKS)
    result = read_movielens_csv({"movies.csv": folder / "movies.csv", "links.csv": folder / "links.csv"})
    assert result.quarantine.height == 1
    merged = build_corpus({"movielens": result}, max_year=1994)
    assert merged.corpus.height == 0
    assert merged.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert merged.stats["quarantined"] == 4
    assert merged.quarantine_reasons()["year outside 1874..1994"] == 3
    assert merged.source_stats["movielens"]["reader_quarantined"] == 1
    assert merged.source_stats["movielens"]["quarantined"] == 3


def test_a_source_whose_reader_kept_no_row_still_gets_its_counters():
    empty = pl.DataFrame(schema=SOURCE_ROW_SCHEMA)
    rejected = pl.DataFrame([{"source": "wikipedia", "file": "movies-1990s.json", "line": 1, "reason": "not JSON",
                              "raw": "["}], schema=QUARANTINE_SCHEMA)
    merged = build_corpus({"wikipedia": SourceResult(rows=empty, quarantine=rejected)})
    assert merged.source_stats == {"wikipedia": {**dict.fromkeys(SOURCE_COUNTERS, 0), "reader_quarantined": 1}}
    assert merged.stats["quarantined"] == 1 and merged.corpus.schema == pl.Schema(CORPUS_SCHEMA)


def test_build_corpus_fuzzy_threshold_default_and_option():
    """'midnight rain' vs 'midnight ruin': one substitution = 2 indels over 26 characters, ratio 92.3: a match
    at the default 92, none at 93."""
    def rows(source, **row):
        return pl.DataFrame([{c: None for c in SOURCE_ROW_SCHEMA} | dict(source=source, source_key="1", genres=[],
                                                                           directors=[], cast=[], aliases=[]) | row],
                            schema=SOURCE_ROW_SCHEMA)

    no_rejects = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    results = {"imdb": SourceResult(rows("imdb", imdb_id="tt0000501", title="Midnight Rain", year=1950), no_rejects),
               "wikipedia": SourceResult(rows("wikipedia", title="Midnight Ruin", year=1950, plot="p"), no_rejects)}
    assert build_corpus(results).corpus["movie_id"].to_list() == ["tt0000501"]
    assert build_corpus(results, fuzzy_threshold=93).corpus.height == 2
    assert merge_rows([r.rows for r in results.values()]).corpus.height == 1


def test_films_announced_for_next_year_are_kept_and_later_ones_quarantined():
    next_year = dt.date.today().year + 1
    assert default_max_year() == next_year
    rows = pl.DataFrame([{c: None for c in SOURCE_ROW_SCHEMA} | dict(source="wikipedia", source_key=str(y), title=t,
                                                                       year=y, genres=[], directors=[], cast=[], aliases=[])
                         for t, y in [("Announced", next_year), ("Too Far Ahead", next_year + 1)]],
                        schema=SOURCE_ROW_SCHEMA)
    merged = merge_rows([rows])
    assert merged.corpus["title"].to_list() == ["Announced"]
    assert merged.quarantine["reason"].to_list() == [f"year outside 1874..{next_year}: {next_year + 1}"]
    # an explicit max_year wins over the default
    assert merge_rows([rows], max_year=next_year - 1).corpus.height == 0


def corpus_with_votes() -> pl.DataFrame:
    rows = [("tt0000001", 500), ("tt0000002", None), ("tt0000003", 900), ("tt0000004", 500), ("tt0000005", 10),
            ("tt0000006", 0)]
    return pl.DataFrame([{c: None for c in CORPUS_SCHEMA} | {"movie_id": m, "title": m, "imdb_votes": v} for m, v in rows],
                        schema=CORPUS_SCHEMA)


@pytest.mark.parametrize(
    "films, expected",
    [
        (1, ["tt0000003"]),
        (2, ["tt0000001", "tt0000003"]),  # 500 votes twice: the smaller movie_id
        (3, ["tt0000001", "tt0000003", "tt0000004"]),
        (5, ["tt0000001", "tt0000003", "tt0000004", "tt0000005", "tt0000006"]),  # no vote count comes last
        (6, ["tt0000001", "tt0000002", "tt0000003", "tt0000004", "tt0000005", "tt0000006"]),
    ],
)
def test_most_voted_keeps_the_best_known_films_in_corpus_order(films, expected):
    assert most_voted(corpus_with_votes(), films)["movie_id"].to_list() == expected


def test_write_corpus_writes_both_tables(tmp_path):
    rows = pl.DataFrame([{c: None for c in SOURCE_ROW_SCHEMA} | dict(source="wikipedia", source_key=k, title=t, year=y,
                                                                       genres=[], directors=[], cast=[], aliases=[])
                         for k, t, y in [("1", "Fine", 1990), ("2", "Too Early", 1700)]], schema=SOURCE_ROW_SCHEMA)
    merged = merge_rows([rows], max_year=2000)
    corpus_path, quarantine_path = tmp_path / "tables" / "movie_corpus.parquet", tmp_path / "q" / "quarantine.parquet"
    write_corpus(merged, corpus_path, quarantine_path)
    assert pl.read_parquet(corpus_path).equals(merged.corpus)
    assert pl.read_parquet(quarantine_path).equals(merged.quarantine)
    assert pl.read_parquet(corpus_path)["title"].to_list() == ["Fine"]
    assert pl.read_parquet(quarantine_path)["reason"].to_list() == ["year outside 1874..2000: 1700"]
