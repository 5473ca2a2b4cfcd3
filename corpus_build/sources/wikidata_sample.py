"""The ``sample`` profile's offline source: the movie table that the PyPI package ``bokeh-sampledata``
ships (``bokeh_sampledata/_data/movies.db``, SQLite, table ``omdb``; CC0; ~17.5k films, 1940-2014).

Columns used: imdbID, Title, Year, Runtime (minutes), Genre, Director, Cast (comma-separated lists),
imdbRating, imdbVotes. Two pairs of rows share an IMDb id (e.g. *Apocalypse Now* and its *Redux*): both
are kept; the merge folds them into one film with the other title as an alias. ``Cast`` is in
alphabetical order in this table (not billing order), so the first ``CAST_LIMIT`` names are kept as they
come. ``imdbRating``/``imdbVotes`` are empty in the shipped table and stay null.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import polars as pl

from corpus_build.movie_text import nfc, normalise_imdb_id, restore_article
from corpus_build.schema import CAST_LIMIT, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError, SourceResult, string_lists

SOURCE = "wikidata_sample"
FILE_NAME = "movies.db"
PACKAGE_RESOURCE = ("bokeh_sampledata", "_data/movies.db")
COLUMNS = ("ID", "imdbID", "Title", "Year", "Runtime", "Genre", "Director", "Cast", "imdbRating", "imdbVotes")
RAW_CHARS = 500


def read_wikidata_sample(files: dict[str, Path]) -> SourceResult:
    path = Path(files[FILE_NAME])
    records = _query(path)
    rows, quarantine = [], []
    for number, record in enumerate(records, start=1):
        row = _row(record, path, number, quarantine)
        if row is not None:
            rows.append(row)
    lists = ("genres", "directors", "cast")
    scalars = [k for k in _ROW_KEYS if k not in lists]
    frame = pl.DataFrame({k: [row[i] for row in rows] for i, k in enumerate(_ROW_KEYS) if k in scalars},
                         schema={k: SOURCE_ROW_SCHEMA[k] for k in scalars})
    frame = frame.with_columns(
        string_lists([row[_ROW_KEYS.index(k)] for row in rows], k) for k in lists
    ).with_columns(source=pl.lit(SOURCE), plot=pl.lit(None, pl.String),
                               aliases=pl.lit([], dtype=pl.List(pl.String)))
    frame = frame.select(list(SOURCE_ROW_SCHEMA)).cast(SOURCE_ROW_SCHEMA)
    bad = pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA)
    stats = {"rows_read": float(len(records)), "films": float(frame.height), "quarantined": float(bad.height),
             "with_imdb_id": float(frame["imdb_id"].is_not_null().sum()),
             "duplicate_imdb_ids": float(frame["imdb_id"].drop_nulls().is_duplicated().sum())}
    return SourceResult(rows=frame, quarantine=bad, stats=stats)


_ROW_KEYS = ("source_key", "imdb_id", "title", "year", "genres", "directors", "cast", "runtime_minutes",
             "imdb_rating", "imdb_votes")


def _query(path: Path) -> list[tuple]:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            found = {row[1] for row in db.execute("pragma table_info(omdb)")}
            missing = [c for c in COLUMNS if c not in found]
            if missing:
                raise SourceFormatError(path, f"table omdb lacks columns {missing}")
            quoted = ", ".join(f'"{c}"' for c in COLUMNS)  # "Cast" is an SQL keyword
            return db.execute(f"select {quoted} from omdb order by ID").fetchall()
    except sqlite3.DatabaseError as exc:
        raise SourceFormatError(path, f"not a readable SQLite movie table ({exc})") from exc


def _row(record: tuple, path: Path, number: int, quarantine: list[dict]) -> tuple | None:
    key, imdb, title, year, runtime, genre, director, cast, rating, votes = record
    title = restore_article(title) if isinstance(title, str) else ""
    reason = "empty Title" if not title else None
    if reason is None and year is not None and not isinstance(year, int):
        reason = f"Year is not an integer: {year!r}"
    if reason:
        quarantine.append({"source": SOURCE, "file": str(path), "line": number, "reason": reason,
                           "raw": repr(record)[:RAW_CHARS]})
        return None
    return (str(key), normalise_imdb_id(imdb), title, year, _split(genre), _split(director),
            _split(cast)[:CAST_LIMIT], _int(runtime), rating, _int(votes))


def _split(text) -> list[str]:
    return [nfc(part) for part in text.split(",") if part.strip()] if isinstance(text, str) else []


def _int(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value == value else None
