"""Wikipedia movie data reader: per-decade JSON, plots, bad files and records."""

from __future__ import annotations

import json

import polars as pl
import pytest

from corpus_build.schema import CAST_LIMIT, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError
from corpus_build.sources.wikipedia import read_wikipedia

NINETIES = [
    {"title": "The Adventures of Ford Fairlane", "year": 1990, "cast": ["Andrew Dice Clay", "Wayne Newton"],
     "genres": ["Action", "Comedy"], "href": "The_Adventures_of_Ford_Fairlane",
     "extract": "The Adventures of Ford Fairlane is a 1990 American action comedy film.", "thumbnail": "x"},
    {"title": "Cafe\u0301 au lait", "year": 1993, "cast": [f"Actor {i}" for i in range(15)], "genres": [],
     "href": "Café_au_lait_(film)", "extract": ""},
    {"title": "No Year Film", "cast": [], "genres": ["Drama"]},
    {"title": "", "year": 1995},
    {"title": "Bad Year", "year": "nineteen"},
    "not an object",
]
TWENTIES = [{"title": "Everything Everywhere All at Once", "year": 2022, "cast": ["Michelle Yeoh"],
             "genres": ["Science Fiction"], "href": "Everything_Everywhere_All_at_Once",
             "extract": "A 2022 film."}]


def _files(tmp_path, **contents) -> dict:
    files = {}
    for name, content in contents.items():
        path = tmp_path / f"movies-{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        files[path.name] = path
    return files


def test_records_become_rows_with_plot(tmp_path):
    result = read_wikipedia(_files(tmp_path, **{"1990s": NINETIES, "2020s": TWENTIES}))
    assert result.rows.schema == pl.Schema(SOURCE_ROW_SCHEMA)
    rows = {r["source_key"]: r for r in result.rows.to_dicts()}
    ford = rows["The_Adventures_of_Ford_Fairlane"]
    assert ford["title"] == "The Adventures of Ford Fairlane" and ford["year"] == 1990
    assert ford["plot"].startswith("The Adventures of Ford Fairlane is") and ford["imdb_id"] is None
    assert ford["cast"] == ["Andrew Dice Clay", "Wayne Newton"] and ford["genres"] == ["Action", "Comedy"]
    cafe = rows["Café_au_lait_(film)"]
    assert cafe["title"] == "Café au lait" and cafe["plot"] is None and len(cafe["cast"]) == CAST_LIMIT
    assert rows["No Year Film (None)"]["year"] is None
    assert rows["Everything_Everywhere_All_at_Once"]["year"] == 2022
    assert result.stats["films"] == 4 and result.stats["rows_read"] == 7


def test_bad_records_quarantined_with_record_number(tmp_path):
    result = read_wikipedia(_files(tmp_path, **{"1990s": NINETIES}))
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    bad = {r["line"]: r["reason"] for r in result.quarantine.to_dicts()}
    assert bad == {4: "record 4: missing title", 5: "record 5: year is not an integer: 'nineteen'",
                   6: "record 6: not a JSON object"}


def test_file_that_is_not_json_is_quarantined_and_other_decades_kept(tmp_path):
    broken = json.dumps(NINETIES, indent=1)[:700]  # a download cut short
    result = read_wikipedia(_files(tmp_path, **{"1990s": broken, "2020s": TWENTIES, "2010s": {"a": 1}}))
    assert result.rows["source_key"].to_list() == ["Everything_Everywhere_All_at_Once"]
    reasons = {r["file"].rsplit("/", 1)[-1]: (r["line"], r["reason"]) for r in result.quarantine.to_dicts()}
    line, reason = reasons["movies-1990s.json"]
    assert reason.startswith("file is not JSON") and line is not None and line > 1
    assert reasons["movies-2010s.json"] == (None, "file is JSON but not a list (got dict)")
    assert result.stats["files_failed"] == 2 and result.stats["files_read"] == 1


def test_no_readable_file_is_an_error_naming_the_files(tmp_path):
    with pytest.raises(SourceFormatError, match=r"movies-1990s\.json: no Wikipedia movie file could be read"):
        read_wikipedia(_files(tmp_path, **{"1990s": "<html>rate limited</html>"}))
