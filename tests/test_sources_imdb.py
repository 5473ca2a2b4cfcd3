"""The IMDb reader on IMDb-format fixture dumps written by tests/imdb_fixtures.py."""

from __future__ import annotations

import gzip
import unicodedata

import polars as pl
import pytest
from imdb_fixtures import (
    BAD_LINE_COUNT,
    BASICS_ROWS,
    MOVIE_TCONSTS,
    ROWS,
    bad_line_number,
    imdb_lines,
    write_gzip_lines,
    write_imdb_fixtures,
)

from corpus_build.movie_text import normalise_imdb_id
from corpus_build.schema import CAST_LIMIT, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError
from corpus_build.sources.imdb import BASICS, NAMES, PRINCIPALS, RATINGS, read_imdb


@pytest.fixture
def result(tmp_path):
    return read_imdb(write_imdb_fixtures(tmp_path / "imdb"))


def _film(result, tconst: str) -> dict:
    [row] = result.rows.filter(pl.col("source_key") == tconst).to_dicts()
    return row


def test_schema_and_only_non_adult_movies(result):
    assert result.rows.schema == pl.Schema(SOURCE_ROW_SCHEMA)
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert set(result.rows["source_key"]) == MOVIE_TCONSTS
    assert result.rows["source_key"].is_unique().all()
    assert set(result.rows["source"]) == {"imdb"}
    non_movie = sum(r[1] != "movie" for r in BASICS_ROWS)
    adult = sum(r[1] == "movie" and r[4] == "1" for r in BASICS_ROWS)
    assert result.stats["non_movie_titles"] == non_movie == 10
    assert result.stats["adult_movies"] == adult == 3
    assert result.stats["films"] == len(MOVIE_TCONSTS)
    assert result.stats["rows_read"] == len(BASICS_ROWS) + len(ROWS[BASICS][1])
    # adult and non-movie titles are an exclusion, not bad data: never in quarantine
    assert not result.quarantine["raw"].str.contains("Adult|Carmencita|Friends").any()


def test_fields_of_a_full_row(result):
    matrix = _film(result, "tt0133093")
    assert matrix["imdb_id"] == "tt0133093" and matrix["title"] == "The Matrix"
    assert matrix["year"] == 1999 and matrix["runtime_minutes"] == 136
    assert matrix["genres"] == ["Action", "Sci-Fi"]
    assert matrix["directors"] == ["Lana Wachowski", "Lilly Wachowski"]
    # principals are listed out of order in the file; cast follows `ordering`, actors/actresses only
    assert matrix["cast"] == ["Keanu Reeves", "Laurence Fishburne", "Carrie-Anne Moss", "Hugo Weaving"]
    assert matrix["imdb_rating"] == pytest.approx(8.7) and matrix["imdb_votes"] == 2_100_000
    assert matrix["aliases"] == [] and matrix["plot"] is None


def test_nulls_and_limits(result):
    cafe = _film(result, "tt0499000")
    assert cafe["runtime_minutes"] is None and cafe["genres"] == [] and cafe["imdb_rating"] is None
    assert cafe["directors"] == [] and cafe["cast"] == []
    future = _film(result, "tt10000001")
    assert future["year"] is None and future["imdb_id"] == normalise_imdb_id("tt10000001")
    jury = _film(result, "tt0050083")
    assert len(jury["cast"]) == CAST_LIMIT and jury["cast"][0] == "Henry Fonda"
    assert jury["cast"][-1] == f"Juror Actor {CAST_LIMIT}"
    spirited = _film(result, "tt0245429")  # first-billed nconst absent from name.basics: left out
    assert spirited["cast"] == ["Zoë Self"]


def test_same_title_different_years_stay_separate(result):
    hamlets = result.rows.filter(pl.col("title") == "Hamlet").sort("year")
    assert hamlets["year"].to_list() == [1948, 1990, 1996]
    assert hamlets["directors"].to_list() == [["Laurence Olivier"], ["Franco Zeffirelli"],
                                              ["Laurence Olivier"]]


def test_unicode_is_nfc_and_quotes_are_plain_characters(result):
    assert _film(result, "tt0499000")["title"] == "Café Society"
    assert unicodedata.is_normalized("NFC", _film(result, "tt0499000")["title"])
    assert _film(result, "tt0245429")["cast"][0] == unicodedata.normalize("NFC", "Zoe\u0308 Self")
    assert _film(result, "tt0245429")["directors"] == ["宮崎駿"]
    assert _film(result, "tt0245429")["aliases"] == ["千と千尋の神隠し"]
    assert _film(result, "tt0211915")["aliases"] == ["Le fabuleux destin d'Amélie Poulain"]
    assert _film(result, "tt0000777")["title"] == 'Weird: The "Al" Story'


def test_malformed_rows_quarantined_with_file_and_line(result):
    quarantine = result.quarantine
    assert quarantine.height == BAD_LINE_COUNT
    for name, (_, bad) in ROWS.items():
        for index, (text, reason) in enumerate(bad):
            [row] = quarantine.filter(pl.col("raw") == text).to_dicts()
            assert row["file"].endswith(name) and row["source"] == "imdb"
            assert row["line"] == bad_line_number(name, index)
            assert reason in row["reason"]
    # the good row whose rating line is malformed keeps everything else
    assert _film(result, "tt0116477")["imdb_rating"] is None
    assert _film(result, "tt0116477")["directors"] == ["Laurence Olivier"]


def test_clean_fixtures_have_empty_quarantine(tmp_path):
    result = read_imdb(write_imdb_fixtures(tmp_path, malformed=False))
    assert result.quarantine.height == 0 and result.rows.height == len(MOVIE_TCONSTS)


def test_truncated_gzip_names_the_file(tmp_path):
    files = write_imdb_fixtures(tmp_path)
    data = files[PRINCIPALS].read_bytes()
    files[PRINCIPALS].write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceFormatError, match=r"title\.principals\.tsv\.gz, line \d+: truncated"):
        read_imdb(files)


def test_wrong_header_names_file_and_line(tmp_path):
    files = write_imdb_fixtures(tmp_path)
    lines = imdb_lines(RATINGS)
    write_gzip_lines(files[RATINGS], ["tconst\trating\tvotes", *lines[1:]])
    with pytest.raises(SourceFormatError, match=r"title\.ratings\.tsv\.gz, line 1: unexpected header"):
        read_imdb(files)


def test_csv_instead_of_tsv_is_a_header_error(tmp_path):
    files = write_imdb_fixtures(tmp_path)
    write_gzip_lines(files[NAMES], [line.replace("\t", ",") for line in imdb_lines(NAMES)])
    with pytest.raises(SourceFormatError, match="name.basics.tsv.gz, line 1"):
        read_imdb(files)


def test_plain_uncompressed_tsv_is_read(tmp_path):
    files = write_imdb_fixtures(tmp_path)
    plain = tmp_path / "plain-basics.tsv"
    plain.write_bytes(gzip.decompress(files[BASICS].read_bytes()))
    result = read_imdb({**files, BASICS: plain})
    assert result.rows.height == len(MOVIE_TCONSTS)


def test_missing_file_is_named(tmp_path):
    files = write_imdb_fixtures(tmp_path)
    del files[NAMES]
    with pytest.raises(SourceFormatError, match="name.basics.tsv.gz"):
        read_imdb(files)


def test_vectorised_helpers_match_movie_text():
    from corpus_build.movie_text import restore_article
    from corpus_build.sources.imdb import clean_titles, imdb_ids

    titles = ["Matrix, The", "Cafe\u0301  Society ", None, "Plain", "Amants, Les", "Cry, the Beloved Country"]
    assert clean_titles(pl.Series(titles)).to_list() == [restore_article(t) if t else None for t in titles]
    ids = ["tt0133093", "tt10000001", "tt0000000", "tt00012345", "tt1"]
    assert imdb_ids(pl.Series(ids)).to_list() == [normalise_imdb_id(t) for t in ids]


def test_no_files_at_all_is_an_empty_result():
    result = read_imdb({})
    assert result.rows.height == 0 and result.rows.schema == pl.Schema(SOURCE_ROW_SCHEMA)


def test_same_title_other_original_title_becomes_alias(result):
    dunes = result.rows.filter(pl.col("title") == "Dune").sort("year").to_dicts()
    assert [(d["year"], d["aliases"], d["directors"]) for d in dunes] == [
        (1984, [], ["David Lynch"]), (2021, ["Dune: Part One"], ["Denis Villeneuve"])]
    assert _film(result, "tt0000439")["year"] == 1903  # early years are kept


def test_full_scale_generator_writes_what_the_reader_reads(tmp_path):
    """benchmarks/make_imdb_dumps.py at a tiny scale: valid IMDb format, seeded, malformed lines quarantined."""
    import subprocess
    import sys
    from pathlib import Path

    from corpus_build.sources.imdb import COLUMNS

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "make_imdb_dumps.py"
    args = ["--movies", "1500", "--names", "2000", "--seed", "3", "--malformed", "4"]
    for folder in ("a", "b"):
        subprocess.run([sys.executable, str(script), str(tmp_path / folder), *args], check=True,
                       capture_output=True)
    assert all((tmp_path / "a" / n).read_bytes() != b"" for n in COLUMNS)
    result = read_imdb({n: tmp_path / "a" / n for n in COLUMNS})
    again = read_imdb({n: tmp_path / "b" / n for n in COLUMNS})
    assert result.rows.equals(again.rows)  # seeded: the same dumps twice
    assert 1400 < result.rows.height < 1500  # ~1.2% adult titles dropped
    assert result.quarantine.height == 4 and result.stats["non_movie_titles"] > 400
    assert (result.rows["cast"].list.len() > 0).mean() > 0.95
    assert result.rows["imdb_rating"].is_not_null().mean() > 0.7
