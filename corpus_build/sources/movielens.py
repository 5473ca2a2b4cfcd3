"""MovieLens catalogues -> source rows: ``movies.csv`` + ``links.csv`` (ml-latest-small, ml-25m, ...) and
ml-1m's ``movies.dat``.

Titles look like ``"Matrix, The (1999)"`` or ``"City of Lost Children, The (Cité des enfants perdus, La)
(1995)"``: the year comes off the end, trailing parenthesised alternative titles become aliases, and
trailing articles are put back in front (``The City of Lost Children``, alias ``La Cité des enfants
perdus``). Genres are ``A|B``; ``(no genres listed)`` is an empty list. ``links.csv`` gives the IMDb id.

Encodings: the CSV releases are UTF-8, decoded line by line; a line that is not valid UTF-8 goes to the
quarantine with its file and line (decoding the whole file as latin-1 instead would garble every
accented title of the file). ml-1m's ``movies.dat`` is ISO-8859-1 by specification and read as such.

``movies.csv`` is parsed line by line as *movieId, title, genres* where the id is the text before the
first comma and the genres the text after the last comma, so both the official file (a title with a comma
is quoted, ``"`` doubled inside) and the copy in ``../shared/data/movielens/ml-25m-metadata`` (quoting
stripped, ``", "`` inside titles turned into ``";"``) parse the same way. A file with no quoted title at
all is taken to be such a stripped copy and its ``;`` are turned back into ``", "`` (stats
``semicolons_restored``); the rare title with a real ``;`` (``Steins;Gate``) is then changed too.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from corpus_build.movie_text import normalise_imdb_id, restore_article
from corpus_build.schema import QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError, SourceResult, string_lists

MOVIES_CSV, LINKS_CSV, MOVIES_DAT = "movies.csv", "links.csv", "movies.dat"
NO_GENRES = "(no genres listed)"
RAW_CHARS = 500

_CSV_LINE = re.compile(r"^(?P<id>\d+),(?P<title>.*),(?P<genres>[^,]*)$")
_DAT_LINE = re.compile(r"^(?P<id>\d+)::(?P<title>.*)::(?P<genres>[^:]*)$")
_LINK_LINE = re.compile(r"^(?P<id>\d+),(?P<imdb>\d*),(?P<tmdb>\d*)$")
_YEAR = re.compile(r"\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$")
_AKA = re.compile(r"^(?:a\.k\.a\.|aka)\s+", re.I)


def read_movielens_csv(files: dict[str, Path], source: str = "movielens") -> SourceResult:
    """``movies.csv`` (+ ``links.csv`` when present) of a MovieLens release."""
    quarantine: list[dict] = []
    movies_path = Path(files[MOVIES_CSV])
    lines = _lines(movies_path, "movieId,title,genres", source=source, quarantine=quarantine)
    undecodable = len(quarantine)
    matches = [_CSV_LINE.match(text) for _, text in lines]
    stripped = not any(match and match["title"].startswith('"') for match in matches)
    rows, restored = [], 0
    for (number, text), match in zip(lines, matches):
        if not match:
            quarantine.append(_bad(source, movies_path, number, "not movieId,title,genres", text))
            continue
        title = _unquote(match["title"])
        if stripped and ";" in title:
            title, restored = title.replace(";", ", "), restored + 1
        rows.append(_row(source, match["id"], title, match["genres"], number, movies_path, quarantine, text))
    links = _read_links(Path(files[LINKS_CSV]), source, quarantine) if LINKS_CSV in files else {}
    frame = _frame([r for r in rows if r is not None], links, source, quarantine)
    stats = {"semicolons_restored": float(restored), "quotes_stripped_copy": float(stripped),
             "undecodable_lines": float(undecodable)}
    return _result(frame, quarantine, len(lines) + undecodable, stats)


def read_movielens_dat(files: dict[str, Path], source: str = "movielens_1m") -> SourceResult:
    """ml-1m ``movies.dat`` (``MovieID::Title (Year)::Genres``, ISO-8859-1); it has no IMDb ids."""
    quarantine: list[dict] = []
    path = Path(files[MOVIES_DAT])
    lines = _lines(path, header=None, encoding="latin-1")
    rows = []
    for number, text in lines:
        match = _DAT_LINE.match(text)
        if not match:
            quarantine.append(_bad(source, path, number, "not MovieID::Title::Genres", text))
            continue
        rows.append(_row(source, match["id"], match["title"], match["genres"], number, path, quarantine, text))
    frame = _frame([r for r in rows if r is not None], {}, source, quarantine)
    return _result(frame, quarantine, len(lines), {})


def split_title(raw: str) -> tuple[str, int | None, list[str]]:
    """``"Postman, The (Postino, Il) (1994)"`` -> ``("The Postman", 1994, ["Il Postino"])``."""
    text = raw.strip()
    year = None
    if match := _YEAR.search(text):
        year, text = int(match["year"]), text[: match.start()]
    aliases: list[str] = []
    while text.endswith(")"):
        start = _matching_open(text)
        if start is None or not text[:start].strip():
            break
        inner = _AKA.sub("", text[start + 1 : -1].strip())
        if inner:
            aliases.insert(0, restore_article(inner))
        text = text[:start].rstrip()
    title = restore_article(text)
    return title, year, [a for a in aliases if a != title]


def _matching_open(text: str) -> int | None:
    """Index of the ``(`` matching the final ``)``, or None when unbalanced."""
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return None


def _lines(path: Path, header: str | None, encoding: str = "utf-8", source: str | None = None,
           quarantine: list[dict] | None = None) -> list[tuple[int, str]]:
    """(1-based line number, text) of every non-empty line after the header (which must match).

    Each line is decoded on its own; one that is not valid ``encoding`` is quarantined (when a
    ``quarantine`` list is given, else it is an error) and the other lines are unaffected.
    """
    lines: list[tuple[int, str]] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            lines.append((number, raw.decode(encoding).rstrip("\r")))
        except UnicodeDecodeError as error:
            if quarantine is None or number == 1:
                raise SourceFormatError(path, f"not valid {encoding.upper()}: {error.reason} at byte {error.start}", line=number) from None
            reason = f"line is not valid {encoding.upper()}: {error.reason} at byte {error.start}"
            quarantine.append(_bad(source, path, number, reason, raw.decode(encoding, "backslashreplace")))
    if header is not None:
        found = lines[0][1].lstrip("\ufeff") if lines else ""
        if found != header:
            raise SourceFormatError(path, f"unexpected header {found[:200]!r}; expected {header!r}", line=1)
        lines = lines[1:]
    return [(n, line) for n, line in lines if line.strip()]


def _unquote(title: str) -> str:
    if len(title) >= 2 and title.startswith('"') and title.endswith('"'):
        return title[1:-1].replace('""', '"')
    return title


def _row(source, movie_id, raw_title, genres, number, path, quarantine, text) -> dict | None:
    title, year, aliases = split_title(raw_title)
    if not title:
        quarantine.append(_bad(source, path, number, "empty title", text))
        return None
    genre_list = [] if genres.strip() in ("", NO_GENRES) else [g for g in genres.strip().split("|") if g]
    return {"source_key": movie_id, "title": title, "year": year, "genres": genre_list,
            "aliases": aliases, "_line": number, "_text": text, "_file": str(path)}


def _read_links(path: Path, source: str, quarantine: list[dict]) -> dict[str, str | None]:
    links: dict[str, str | None] = {}
    for number, text in _lines(path, "movieId,imdbId,tmdbId", source=source, quarantine=quarantine):
        match = _LINK_LINE.match(text)
        if not match:
            quarantine.append(_bad(source, path, number, "not movieId,imdbId,tmdbId", text))
            continue
        links[match["id"]] = normalise_imdb_id(match["imdb"]) if match["imdb"] else None
    return links


def _frame(rows: list[dict], links: dict, source: str, quarantine: list[dict]) -> pl.DataFrame:
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row["source_key"] in seen:
            quarantine.append(_bad(source, row["_file"], row["_line"], "duplicate movieId", row["_text"]))
            continue
        seen.add(row["source_key"])
        kept.append(row)
    frame = pl.DataFrame(
        {
            "source_key": [r["source_key"] for r in kept],
            "imdb_id": [links.get(r["source_key"]) for r in kept],
            "title": [r["title"] for r in kept],
            "year": [r["year"] for r in kept],
        },
        schema={"source_key": pl.String, "imdb_id": pl.String, "title": pl.String, "year": pl.Int32},
    ).with_columns(genres=string_lists([r["genres"] for r in kept]),
                   aliases=string_lists([r["aliases"] for r in kept]))
    empty = pl.lit([], dtype=pl.List(pl.String))
    return frame.with_columns(
        source=pl.lit(source), directors=empty, cast=empty, runtime_minutes=pl.lit(None, pl.Int32),
        plot=pl.lit(None, pl.String), imdb_rating=pl.lit(None, pl.Float32), imdb_votes=pl.lit(None, pl.Int64),
    ).select(list(SOURCE_ROW_SCHEMA)).cast(SOURCE_ROW_SCHEMA)


def _bad(source: str, path, line: int | None, reason: str, raw: str) -> dict:
    return {"source": source, "file": str(path), "line": line, "reason": reason, "raw": raw[:RAW_CHARS]}


def _result(frame: pl.DataFrame, quarantine: list[dict], lines: int, stats: dict) -> SourceResult:
    bad = pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA)
    stats = {**stats, "rows_read": float(lines), "films": float(frame.height),
             "quarantined": float(bad.height), "with_imdb_id": float(frame["imdb_id"].is_not_null().sum()),
             "without_year": float(frame["year"].is_null().sum())}
    return SourceResult(rows=frame, quarantine=bad, stats=stats)
