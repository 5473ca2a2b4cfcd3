"""Hostile upstream files through the real readers, the merge and the corpus asset: undecodable bytes,
10 MB fields, terminal control characters, one IMDb id claimed by unrelated titles, and a garbled
refresh that the corpus checks must stop."""

from __future__ import annotations

import json
import time
import unicodedata
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from corpus_build.merge import build_corpus
from corpus_build.sources.movielens import read_movielens_csv, read_movielens_dat
from corpus_build.sources.wikipedia import read_wikipedia

pytestmark = pytest.mark.hostile

HEADER = "movieId,title,genres\n"
LINKS_HEADER = "movieId,imdbId,tmdbId\n"
FILMS = [  # (movieId, MovieLens title, IMDb number): non-ASCII titles are what a bad decode garbles
    (1, "Lumière (1995)", 114709), (2, "Amélie (2001)", 211915), (3, "Matrix, The (1999)", 133093),
    (4, "Léon: The Professional (1994)", 110413), (5, "Cité des enfants perdus, La (1995)", 112682),
    (6, "Crouching Tiger, Hidden Dragon (Wo hu cang long) (2000)", 190332), (7, "Heat (1995)", 113277),
    (8, "Das Boot (1981)", 82096), (9, "Mon Oncle (1958)", 50706), (10, "Être et avoir (2002)", 307385),
    (11, "Ménilmontant (1926)", 17136), (12, "Café au lait (1993)", 108071), (13, "Delicatessen (1991)", 101700),
    (14, "Señora Acero (1990)", 100001), (15, "Jalsaghar (1958)", 51792), (16, "Fête de famille (2019)", 9000016),
    (17, "Misérables, Les (1995)", 113828), (18, "Fantômas (1913)", 3361),
]
UNSAFE = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\x7f", "\u202e", "\u202d", "\u2066"]


def movies_csv(path: Path, films=FILMS, extra_lines: bytes = b"") -> Path:
    body = HEADER + "".join(f'{i},"{t}",Drama\n' if "," in t else f"{i},{t},Drama\n" for i, t, _ in films)
    path.mkdir(parents=True, exist_ok=True)
    (path / "movies.csv").write_bytes(body.encode("utf-8") + extra_lines)
    (path / "links.csv").write_text(LINKS_HEADER + "".join(f"{i},{n:07d},\n" for i, _, n in films), encoding="utf-8")
    return path


def files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir()}


def test_undecodable_bytes_quarantine_their_line_and_garble_nothing(tmp_path):
    junk = b"97,Bad \xff\xfe\x80 bytes (2003),Drama\n" + b"98,\xc3(1999) junk,Drama\n"
    folder = movies_csv(tmp_path / "ml", extra_lines=junk + "99,Après la pluie (2004),Drama\n".encode())
    result = read_movielens_csv(files(folder))
    titles = set(result.rows["title"].to_list())
    assert {"Lumière", "Amélie", "Ménilmontant", "Après la pluie"} <= titles
    assert not any("Ã" in t or "\ufffd" in t for t in titles)
    bad = result.quarantine.filter(pl.col("reason").str.contains("UTF-8"))
    first_junk_line = len(FILMS) + 2  # after the header and the good films
    assert sorted(bad["line"].to_list()) == [first_junk_line, first_junk_line + 1]
    assert set(bad["file"].to_list()) == {str(folder / "movies.csv")}
    assert result.rows.height == len(FILMS) + 1

    # ml-1m's movies.dat is ISO-8859-1 by specification: still read as such
    dat = tmp_path / "ml-1m"
    dat.mkdir()
    (dat / "movies.dat").write_bytes("1::Amélie (2001)::Comedy\n2::Léon (1994)::Crime\n".encode("latin-1"))
    assert read_movielens_dat(files(dat)).rows["title"].to_list() == ["Amélie", "Léon"]


def test_undecodable_imdb_line_is_quarantined_not_kept_with_replacement_characters(tmp_path):
    import gzip

    from imdb_fixtures import write_imdb_fixtures

    from corpus_build.sources.imdb import BASICS, read_imdb

    paths = write_imdb_fixtures(tmp_path / "imdb", malformed=False)
    lines = gzip.decompress(paths[BASICS].read_bytes()).split(b"\n")
    lines.insert(2, b"tt7777777\tmovie\tAm\xe9lie in latin-1\tx\t0\t2001\t\\N\t90\tDrama")
    paths[BASICS].write_bytes(gzip.compress(b"\n".join(lines)))
    result = read_imdb(paths)
    assert "tt7777777" not in result.rows["imdb_id"].to_list()
    assert not result.rows["title"].str.contains("\ufffd", literal=True).any()
    [bad] = result.quarantine.filter(pl.col("reason").str.contains("UTF-8")).to_dicts()
    assert bad["line"] == 3 and bad["file"].endswith(BASICS)


def test_ten_megabyte_fields_are_capped_and_merging_stays_fast(tmp_path):
    huge = "A" * 10_000_000
    films = [*FILMS, (20, f"{huge} (1999)", 1234567), (21, f"{huge}x (1999)", 0), (22, f"{huge}y (1999)", 0)]
    folder = movies_csv(tmp_path / "ml", films=films)
    (folder / "links.csv").write_text(  # film 20 has an IMDb id, 21 and 22 have none
        LINKS_HEADER + "".join(f"{i},{n:07d},\n" for i, _, n in films if n), encoding="utf-8")
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    records = [{"title": "Heat", "year": 1995, "cast": ["Al Pacino", "B" * 1_000_000], "extract": "word " * 2_000_000},
               {"title": "Delicatessen", "year": 1991, "extract": "A butcher feeds his tenants."}]
    (wiki / "movies-1990s.json").write_text(json.dumps(records), encoding="utf-8")

    started = time.perf_counter()
    sources = {"movielens": read_movielens_csv(files(folder)), "wikipedia": read_wikipedia(files(wiki))}
    merged = build_corpus(sources)
    elapsed = time.perf_counter() - started

    assert elapsed < 30, f"merging three 10 MB titles took {elapsed:.0f} s"
    corpus = merged.corpus
    assert corpus["title"].str.len_chars().max() < 1_000
    assert corpus["plot"].str.len_chars().max() < 50_000
    assert corpus["cast"].list.eval(pl.element().str.len_chars()).list.max().max() < 1_000
    too_long = merged.quarantine.filter(pl.col("reason").str.contains("title longer"))
    assert too_long.height == 3 and too_long["raw"].str.len_chars().max() <= 2_000
    assert merged.source_stats["wikipedia"]["plots_truncated"] == 1
    assert merged.source_stats["wikipedia"]["cast_names_dropped"] == 1
    heat = corpus.filter(pl.col("title") == "Heat").row(0, named=True)
    assert heat["plot"].startswith("word word") and heat["cast"] == ["Al Pacino"]


def test_control_and_bidi_characters_never_reach_the_corpus(tmp_path):
    films = [*FILMS[:3], (30, "Red\x1b[31m Alert\x1b[0m (2001)", 3000030), (31, "Bell\x07 Boy (2002)", 3000031),
             (32, "Nul\x00l Point (2003)", 3000032), (33, "\u202eevil.exe (2004)", 3000033)]
    folder = movies_csv(tmp_path / "ml", films=films)
    wiki = tmp_path / "wiki"
    wiki.mkdir()
    (wiki / "movies-2000s.json").write_text(json.dumps(
        [{"title": "Bell\x07 Boy", "year": 2002, "cast": ["Ann\x1b]0;pwned\x07 Lee"], "extract": "Plot\x00 \u202ehere"}]))
    merged = build_corpus({"movielens": read_movielens_csv(files(folder)), "wikipedia": read_wikipedia(files(wiki))})
    corpus = merged.corpus
    texts = [*corpus["title"].to_list(), *corpus["plot"].drop_nulls().to_list(),
             *corpus["cast"].explode().drop_nulls().to_list(), *corpus["aliases"].explode().drop_nulls().to_list()]
    leaked = {repr(t) for t in texts if any(u in t for u in UNSAFE)}
    assert not leaked
    assert {"Red[31m Alert[0m", "Bell Boy", "Null Point", "evil.exe"} <= set(corpus["title"].to_list())
    bell = corpus.filter(pl.col("title") == "Bell Boy").row(0, named=True)
    assert bell["plot"] == "Plot here" and bell["cast"] == ["Ann]0;pwned Lee"]
    assert all(unicodedata.category(ch) != "Cc" for t in texts for ch in t)


def test_one_imdb_id_with_unrelated_titles_is_flagged_not_silently_merged(tmp_path):
    films = [(1, "Matrix, The (1999)", 133093), (2, "Completely Different Film (1999)", 133093),
             (3, "Heat (1995)", 113277), (4, "Heat (1995)", 113277),  # a true duplicate: merged quietly
             (5, "Léon (1994)", 110413), (6, "Léon: The Professional (1994)", 110413)]  # one film, two titles
    merged = build_corpus({"movielens": read_movielens_csv(files(movies_csv(tmp_path / "ml", films=films)))})
    matrix = merged.corpus.filter(pl.col("movie_id") == "tt0133093").row(0, named=True)
    assert matrix["title"] == "The Matrix" and "Completely Different Film" not in matrix["aliases"]
    conflicts = merged.quarantine.filter(pl.col("reason").str.contains("title conflicts"))
    assert conflicts.height == 1 and "Completely Different Film" in conflicts["raw"][0]
    assert "tt0133093" in conflicts["reason"][0] and "The Matrix" in conflicts["reason"][0]
    assert merged.stats["title_conflicts"] == 1 and merged.source_stats["movielens"]["title_conflicts"] == 1
    leon = merged.corpus.filter(pl.col("movie_id") == "tt0110413").row(0, named=True)
    assert leon["aliases"] == ["Léon: The Professional"]
    assert merged.corpus.filter(pl.col("movie_id") == "tt0113277").height == 1


# --- the corpus asset: a refresh whose titles come back garbled must be stopped ------------------


def _double_encoded(text: str) -> str:
    """What a UTF-8 file read as latin-1 and written back as UTF-8 holds: 'Lumière' -> 'LumiÃ¨re'."""
    return text.encode("utf-8").decode("latin-1")


def _materialize_corpus(instance):
    import assets.corpus as corpus_assets

    checks = [corpus_assets.titles_decoded_cleanly, corpus_assets.no_films_split_from_previous]
    return dg.materialize([corpus_assets.movie_corpus_build, *checks], instance=instance, raise_on_error=False,
                          selection=[corpus_assets.CORPUS, corpus_assets.CORPUS_QUARANTINE])  # the files are in raw/


def test_corpus_checks_stop_a_refresh_whose_titles_come_back_garbled(rar_home, monkeypatch):
    monkeypatch.setenv("RAR_PROFILE", "full")
    from rar_pipeline.settings import get_settings

    get_settings.cache_clear()
    raw = rar_home / "raw"
    movies_csv(raw / "movielens")
    (raw / "movielens_1m").mkdir(parents=True)  # ml-1m has no IMDb ids: its rows join by title + year
    (raw / "movielens_1m" / "movies.dat").write_bytes(
        "".join(f"{i}::{t}::Drama\n" for i, t, _ in FILMS).encode("latin-1", "replace"))
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize_corpus(instance)
    assert first.success, [c.metadata for c in first.get_asset_check_evaluations()]
    films_before = pl.read_parquet(get_settings().table_path("movie_corpus")).height

    garbled = [(i, _double_encoded(t), n) for i, t, n in FILMS]
    movies_csv(raw / "movielens", films=garbled)
    second = _materialize_corpus(instance)
    verdicts = {c.check_name: c for c in second.get_asset_check_evaluations()}
    assert not verdicts["titles_decoded_cleanly"].passed
    assert verdicts["titles_decoded_cleanly"].metadata["garbled_titles"].value >= 10
    split = verdicts["no_films_split_from_previous"]
    assert not split.passed and split.metadata["new_films_matching_previous"].value > 5
    assert pl.read_parquet(get_settings().table_path("movie_corpus")).height > films_before  # the split
