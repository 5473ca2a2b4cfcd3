"""The linker: ids, titles with moved articles, unicode, alternate titles, fuzzy threshold, speed."""

from __future__ import annotations

import time
import unicodedata

import polars as pl
import pytest
from linking_fixtures import corpus_frame

from corpus_build.linking import Linker, LinkLog, loose_key, split_title_year, title_variants

FILMS = [
    ("tt0133093", "The Matrix", 1999, [], 1_900_000),
    ("tt0234215", "The Matrix Reloaded", 2003, [], 600_000),
    ("tt0211915", "Amélie", 2001, ["Le Fabuleux Destin d'Amélie Poulain"], 780_000),
    ("tt0076759", "Star Wars: Episode IV - A New Hope", 1977, [], 1_400_000),
    ("tt0087928", "Police Academy", 1984, [], 120_000),
    ("tt0089822", "Police Academy 2: Their First Assignment", 1985, [], 50_000),
    ("tt0099864", "It", 1990, [], 150_000),
    ("tt1396484", "It", 2017, [], 600_000),
    ("tt0072271", "The Texas Chainsaw Massacre", 1974, [], 170_000),
    ("tt2283362", "Jumanji: Welcome to the Jungle", 2017, [], 400_000),
    ("tt0113497", "Jumanji", 1995, [], 380_000),
    ("tt0307538", "Swing", 2002, [], 1_000),
    ("rar:0123456789ab", "Das Boot", 1981, [], None),
    ("tt0457430", "Pan's Labyrinth", 2006, ["El laberinto del fauno"], 700_000),
    ("tt0095016", "Die Hard", 1988, [], 900_000),
    ("tt4975722", "Moonlight", None, [], None),  # a film no source dates
]


@pytest.fixture
def linker() -> Linker:
    return Linker(corpus_frame(FILMS))


@pytest.mark.parametrize("imdb_id", ["tt0133093", "0133093", 133093])
def test_imdb_id_in_any_format_links_exactly(linker, imdb_id):
    link = linker.link(None, imdb_id=imdb_id)
    assert (link.movie_id, link.method, link.confidence) == ("tt0133093", "imdb_id", 1.0)


def test_unknown_imdb_id_falls_back_to_title(linker):
    link = linker.link("Matrix, The (1999)", imdb_id="tt9999999")
    assert (link.movie_id, link.method) == ("tt0133093", "title_year")


@pytest.mark.parametrize(
    "mention, expected, method",
    [
        ("Matrix, The (1999)", "tt0133093", "title_year"),  # MovieLens article moved
        ("Police Academy  (1984)", "tt0087928", "title_year"),  # ReDial double space
        ("Amelie (2001)", "tt0211915", "title_year"),  # accent missing
        (unicodedata.normalize("NFD", "Amélie (2001)"), "tt0211915", "title_year"),  # decomposed unicode
        ("Fabuleux destin d'Amélie Poulain, Le (2001)", "tt0211915", "title_year"),  # alias, article moved
        ("Labyrinth of the Faun (El laberinto del fauno) (2006)", "tt0457430", "title_year"),  # alternate
        ("Amélie (2002)", "tt0211915", "title_year_pm1"),
        ("It (1990)", "tt0099864", "title_year"),
        ("It (2017)", "tt1396484", "title_year"),
        ("The Texas Chain Saw Massacre (1974)", "tt0072271", "title_loose"),
        ("Star Wars (1977)", "tt0076759", "title_prefix"),
        ("Jumanji (2017)", "tt2283362", "title_prefix"),
        ("Police Acadamy (1984)", "tt0087928", "fuzzy"),  # typo
        ("Moonlight (2016)", "tt4975722", "title_undated"),
        ("Die Hard (1991)", "tt0095016", "title_other_year"),  # the dataset's year is wrong
        ("Die Hard (1998)", None, "none"),  # ... but not by ten years
        ("Academy Police (1984)", None, "none"),  # fuzzy matching keeps word order
        ("Why%20Him%3F Die Hard (1988)", None, "none"),
    ],
)
def test_titles(linker, mention, expected, method):
    link = linker.link(mention)
    assert (link.movie_id, link.method) == (expected, method), link


def test_title_without_year_prefers_the_best_known_film(linker):
    link = linker.link("It")
    assert (link.movie_id, link.method) == ("tt1396484", "title_only")  # more votes than 1990
    assert link.confidence < linker.link("It (2017)").confidence


def test_fuzzy_below_threshold_gives_no_link_but_a_candidate(linker):
    link = linker.link("The Matrix Revisited Again (1999)")
    assert link.movie_id is None and link.method == "none"
    assert link.best_candidate == "The Matrix (1999)" and 0 < link.best_score < linker.fuzzy_threshold


def test_short_titles_are_never_fuzzy_matched(linker):
    assert linker.link("Sing! (2001)").movie_id is None  # 'sing' ~ 'swing' scores 89


@pytest.mark.parametrize("mention", [None, "", "   ", "(1999)", "Completely Unknown Film (1950)"])
def test_empty_and_unknown_mentions(linker, mention):
    assert linker.link(mention).movie_id is None


def test_rar_ids_and_labels(linker):
    link = linker.link("Boot, Das (1981)")
    assert link.movie_id == "rar:0123456789ab" and linker.label(link.movie_id) == "Das Boot (1981)"


def test_helpers():
    assert split_title_year("Super Troopers (2001)") == ("Super Troopers", 2001)
    assert split_title_year("American Pie ") == ("American Pie", None)
    assert split_title_year("Why Him%3F (2016)") == ("Why Him?", 2016)
    assert title_variants("Men in Black II (a.k.a. MIIB) (a.k.a. MIB 2)")[-1] == "Men in Black II"
    assert "MIIB" in title_variants("Men in Black II (a.k.a. MIIB) (a.k.a. MIB 2)")
    assert title_variants("Some Girl(s)") == ["Some Girl(s)"]
    assert loose_key("john wick chapter two") == loose_key("john wick chapter 2")


def test_corpus_without_required_columns_is_refused():
    with pytest.raises(ValueError, match="year"):
        Linker(pl.DataFrame({"movie_id": ["tt1"], "title": ["x"]}))


def test_from_parquet_names_a_missing_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="movie_corpus"):
        Linker.from_parquet(tmp_path / "movie_corpus.parquet")


def test_link_log_counts_rates_and_unresolved(linker):
    log = LinkLog()
    for mention in ["Matrix, The (1999)", "Nope (1950)", "Nope (1950)", "It (1990)"]:
        log.record("redial_test", mention, linker.link(mention))
    assert log.link_rate("redial_test") == 0.5
    table = log.unresolved()
    assert table.to_dicts()[0] | {"best_candidate": None, "best_score": None} == {
        "dataset": "redial_test", "mention": "Nope (1950)", "imdb_id": None, "occurrences": 2,
        "best_candidate": None, "best_score": None}
    other = LinkLog()
    other.record("redial_test", "Nope (1950)", linker.link("Nope (1950)"))
    assert log.merge(other).unresolved()["occurrences"].to_list() == [3]


def test_linker_is_fast_on_a_large_corpus():
    n = 30_000
    corpus = pl.DataFrame({"movie_id": [f"tt{i:07d}" for i in range(1, n + 1)],
                           "title": [f"Film number {i} of the archive" for i in range(n)],
                           "year": [1920 + i % 100 for i in range(n)]}, schema_overrides={"year": pl.Int32})
    start = time.perf_counter()
    linker = Linker(corpus)
    mentions = [f"Film number {i} of the archive ({1920 + i % 100})" for i in range(0, n, 6)]
    mentions += [f"Film numbr {i} of the archiv ({1920 + i % 100})" for i in range(0, 300)]  # fuzzy path
    links = [linker.link(m) for m in mentions]
    elapsed = time.perf_counter() - start
    assert sum(link.movie_id is not None for link in links) >= len(mentions) - 5
    assert elapsed < 20, f"building + {len(mentions)} links took {elapsed:.1f} s"


@pytest.fixture
def two_films() -> Linker:
    from corpus_build.schema import CORPUS_SCHEMA

    films = [("tt0000101", "Silent River Crossing", 1990), ("tt0000102", "Another Film Entirely", 1990)]
    return Linker(pl.DataFrame([{c: None for c in CORPUS_SCHEMA} | {"movie_id": m, "title": t, "year": y}
                                for m, t, y in films], schema=CORPUS_SCHEMA))


def test_fuzzy_threshold_links_a_near_title_and_refuses_a_farther_one(two_films):
    """rapidfuzz ratio = 100 * (1 - indel distance / (len1 + len2)) against 'silent river crossing'
    (21 characters): two substituted letters are 4 indels, 100 * (1 - 4/42) = 90.5 >= 88, a link;
    three are 6 indels, 100 * (1 - 6/42) = 85.7 < 88, no link (but the candidate is reported)."""
    near = two_films.link("Silent Rover Crassing (1990)")
    assert (near.movie_id, near.method) == ("tt0000101", "fuzzy")
    assert near.best_score == pytest.approx(100 * (1 - 4 / 42))
    assert near.confidence == pytest.approx(round(100 * (1 - 4 / 42) / 100 * 0.9, 4))
    far = two_films.link("Salent Rover Crassing (1990)")
    assert (far.movie_id, far.method) == (None, "none")
    assert far.best_candidate == "Silent River Crossing (1990)" and far.best_score == pytest.approx(100 * (1 - 6 / 42))


def test_from_parquet_reads_aliases_and_votes_and_passes_options(tmp_path):
    """A corpus file with every column: aliases link, votes pick the best known film, options reach the Linker."""
    from corpus_build.schema import CORPUS_SCHEMA

    rows = [{c: None for c in CORPUS_SCHEMA} | {"movie_id": i, "title": t, "year": y, "aliases": a, "imdb_votes": v,
                                                "genres": [], "directors": [], "cast": [], "sources": ["x"]}
            for i, t, y, a, v in FILMS]
    path = tmp_path / "movie_corpus.parquet"
    pl.DataFrame(rows, schema=CORPUS_SCHEMA).write_parquet(path)
    linker = Linker.from_parquet(path)
    assert len(linker) == len(FILMS) and "tt0211915" in linker
    assert linker.link("El laberinto del fauno (2006)").movie_id == "tt0457430"  # an alias
    assert linker.link("It").movie_id == "tt1396484"  # no year: the most voted of the two
    assert linker.year("tt0099864") == 1990
    strict = Linker.from_parquet(path, fuzzy_threshold=99.0)
    assert strict.fuzzy_threshold == 99.0


def test_link_log_counts_each_method(linker):
    log = LinkLog()
    for mention in ["Matrix, The (1999)", "Matrix, The (1999)", "Nope (1950)"]:
        log.record("redial", mention, linker.link(mention))
    log.record("redial", "Die Hard", linker.link(imdb_id="tt0095016"), imdb_id="tt0095016")
    log.record("inspired", "Die Hard", linker.link("Die Hard"))
    assert dict(log.methods) == {("redial", "title_year"): 2, ("redial", "none"): 1, ("redial", "imdb_id"): 1,
                                 ("inspired", "title_only"): 1}
    assert log.mentions == {"redial": 4, "inspired": 1} and log.linked == {"redial": 3, "inspired": 1}
    assert log.rates() == {"inspired": 1.0, "redial": 0.75}
