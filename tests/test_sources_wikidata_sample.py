"""The sample profile's source: bokeh-sampledata's movies.db (the real package file) and a broken one."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

import polars as pl
import pytest

from corpus_build.schema import CAST_LIMIT, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError
from corpus_build.sources.wikidata_sample import read_wikidata_sample


def _package_db() -> Path:
    return Path(str(resources.files("bokeh_sampledata").joinpath("_data/movies.db")))


def test_reads_the_shipped_table():
    result = read_wikidata_sample({"movies.db": _package_db()})
    rows = result.rows
    assert rows.schema == pl.Schema(SOURCE_ROW_SCHEMA)
    assert rows.height == result.stats["films"] >= 17_000
    assert rows["imdb_id"].str.contains(r"^tt\d{7,}$").all()
    assert rows["year"].min() >= 1900 and rows["title"].str.len_chars().min() > 0
    assert rows["cast"].list.len().max() == CAST_LIMIT
    [intouchables] = rows.filter(pl.col("imdb_id") == "tt1675434").to_dicts()
    assert intouchables["title"] == "The Intouchables" and intouchables["year"] == 2011
    assert intouchables["genres"] == ["Biography", "Comedy", "Drama"]
    assert intouchables["directors"] == ["Olivier Nakache", "Éric Toledano"]
    assert intouchables["runtime_minutes"] == 112
    assert result.stats["duplicate_imdb_ids"] == 4  # Apocalypse Now / Redux and one more pair, both kept


def test_table_without_the_columns_is_an_error(tmp_path):
    path = tmp_path / "movies.db"
    with sqlite3.connect(path) as db:
        db.execute("create table omdb (ID integer, Title text)")
    with pytest.raises(SourceFormatError, match=r"movies\.db: table omdb lacks columns"):
        read_wikidata_sample({"movies.db": path})


def test_not_a_database_is_an_error(tmp_path):
    path = tmp_path / "movies.db"
    path.write_text("this is not sqlite")
    with pytest.raises(SourceFormatError, match=r"movies\.db: not a readable SQLite movie table"):
        read_wikidata_sample({"movies.db": path})
