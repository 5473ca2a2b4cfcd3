"""MovieLens readers: official quoted CSV, the quote-stripped mirror copy, ml-1m movies.dat."""

from __future__ import annotations

import polars as pl
import pytest

from corpus_build.schema import QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError
from corpus_build.sources.movielens import read_movielens_csv, read_movielens_dat, split_title

OFFICIAL = '''movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
11,"American President, The (1995)",Comedy|Drama|Romance
29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama|Fantasy
1201,"Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)",Action|Western
7789,"11'09""01 - September 11 (2002)",Drama
162982,Steins;Gate the Movie: The Burden of Déjà vu (2013),Animation|Drama|Sci-Fi
83773,Away with Words (San tiao ren) (1999),(no genres listed)
125571,The Court-Martial of Jackie Robinson,(no genres listed)
'''
# The same rows as ../shared/data's ml-25m copy has them: quoting stripped, ", " inside titles -> ";".
STRIPPED = '''movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
11,American President;The (1995),Comedy|Drama|Romance
29,City of Lost Children;The (Cité des enfants perdus;La) (1995),Adventure|Drama|Fantasy
1201,Good;the Bad and the Ugly;The (Buono;il brutto;il cattivo;Il) (1966),Action|Western
1019,20,000 Leagues Under the Sea (1954),Adventure|Drama|Sci-Fi
'''
LINKS = '''movieId,imdbId,tmdbId
1,0114709,862
11,0112346,9087
29,0112682,902
1201,0060196,429
7789,0328802,
not,a,link,line
'''


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _titles(result) -> dict[str, tuple]:
    return {r["source_key"]: (r["title"], r["year"], r["aliases"]) for r in result.rows.to_dicts()}


@pytest.mark.parametrize(("raw", "expected"), [
    ("Matrix, The (1999)", ("The Matrix", 1999, [])),
    ("Postman, The (Postino, Il) (1994)", ("The Postman", 1994, ["Il Postino"])),
    ("Million Dollar Duck, The (a.k.a. $1,000,000 Duck) (1971)", ("The Million Dollar Duck", 1971,
                                                                   ["$1,000,000 Duck"])),
    ("To Have, or Not (En avoir (ou pas)) (1995)", ("To Have, or Not", 1995, ["En avoir (ou pas)"])),
    ("(500) Days of Summer (2009)", ("(500) Days of Summer", 2009, [])),
    ("Stranger Things (2016-)", ("Stranger Things", 2016, [])),
    ("No Year Here", ("No Year Here", None, [])),
])
def test_split_title(raw, expected):
    assert split_title(raw) == expected


def test_official_quoted_csv(tmp_path):
    result = read_movielens_csv({"movies.csv": _write(tmp_path, "movies.csv", OFFICIAL),
                                 "links.csv": _write(tmp_path, "links.csv", LINKS)}, source="movielens_small")
    assert result.rows.schema == pl.Schema(SOURCE_ROW_SCHEMA)
    titles = _titles(result)
    assert titles["11"] == ("The American President", 1995, [])
    assert titles["29"] == ("The City of Lost Children", 1995, ["La Cité des enfants perdus"])
    assert titles["1201"] == ("The Good, the Bad and the Ugly", 1966, ["Il Buono, il brutto, il cattivo"])
    assert titles["7789"][0] == "11'09\"01 - September 11"
    assert titles["162982"][0].startswith("Steins;Gate")  # a real ";" survives in the official format
    assert titles["125571"] == ("The Court-Martial of Jackie Robinson", None, [])
    rows = {r["source_key"]: r for r in result.rows.to_dicts()}
    assert rows["83773"]["genres"] == [] and rows["1"]["genres"][0] == "Adventure"
    assert rows["1"]["imdb_id"] == "tt0114709" and rows["162982"]["imdb_id"] is None
    assert set(result.rows["source"]) == {"movielens_small"}
    assert result.stats["quotes_stripped_copy"] == 0.0
    # the malformed links line is quarantined with file and line; every movie row is kept
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    [bad] = result.quarantine.to_dicts()
    assert bad["file"].endswith("links.csv") and bad["line"] == 7 and bad["raw"] == "not,a,link,line"
    assert result.rows.height == 8


def test_quote_stripped_copy_parses_like_the_official_file(tmp_path):
    official = _titles(read_movielens_csv({"movies.csv": _write(tmp_path, "official.csv", OFFICIAL)}))
    stripped_result = read_movielens_csv({"movies.csv": _write(tmp_path, "stripped.csv", STRIPPED)})
    stripped = _titles(stripped_result)
    for key in ("1", "11", "29", "1201"):
        assert stripped[key] == official[key]
    assert stripped["1019"] == ("20,000 Leagues Under the Sea", 1954, [])  # comma in an unquoted title
    assert stripped_result.stats["quotes_stripped_copy"] == 1.0
    assert stripped_result.stats["semicolons_restored"] == 3.0


def test_malformed_movie_lines_are_quarantined_and_good_rows_kept(tmp_path):
    text = OFFICIAL + "oops no commas here\n99,\"\",Drama\n1,Toy Story again (1995),Comedy\n"
    result = read_movielens_csv({"movies.csv": _write(tmp_path, "movies.csv", text)})
    reasons = {r["line"]: r["reason"] for r in result.quarantine.to_dicts()}
    assert reasons == {10: "not movieId,title,genres", 11: "empty title", 12: "duplicate movieId"}
    assert result.rows.height == 8


def test_wrong_header_is_an_error_naming_file_and_line(tmp_path):
    path = _write(tmp_path, "movies.csv", "id;name;kinds\n1;x;y\n")
    with pytest.raises(SourceFormatError, match=r"movies\.csv, line 1: unexpected header"):
        read_movielens_csv({"movies.csv": path})


def test_ml1m_dat_latin1(tmp_path):
    text = ("1::Toy Story (1995)::Animation|Children's|Comedy\n"
            "73::Misérables, Les (1995)::Drama|Musical\n"
            "not a dat line\n")
    result = read_movielens_dat({"movies.dat": _write(tmp_path, "movies.dat", text, "latin-1")})
    titles = _titles(result)
    assert titles["73"] == ("Les Misérables", 1995, [])
    assert result.rows["imdb_id"].null_count() == 2
    assert set(result.rows["source"]) == {"movielens_1m"}
    [bad] = result.quarantine.to_dicts()
    assert bad["line"] == 3 and bad["reason"].startswith("not MovieID")
