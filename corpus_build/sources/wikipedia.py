"""Wikipedia movie data (github.com/prust/wikipedia-movie-data) -> source rows with plots.

One JSON file per decade (``movies-1900s.json`` ... ``movies-2020s.json``), each a list of
``{title, year, cast, genres, href, extract, ...}``; ``extract`` (the article's lead) is the plot. There
are no IMDb ids: these rows merge on title + year.

Bad input: a record that is not an object, has no title or a non-integer year goes to quarantine with
its record number. A file that is not JSON (or not a JSON list) goes to quarantine as one row naming the
file, the line and column of the error, and the other decades are still read: one damaged download must
not throw away every other decade's good rows, and the quarantine count (plus the corpus row-count
check) makes the loss visible. Only when no file can be read at all is it an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from corpus_build.movie_text import nfc, restore_article
from corpus_build.schema import CAST_LIMIT, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError, SourceResult, string_lists

SOURCE = "wikipedia"
DECADES = tuple(range(1900, 2030, 10))
FILE_NAMES = tuple(f"movies-{decade}s.json" for decade in DECADES)
RAW_CHARS = 500


def read_wikipedia(files: dict[str, Path]) -> SourceResult:
    """Every record of every given decade file; bad files and records go to quarantine."""
    rows: list[dict] = []
    quarantine: list[dict] = []
    files_read = records_read = 0
    for name in sorted(files):
        path = Path(files[name])
        records = _load(path, quarantine)
        if records is None:
            continue
        files_read += 1
        records_read += len(records)
        for number, record in enumerate(records, start=1):
            row = _row(record, path, number, quarantine)
            if row is not None:
                rows.append(row)
    if files and files_read == 0:
        raise SourceFormatError(", ".join(sorted(files)), "no Wikipedia movie file could be read: "
                                + "; ".join(q["reason"] for q in quarantine[:3]))
    frame = _frame(rows)
    bad = pl.DataFrame(quarantine, schema=QUARANTINE_SCHEMA)
    stats = {"files_read": float(files_read), "files_failed": float(len(files) - files_read),
             "rows_read": float(records_read),
             "duplicate_keys": float(frame["source_key"].is_duplicated().sum()),
             "films": float(frame.height), "quarantined": float(bad.height),
             "with_plot": float(frame["plot"].is_not_null().sum())}
    return SourceResult(rows=frame, quarantine=bad, stats=stats)


def _load(path: Path, quarantine: list[dict]) -> list | None:
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        quarantine.append(_bad(path, None, f"file is not UTF-8 JSON: {exc}", raw[:RAW_CHARS].decode("latin-1")))
        return None
    except json.JSONDecodeError as exc:
        quarantine.append(_bad(path, exc.lineno, f"file is not JSON: {exc.msg} (line {exc.lineno}, "
                               f"column {exc.colno})", raw[:RAW_CHARS].decode("utf-8", "replace")))
        return None
    if not isinstance(data, list):
        quarantine.append(_bad(path, None, f"file is JSON but not a list (got {type(data).__name__})",
                               raw[:RAW_CHARS].decode("utf-8", "replace")))
        return None
    return data


def _row(record, path: Path, number: int, quarantine: list[dict]) -> dict | None:
    """One record -> a row dict, or None after quarantining it (``line`` = 1-based record number)."""
    def reject(reason: str) -> None:
        quarantine.append(_bad(path, number, f"record {number}: {reason}", json.dumps(record, ensure_ascii=False)))

    if not isinstance(record, dict):
        return reject("not a JSON object")
    title = record.get("title")
    if not isinstance(title, str) or not title.strip():
        return reject("missing title")
    year = record.get("year")
    if isinstance(year, str) and year.strip().isdigit():
        year = int(year)
    if year is not None and (not isinstance(year, int) or isinstance(year, bool)):
        return reject(f"year is not an integer: {year!r}")
    title = restore_article(title)
    extract = record.get("extract")
    return {
        "source_key": record.get("href") or f"{title} ({year})",
        "title": title,
        "year": year,
        "genres": _strings(record.get("genres")),
        "cast": _strings(record.get("cast"))[:CAST_LIMIT],
        "plot": extract.strip() if isinstance(extract, str) and extract.strip() else None,
    }


def _strings(values) -> list[str]:
    if not isinstance(values, list):
        return []
    return [nfc(v) for v in values if isinstance(v, str) and v.strip()]


def _bad(path: Path, line: int | None, reason: str, raw: str) -> dict:
    return {"source": SOURCE, "file": str(path), "line": line, "reason": reason, "raw": raw[:RAW_CHARS]}


def _frame(rows: list[dict]) -> pl.DataFrame:
    columns = {key: [r[key] for r in rows] for key in ("source_key", "title", "year", "plot")}
    frame = pl.DataFrame(columns, schema={"source_key": pl.String, "title": pl.String, "year": pl.Int32,
                                          "plot": pl.String}).with_columns(
        genres=string_lists([r["genres"] for r in rows]), cast=string_lists([r["cast"] for r in rows]))
    empty = pl.lit([], dtype=pl.List(pl.String))
    return frame.with_columns(
        source=pl.lit(SOURCE), imdb_id=pl.lit(None, pl.String), directors=empty, aliases=empty,
        runtime_minutes=pl.lit(None, pl.Int32), imdb_rating=pl.lit(None, pl.Float32),
        imdb_votes=pl.lit(None, pl.Int64),
    ).select(list(SOURCE_ROW_SCHEMA)).cast(SOURCE_ROW_SCHEMA)
