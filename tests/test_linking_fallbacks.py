"""The linker's later steps and their confidences: loose key, prefix, fuzzy window, other year, the best
known film among several, and the LinkLog counts a dataset report is built from.

Every expected link below is worked out by hand from the order of evidence in corpus_build/linking.py:
imdb id 1.0; exact key same year 0.98, +-1 0.93, undated film 0.85, no year 0.90 (one film) / 0.80 (several);
loose key 0.92 (no year 0.78); prefix 0.85 (no year 0.75); fuzzy score/100*0.9; other year 0.70.
"""

from __future__ import annotations

import polars as pl
import pytest
from linking_fixtures import corpus_frame

from corpus_build.linking import UNRESOLVED_SCHEMA, Linker, LinkLog, loose_key, split_title_year, title_variants

FILMS = [  # movie_id, title, year, aliases, IMDb votes
    ("tt0000101", "Silent River Crossing", 1990, [], 1_000),
    ("tt0000102", "Another Film Entirely", 1990, [], 1_000),
    ("tt0073195", "Jaws", 1975, [], 600_000),
    ("tt0093300", "Jaws: The Revenge", 1987, [], 40_000),
    ("tt0079945", "Star Trek: The Motion Picture", 1979, [], 90_000),
    ("tt1408101", "Star Trek Into Darkness", 2013, [], 600_000),
    ("tt0049730", "The Searchers", 1956, [], 90_000),
    ("tt0000201", "The Searcher", 1959, [], 100),
    ("tt0072271", "The Texas Chainsaw Massacre", 1974, [], 170_000),
    ("tt0000311", "The Sequel Part II", 1990, [], 5_000),  # same loose key as the next film ...
    ("tt0000312", "The Sequel Part Two", 1990, [], 50),  # ... listed after it, with fewer votes
    ("tt0117509", "Romeo + Juliet", 1996, [], 250_000),
    ("tt0022100", "M", 1931, [], 160_000),
    ("rar:c0c0c0c0c0c0", "Nosferatu", 1922, [], None),  # two films no vote count ranks: ...
    ("rar:0a0a0a0a0a0a", "Nosferatu", 1979, [], None),  # ... the earlier is the original
    ("rar:0b0b0b0b0b0b", "Hamlet", 1990, [], None),
    ("tt0116477", "Hamlet", 1996, [], 100),
    ("rar:0d0d0d0d0d0d", "Moonlight", None, [], None),  # no source dates it
]


@pytest.fixture  # per test: building it is cheap, and mutmut then sees which tests use the Linker
def linker() -> Linker:
    return Linker(corpus_frame(FILMS))


def found(link) -> tuple:
    return link.movie_id, link.method, link.confidence


@pytest.mark.parametrize(
    "mention, expected",
    [
        # exact key: the confidence says how sure the year is
        ("Jaws (1975)", ("tt0073195", "title_year", 0.98)),
        ("Jaws (1976)", ("tt0073195", "title_year_pm1", 0.93)),
        ("Moonlight (2016)", ("rar:0d0d0d0d0d0d", "title_undated", 0.85)),
        ("Jaws", ("tt0073195", "title_only", 0.90)),  # one film has the key
        ("Nosferatu", ("rar:c0c0c0c0c0c0", "title_only", 0.80)),  # two, equally unknown: the 1922 original
        # loose key: spacing, '&' vs '+', numbers spelled out
        ("The Texas Chain Saw Massacre (1975)", ("tt0072271", "title_loose", 0.92)),  # a year off
        ("The Texas Chain Saw Massacre", ("tt0072271", "title_loose", 0.78)),
        ("Romeo & Juliet (1996)", ("tt0117509", "title_loose", 0.92)),  # 'and' is dropped by the loose key
        ("The Sequel Part 2 (1990)", ("tt0000311", "title_loose", 0.92)),  # 'II' and 'Two': the most voted
        # prefix: a shortened title starting a longer one of that year (+-1)
        ("Jaws (1987)", ("tt0093300", "title_prefix", 0.85)),  # 'Jaws: The Revenge', a four-letter main title
        ("Star Trek (1979)", ("tt0079945", "title_prefix", 0.85)),  # the 1979 film, not the better known 2013 one
        ("Star Trek (1980)", ("tt0079945", "title_prefix", 0.85)),
        ("Star Trek", ("tt1408101", "title_prefix", 0.75)),  # no year: the best known film it starts
        # alternate title in parentheses: its main title 'M' is a film of 1931
        ("M (Eine Stadt sucht einen Mörder) (1931)", ("tt0022100", "title_year", 0.98)),
        # the exact title 2-5 years off (the dataset's year is wrong): the nearest, then the best known
        ("Jaws (1980)", ("tt0073195", "title_other_year", 0.70)),  # five years: still trusted
        ("Hamlet (1994)", ("tt0116477", "title_other_year", 0.70)),  # 1996 is 2 away, 1990 is 4
        ("Hamlet (1993)", ("tt0116477", "title_other_year", 0.70)),  # 3 and 3: the one with votes
    ],
)
def test_each_step_links_with_its_confidence(linker, mention, expected):
    assert found(linker.link(mention)) == expected


@pytest.mark.parametrize(
    "mention",
    [
        "Jaws (1981)",  # six years from 1975 and from 1987: no step trusts it
        "Star Trek (1981)",  # the prefix step allows one year, 'Star Trek' itself is no film
        "The Texas Chain Saw Massacre (1976)",  # the loose key allows one year too
        "Silent Rover Crassing (1992)",  # a near title two years away is not searched
    ],
)
def test_beyond_each_steps_year_window_nothing_links(linker, mention):
    assert linker.link(mention).movie_id is None


def test_fuzzy_match_searches_one_year_either_side(linker):
    """'silent rover crassing' vs 'silent river crossing': two substitutions = 4 indels over 42 characters,
    ratio 100 * (1 - 4/42) = 90.48 >= 88, confidence 0.9048 * 0.9 = 0.8143."""
    for year in (1989, 1990, 1991):
        link = linker.link(f"Silent Rover Crassing ({year})")
        assert found(link) == ("tt0000101", "fuzzy", round(100 * (1 - 4 / 42) / 100 * 0.9, 4)), year
        assert link.best_candidate == "Silent River Crossing (1990)"


def test_a_near_title_of_the_right_year_beats_the_exact_title_three_years_off(linker):
    """'searcher' (8 letters, the shortest key fuzzy matching accepts) vs 'searchers' of 1956: one insertion
    over 17 characters, 100 * (1 - 1/17) = 94.12. 'The Searcher' of 1959 has the exact title, 3 years off:
    the fuzzy step comes first."""
    link = linker.link("The Searcher (1956)")
    assert found(link) == ("tt0049730", "fuzzy", round((1 - 1 / 17) * 0.9, 4))
    assert link.best_score == pytest.approx(100 * (1 - 1 / 17))


def test_a_miss_reports_its_candidate_with_zero_confidence(linker):
    """'salent rover crassing': 6 indels over 42 characters, 85.7 < 88."""
    link = linker.link("Salent Rover Crassing (1990)")
    assert found(link) == (None, "none", 0.0)
    assert link.best_candidate == "Silent River Crossing (1990)"
    assert link.best_score == pytest.approx(100 * (1 - 6 / 42))


def test_a_score_equal_to_the_threshold_links():
    """'silent rivr crosing' (19 letters) vs 'silent river crossing' (21): two deletions, 100 * (1 - 2/40) = 95."""
    strict = Linker(corpus_frame(FILMS), fuzzy_threshold=95.0)
    assert found(strict.link("Silent Rivr Crosing (1990)")) == ("tt0000101", "fuzzy", round(0.95 * 0.9, 4))
    assert Linker(corpus_frame(FILMS), fuzzy_threshold=95.5).link("Silent Rivr Crosing (1990)").movie_id is None


def test_the_best_scoring_title_variant_wins_the_fuzzy_step(linker):
    """Alternate title 'Another Film Entirly': one deletion, 100 * (1 - 1/41) = 97.56, to tt0000102; main title
    'Silent Rivr Crosing': 95.0 to tt0000101. The higher score wins, whichever variant comes last."""
    link = linker.link("Silent Rivr Crosing (Another Film Entirly) (1990)")
    assert (link.movie_id, link.method) == ("tt0000102", "fuzzy")
    assert link.best_score == pytest.approx(100 * (1 - 1 / 41))


def test_an_explicit_year_counts_like_a_year_in_the_text(linker):
    assert found(linker.link("Jaws", year=1975)) == ("tt0073195", "title_year", 0.98)
    assert found(linker.link("Hamlet", year=1990)) == ("rar:0b0b0b0b0b0b", "title_year", 0.98)
    assert found(linker.link("Hamlet")) == ("tt0116477", "title_only", 0.80)  # no year: the one with votes


def test_answers_are_cached_per_mention_and_id(linker):
    assert linker.link(None, imdb_id="tt0073195").movie_id == "tt0073195"
    assert linker.link(None, imdb_id="tt0093300").movie_id == "tt0093300"  # another id: another answer
    assert linker.link("Jaws", imdb_id="tt0093300").movie_id == "tt0093300"
    assert linker.link("Jaws").movie_id == "tt0073195"  # the same text without the id


def test_link_many_links_each_text(linker):
    assert [link.movie_id for link in linker.link_many(["Jaws (1975)", "Nothing Like It (1975)", "Star Trek"])] == [
        "tt0073195", None, "tt1408101"]


def test_labels_of_dated_and_undated_films(linker):
    assert linker.label("tt0073195") == "Jaws (1975)"
    assert linker.label("rar:0d0d0d0d0d0d") == "Moonlight"


def test_helpers_on_edge_cases():
    assert split_title_year("") == ("", None)
    assert title_variants("Heat (-)") == ["Heat (-)", "Heat"]  # a parenthesis without letters is no title
    assert title_variants("M (Eine Stadt sucht einen Mörder)") == [
        "M (Eine Stadt sucht einen Mörder)", "Eine Stadt sucht einen Mörder", "M"]
    assert loose_key("romeo and juliet") == loose_key("romeo juliet") == "romeojuliet"
    assert loose_key("part iii") == "part3"


def test_from_parquet_reads_only_the_columns_the_linker_uses(tmp_path):
    path = tmp_path / "movie_corpus.parquet"
    corpus_frame(FILMS).with_columns(pl.lit("a long plot " * 50).alias("plot")).write_parquet(path)
    linker = Linker.from_parquet(path)
    assert linker.corpus.columns == ["movie_id", "title", "year", "aliases", "imdb_votes"]
    assert found(linker.link("Star Trek")) == ("tt1408101", "title_prefix", 0.75)


# -- LinkLog ------------------------------------------------------------------------------------------


def test_link_rates_of_unknown_and_unlinked_datasets():
    log = LinkLog()
    assert log.link_rate("never_recorded") == 0.0
    log.record("inspired", "Nope (1950)", Linker(corpus_frame(FILMS)).link("Nope (1950)"))
    assert log.link_rate("inspired") == 0.0
    assert log.rates() == {"inspired": 0.0}


def test_unresolved_mentions_table(linker):
    """Per dataset, the most frequent first; a mention without text is recorded as ''."""
    log = LinkLog()
    log.record("redial", "Salent Rover Crassing (1990)", linker.link("Salent Rover Crassing (1990)"))
    for _ in range(3):
        log.record("inspired", "Zebra Crossing Blues (1950)", linker.link("Zebra Crossing Blues (1950)"))
    log.record("inspired", None, linker.link(None, imdb_id="tt9999999"), imdb_id="tt9999999")
    log.record("inspired", None, linker.link(None, imdb_id="tt9999999"), imdb_id="tt9999999")
    log.record("inspired", "Apple Orchard (1950)", linker.link("Apple Orchard (1950)"))
    log.record("inspired", "Jaws (1975)", linker.link("Jaws (1975)"))
    table = log.unresolved()
    assert table.schema == pl.Schema(UNRESOLVED_SCHEMA)
    assert table.select("dataset", "mention", "imdb_id", "occurrences").rows() == [
        ("inspired", "Zebra Crossing Blues (1950)", None, 3),
        ("inspired", "", "tt9999999", 2),
        ("inspired", "Apple Orchard (1950)", None, 1),
        ("redial", "Salent Rover Crassing (1990)", None, 1),
    ]
    assert table.row(3, named=True)["best_candidate"] == "Silent River Crossing (1990)"
    assert table.row(3, named=True)["best_score"] == pytest.approx(100 * (1 - 6 / 42))
    assert LinkLog().unresolved().schema == pl.Schema(UNRESOLVED_SCHEMA)  # empty, same columns


def test_merging_logs_adds_their_counts(linker):
    """Two workers' logs: 3 + 2 mentions, 2 + 1 linked, 'Nope' unresolved once in each, 'Gone' only in the second."""
    first, second = LinkLog(), LinkLog()
    for mention in ["Jaws (1975)", "Jaws (1975)", "Nope (1950)"]:
        first.record("redial", mention, linker.link(mention))
    for mention in ["Star Trek", "Nope (1950)", "Gone (1950)"]:
        second.record("redial", mention, linker.link(mention))
    merged = first.merge(second)
    assert merged is first
    assert dict(merged.mentions) == {"redial": 6} and dict(merged.linked) == {"redial": 3}
    assert dict(merged.methods) == {("redial", "title_year"): 2, ("redial", "none"): 3, ("redial", "title_prefix"): 1}
    assert dict(zip(merged.unresolved()["mention"], merged.unresolved()["occurrences"])) == {
        "Nope (1950)": 2, "Gone (1950)": 1}
    assert merged.link_rate("redial") == 0.5
