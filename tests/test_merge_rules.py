"""Entity resolution rules, each on a small hand-made table with the expected films worked out by hand:
cleaning and caps with their per-source counters, IMDb id spellings, title conflicts quarantined with their
reason, field precedence, the order of aliases and genres, one-to-one assignment, fuzzy matching limits,
and the merge statistics."""

from __future__ import annotations

import re

import polars as pl
import pytest
from test_merge import by_id, source_rows

from corpus_build import movie_text
from corpus_build.merge import CLEANING_COUNTERS, MATCH_KINDS, SOURCE_COUNTERS, adjacent_year_blocks, merge_rows
from corpus_build.schema import CORPUS_SCHEMA, QUARANTINE_SCHEMA

MAX_YEAR = 2027
ZERO = dict.fromkeys(SOURCE_COUNTERS, 0)


def film(result, title: str) -> dict:
    [row] = result.corpus.filter(pl.col("title") == title).to_dicts()
    return row


# -- cleaning and caps -------------------------------------------------------------------------------


def test_control_characters_are_removed_and_counted_per_row():
    wiki = source_rows(
        "wikipedia",
        dict(title="Bell\x07 Boy", year=2002, plot="A bellboy."),
        dict(title="Quiet  Film\t Two", year=2002, plot="  \x1b "),  # blank once cleaned: the plot is null
        dict(title="M", year=1931, cast=["Peter\x1b Lorre"]),  # a one-letter title is a title
        dict(title="Plain", year=1990, directors=["Dir\u202e ector"]),
        dict(title=None, year=1990),  # quarantined; nothing to count
        dict(title="Aliased", year=1990, aliases=["Al\x7fias"]),
        dict(title="Plotty", year=1990, plot="Bad\x1b[0m plot"),
    )
    movielens = source_rows("movielens", dict(title="Quiet Film Two", year=2002, plot="The real plot."))
    result = merge_rows([wiki, movielens], max_year=MAX_YEAR)
    assert sorted(result.corpus["title"]) == ["Aliased", "Bell Boy", "M", "Plain", "Plotty", "Quiet Film Two"]
    assert film(result, "Quiet Film Two")["plot"] == "The real plot."  # a blank plot hides no other source's
    assert film(result, "M")["cast"] == ["Peter Lorre"]
    assert film(result, "Plain")["directors"] == ["Dir ector"]
    assert film(result, "Aliased")["aliases"] == ["Alias"]
    assert film(result, "Plotty")["plot"] == "Bad[0m plot"
    # all but the untitled row: the tab and the double space are only white space, the blank plot had an escape
    assert result.source_stats["wikipedia"]["rows_with_control_characters"] == 6
    assert result.source_stats["movielens"]["rows_with_control_characters"] == 0
    assert result.stats["rows_with_control_characters"] == 6


def test_long_plots_names_and_lists_are_capped_and_counted():
    long_plot = "x" * 9_995 + " hello world"  # 10,007 characters: cut at the last space before 10,000
    exact_plot = "y" * 9_990 + " abcdefghi"  # exactly 10,000: kept whole
    wiki = source_rows(
        "wikipedia",
        dict(title="Long Plot", year=1990, plot=long_plot),
        dict(title="Exact Plot", year=1990, plot=exact_plot),
        dict(title="Names", year=1990, aliases=[f"Alias {i:02d}" for i in range(60)],  # 50 kept
             cast=["A" * 300, "B" * 301, *(f"Actor {i}" for i in range(10))],  # a name over 300 characters goes
             directors=[f"Director {i:02d}" for i in range(55)]),  # 50 kept
        dict(title="T" * 500, year=1990),  # 500 characters: a title
        dict(title="L" * 3_000, year=1990),  # over 500: quarantined, its raw row cut to 2,000 characters
    )
    result = merge_rows([wiki], max_year=MAX_YEAR)
    assert film(result, "Long Plot")["plot"] == "x" * 9_995
    assert film(result, "Exact Plot")["plot"] == exact_plot
    names = film(result, "Names")
    assert names["aliases"] == [f"Alias {i:02d}" for i in range(50)]
    assert names["cast"] == ["A" * 300, *(f"Actor {i}" for i in range(9))]  # then the top 10 billed
    assert names["directors"] == [f"Director {i:02d}" for i in range(50)]
    assert result.corpus.height == 4
    stats = result.source_stats["wikipedia"]
    assert {c: stats[c] for c in CLEANING_COUNTERS} == {
        "rows_with_control_characters": 0, "plots_truncated": 1, "aliases_dropped": 10,
        "director_names_dropped": 5, "cast_names_dropped": 1}
    [rejected] = result.quarantine.to_dicts()
    assert rejected["reason"] == "title longer than 500 characters"
    assert len(rejected["raw"]) == 2_000 and rejected["raw"].startswith('{"source":"wikipedia","source_key":"wikipedia-4"')


def test_imdb_id_spellings():
    movielens = source_rows(
        "movielens",
        dict(imdb_id="tt00133093", title="The Matrix", year=1999),  # padded to eight digits
        dict(imdb_id=" 113277 ", title="Heat", year=1995),  # bare number with spaces
        dict(imdb_id="n/a", title="Unknown Id", year=1990),  # not an id: the film gets a rar: id
        dict(imdb_id="tt0000000", title="Zero Id", year=1990),  # no film has id 0
    )
    films = by_id(merge_rows([movielens], max_year=MAX_YEAR))
    assert sorted(films) == sorted(["tt0133093", "tt0113277", movie_text.rar_movie_id("Unknown Id", 1990),
                                    movie_text.rar_movie_id("Zero Id", 1990)])


def test_rows_that_break_the_contract_name_their_source():
    def message(source, missing):
        return re.escape(f"source rows of {source!r} lack columns {missing} (SOURCE_ROW_SCHEMA)")

    wiki = source_rows("wikipedia", dict(title="x", year=1990))
    with pytest.raises(ValueError, match=message("wikipedia", ["imdb_id"])):
        merge_rows([wiki.drop("imdb_id")])
    with pytest.raises(ValueError, match=message("?", ["source"])):
        merge_rows([wiki.drop("source")])
    with pytest.raises(ValueError, match=message("?", ["imdb_id"])):
        merge_rows([wiki.clear().drop("imdb_id")])


def test_no_rows_give_an_empty_corpus_with_its_schema():
    result = merge_rows([], max_year=MAX_YEAR)
    assert result.corpus.schema == pl.Schema(CORPUS_SCHEMA) and result.corpus.height == 0
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert result.stats == {"rows_in": 0, "films": 0, "films_from_several_sources": 0, "rows_merged": 0,
                            "quarantined": 0, "title_conflicts": 0, **dict.fromkeys(CLEANING_COUNTERS, 0)}
    assert result.source_stats == {}


# -- title conflicts ---------------------------------------------------------------------------------


def test_rows_whose_title_is_unrelated_to_their_imdb_ids_film_are_quarantined():
    """The IMDb row is each id's reference (first by source precedence, though MovieLens comes first here)."""
    movielens = source_rows(
        "movielens",
        dict(imdb_id="tt0133093", title="Completely Different Film", year=1999),  # unrelated: quarantined
        dict(imdb_id="tt0133093", title="!!!", year=1999),  # no comparable title: kept
        dict(imdb_id="tt0110413", title="The Professional", year=1994),  # the reference's alias
        dict(imdb_id="tt0190332", title="Crouching Tiger, Hidden Dragon", year=2000,
             aliases=["Wo hu cang long"]),  # its alias is the reference's title
        dict(imdb_id="tt0073195", title="Java", year=1975),  # token-set ratio 'java'/'jaws' = 50: kept
        dict(imdb_id="tt0073195", title="Completely Unrelated Picture", year=1975),  # quarantined
        dict(imdb_id="tt0000777", title="Some Other Film", year=1980),  # the reference has no comparable title
        # token-set ratio 100 ('shining' is a subset), though the plain ratio is only 39: kept
        dict(imdb_id="tt0081505", title="Stanley Kubrick's The Shining", year=1980),
    )
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0133093", title="The Matrix", year=1999),
        dict(imdb_id="tt0110413", title="Léon", year=1994, aliases=["The Professional"]),
        dict(imdb_id="tt0190332", title="Wo hu cang long", year=2000),
        dict(imdb_id="tt0073195", title="Jaws", year=1975),
        dict(imdb_id="tt0000777", title="?", year=1980),
        dict(imdb_id="tt0081505", title="The Shining", year=1980),
    )
    result = merge_rows([movielens, imdb], max_year=MAX_YEAR)
    conflicts = result.quarantine.sort("reason").to_dicts()
    assert [c["source"] for c in conflicts] == ["movielens", "movielens"]
    assert [c["reason"] for c in conflicts] == ["title conflicts with its IMDb id: tt0073195 is 'Jaws'",
                                                "title conflicts with its IMDb id: tt0133093 is 'The Matrix'"]
    assert "Completely Unrelated Picture" in conflicts[0]["raw"] and "Completely Different Film" in conflicts[1]["raw"]
    films = by_id(result)
    assert films["tt0133093"]["title"] == "The Matrix" and films["tt0133093"]["aliases"] == ["!!!"]
    assert films["tt0190332"]["aliases"] == ["Crouching Tiger, Hidden Dragon"]
    assert films["tt0073195"]["aliases"] == ["Java"]
    assert films["tt0000777"]["aliases"] == ["Some Other Film"]
    assert result.stats["title_conflicts"] == 2 and result.stats["quarantined"] == 2
    assert films["tt0081505"]["aliases"] == ["Stanley Kubrick's The Shining"]
    assert result.source_stats["movielens"] == {**ZERO, "rows_in": 8, "quarantined": 2, "title_conflicts": 2,
                                                "matched_imdb_id": 6}
    assert result.source_stats["imdb"] == {**ZERO, "rows_in": 6, "new_films": 6}


# -- field precedence, aliases, genres ---------------------------------------------------------------


def test_each_field_comes_from_its_best_source_and_names_keep_source_order():
    """Row order (source precedence, then source name, then source key): imdb, wikidata_sample, movielens
    '2', movielens '9', movielens_small, letterboxd (unknown: last); wikipedia has no id and comes after."""
    movielens = source_rows(
        "movielens",
        dict(imdb_id="tt0000601", title="Sample, The", year=1960, genres=["Thriller"], source_key="9"),
        dict(imdb_id="tt0000601", title="The Sample Movie", year=1960, genres=["Horror"], source_key="2"),
        dict(imdb_id="tt0000601", title="sample, the", year=1960, source_key="95"),  # spelled as '9'
    )
    small = source_rows("movielens_small", dict(imdb_id="tt0000601", title="Sample, A", year=1960,
                                                genres=["Comedy", "Drama"], source_key="1"))
    letterboxd = source_rows("letterboxd", dict(imdb_id="tt0000601", title="The Sample (Letterboxd)", year=1960,
                                                plot="Letterboxd plot.", runtime_minutes=90, cast=["Someone Else"]))
    imdb = source_rows("imdb", dict(imdb_id="tt0000601", title="The Sample", year=1960, directors=[],
                                    cast=["Imdb Actor"], plot="Imdb plot.", genres=["Drama"], runtime_minutes=100))
    wikidata = source_rows("wikidata_sample", dict(imdb_id="tt0000601", title="The Sample Film", year=1960))
    wiki = source_rows("wikipedia", dict(title="The Sample", year=1960, plot="Wikipedia plot.",
                                         directors=["Wiki Director"], genres=["Western"]))
    result = merge_rows([letterboxd, movielens, small, wiki, wikidata, imdb], max_year=MAX_YEAR)
    assert result.corpus.height == 1
    sample = by_id(result)["tt0000601"]
    assert sample["title"] == "The Sample"
    assert sample["plot"] == "Wikipedia plot."  # plots: wikipedia first, imdb third, unknown sources last
    assert sample["directors"] == ["Wiki Director"]  # IMDb's empty list is no answer
    assert sample["cast"] == ["Imdb Actor"]
    assert sample["runtime_minutes"] == 100
    assert sample["aliases"] == ["The Sample Film", "The Sample Movie", "Sample, The", "Sample, A",
                                 "The Sample (Letterboxd)"]
    # genres: imdb, movielens (rows in input order: '9' then '2'), movielens_small, wikipedia
    assert sample["genres"] == ["Drama", "Thriller", "Horror", "Comedy", "Western"]
    assert sample["sources"] == ["imdb", "letterboxd", "movielens", "movielens_small", "wikidata_sample", "wikipedia"]


def test_title_precedence_between_sources_without_an_imdb_id():
    """Titles: wikipedia before movielens (unlike most fields); movielens before movielens_1m by name."""
    one_m = source_rows("movielens_1m", dict(title="NIXON", year=1995, source_key="1"))
    movielens = source_rows("movielens", dict(title="Heat Wave", year=1950),
                            dict(title="Nixon", year=1995, source_key="9"))
    wiki = source_rows("wikipedia", dict(title="Heat-Wave", year=1950))
    result = merge_rows([one_m, movielens, wiki], max_year=MAX_YEAR)
    assert sorted(result.corpus["title"]) == ["Heat-Wave", "Nixon"]
    assert film(result, "Heat-Wave")["aliases"] == []  # 'Heat Wave' is the same spelling, punctuation aside
    assert film(result, "Heat-Wave")["genres"] == [] and film(result, "Heat-Wave")["directors"] == []
    assert film(result, "Nixon")["sources"] == ["movielens", "movielens_1m"]


def test_films_of_one_row_keep_their_names_and_get_empty_lists():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0000901", title="Solo Film", year=1970, aliases=["Other Solo"]),
        dict(imdb_id="tt0000902", title="Many Names", year=1970, aliases=["Zeta Title", "Alpha Title", "Mu Title",
                                                                          "Beta Title", "Many-Names"]),
        dict(imdb_id="tt0000903", title="Spider-Man", year=2002),
    )
    movielens = source_rows("movielens", dict(imdb_id="tt0000903", title="Spiderman", year=2002))
    films = by_id(merge_rows([imdb, movielens], max_year=MAX_YEAR))
    assert films["tt0000901"]["aliases"] == ["Other Solo"]
    assert films["tt0000902"]["aliases"] == ["Zeta Title", "Alpha Title", "Mu Title", "Beta Title"]
    assert films["tt0000901"]["sources"] == ["imdb"]
    assert films["tt0000901"]["genres"] == [] and films["tt0000901"]["directors"] == []
    assert films["tt0000903"]["aliases"] == []  # 'Spiderman' ~ 'Spider-Man'


def test_single_row_genres_keep_their_order_without_duplicates():
    imdb = source_rows("imdb", dict(imdb_id="tt0000911", title="Genre Soup", year=1980,
                                    genres=["Western", "Crime", "Drama", "Comedy", "Crime", "Sci-Fi", "Horror",
                                            "Bogus Genre", "Thriller"]))
    [soup] = merge_rows([imdb], max_year=MAX_YEAR).corpus.to_dicts()
    assert soup["genres"] == ["Western", "Crime", "Drama", "Comedy", "Science Fiction", "Horror", "Thriller"]
    assert soup["content_hash"] == movie_text.content_hash(soup)


# -- matching ------------------------------------------------------------------------------------------


def test_titles_join_imdb_films_by_alias_and_never_two_years_off():
    imdb = source_rows("imdb", dict(imdb_id="tt0001001", title="Known As", year=1970, aliases=["Other Name", "…"]),
                       dict(imdb_id="tt0001002", title="Far Off", year=1970))
    wiki = source_rows(
        "wikipedia",
        dict(title="Other Name", year=1970, plot="Found by its alias."),
        dict(title="Far Off", year=1972, plot="Two years off: another film."),
        dict(title="?", year=1970, plot="No letters: matches nothing."),
    )
    result = merge_rows([imdb, wiki], max_year=MAX_YEAR)
    films = by_id(result)
    assert films["tt0001001"]["plot"] == "Found by its alias."
    assert films["tt0001002"]["plot"] is None
    assert films[movie_text.rar_movie_id("Far Off", 1972)]["plot"] == "Two years off: another film."
    assert films[movie_text.rar_movie_id("?", 1970)]["plot"] == "No letters: matches nothing."
    assert result.corpus.height == 4


def test_each_imdb_film_takes_one_group_and_the_loser_takes_its_next_choice():
    """'Hamlet' 1990 is exact for the 1990 film; 'Hamlet' 1991 is adjacent to both (1990 has more votes):
    it loses 1990 to the exact group and takes 1992 in a second round."""
    imdb = source_rows("imdb", dict(imdb_id="tt0000701", title="Hamlet", year=1990, imdb_votes=500),
                       dict(imdb_id="tt0000702", title="Hamlet", year=1992, imdb_votes=100))
    wiki = source_rows("wikipedia", dict(title="Hamlet", year=1991, plot="1991"), dict(title="Hamlet", year=1990, plot="1990"))
    films = by_id(merge_rows([imdb, wiki], max_year=MAX_YEAR))
    assert (films["tt0000701"]["plot"], films["tt0000702"]["plot"]) == ("1990", "1991")


def test_between_equal_candidates_the_more_voted_then_the_smaller_id_wins():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0000711", title="Alice", year=1988, imdb_votes=100),
        dict(imdb_id="tt0000712", title="Alice", year=1988, imdb_votes=5_000),
        dict(imdb_id="tt0000722", title="Bob", year=1988, imdb_votes=7),
        dict(imdb_id="tt0000721", title="Bob", year=1988, imdb_votes=7),
        # one insertion each from 'silent crossing night': 100 * (1 - 1/43) = 97.7 for both
        dict(imdb_id="tt0000751", title="Silent Crossing Nights", year=1960, imdb_votes=10),
        dict(imdb_id="tt0000752", title="Silent Crossings Night", year=1960, imdb_votes=1_000),
    )
    wiki = source_rows("wikipedia", dict(title="Alice", year=1988, plot="alice"), dict(title="Bob", year=1988, plot="bob"),
                       dict(title="Silent Crossing Night", year=1960, plot="night"))
    films = by_id(merge_rows([imdb, wiki], max_year=MAX_YEAR))
    assert films["tt0000712"]["plot"] == "alice"
    assert films["tt0000721"]["plot"] == "bob"
    assert films["tt0000752"]["plot"] == "night"


def test_the_best_fuzzy_score_wins_over_votes():
    """'silent rivr crossing' vs 'silent river crossing': 1 insertion, 97.6; vs 'silent rivers crossing':
    2 insertions, 100 * (1 - 2/42) = 95.2 (the better known film)."""
    imdb = source_rows("imdb", dict(imdb_id="tt0000731", title="Silent River Crossing", year=1990, imdb_votes=10),
                       dict(imdb_id="tt0000732", title="Silent Rivers Crossing", year=1990, imdb_votes=1_000))
    wiki = source_rows("wikipedia", dict(title="Silent Rivr Crossing", year=1990, plot="typo"))
    result = merge_rows([imdb, wiki], max_year=MAX_YEAR)
    assert by_id(result)["tt0000731"]["plot"] == "typo"
    assert result.source_stats["wikipedia"]["matched_fuzzy"] == 1


def test_fuzzy_matching_limits_within_one_year():
    """All of 1979, one block. 'rocky iii'/'rocky ii' 94.1: other sequel number; 'drifter'/'drifters' 93.3:
    a short key needs 96; 'nosferatu the vampyre redux' 87.5: a title that adds a word is no typo;
    'apocalypse nw' 96.3 and 'metropoliss' (a 10-letter key, not short) 95.2: matches."""
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0079817", title="Rocky II", year=1979),
        dict(imdb_id="tt0000761", title="Drifters", year=1979),
        dict(imdb_id="tt0078788", title="Apocalypse Now", year=1979),
        dict(imdb_id="tt0000762", title="Metropolis", year=1979),
        dict(imdb_id="tt0079641", title="Nosferatu the Vampyre", year=1979),
    )
    wiki = source_rows(
        "wikipedia",
        dict(title="Rocky III", year=1979, plot="r"),
        dict(title="The Drifter", year=1979, plot="d"),
        dict(title="Apocalypse Nw", year=1979, plot="a"),
        dict(title="Metropoliss", year=1979, plot="m"),
        dict(title="Nosferatu the Vampyre Redux", year=1979, plot="n"),
    )
    result = merge_rows([imdb, wiki], max_year=MAX_YEAR)
    films = by_id(result)
    assert films["tt0078788"]["plot"] == "a" and films["tt0000762"]["plot"] == "m"
    assert [films[i]["plot"] for i in ("tt0079817", "tt0000761", "tt0079641")] == [None, None, None]
    assert result.source_stats["wikipedia"]["matched_fuzzy"] == 2
    assert result.source_stats["wikipedia"]["new_films"] == 3


def test_fuzzy_matching_looks_one_year_either_side():
    imdb = source_rows("imdb", dict(imdb_id="tt0000771", title="Silent River Crossing", year=1990),
                       dict(imdb_id="tt0000772", title="Another Film Entirely", year=1990),
                       dict(imdb_id="tt0000773", title="Third Film Altogether", year=1990))
    wiki = source_rows("wikipedia", dict(title="Silent Rivr Crossing", year=1989, plot="before"),
                       dict(title="Another Flm Entirely", year=1991, plot="after"),
                       dict(title="Third Flm Altogether", year=1992, plot="too far"))
    films = by_id(merge_rows([imdb, wiki], max_year=MAX_YEAR))
    assert films["tt0000771"]["plot"] == "before" and films["tt0000772"]["plot"] == "after"
    assert films["tt0000773"]["plot"] is None


def test_adjacent_year_blocks():
    queries = pl.DataFrame({"year": [1990, 1995, 2000], "q": ["a", "b", "c"]})
    choices = pl.DataFrame({"year": [1989, 1991, 1993, 1997, 2001], "c": ["v", "w", "x", "y", "z"]})
    blocks = {block["year"][0]: sorted(near["c"]) for block, near in adjacent_year_blocks(queries, choices)}
    assert blocks == {1990: ["v", "w"], 2000: ["z"]}  # 1995: nothing in 1994..1996


# -- statistics --------------------------------------------------------------------------------------


def test_merge_statistics_per_source_and_overall():
    imdb = source_rows("imdb", dict(imdb_id="tt0000801", title="Alpha", year=1990),
                       dict(imdb_id="tt0000802", title="Beta", year=1991))
    movielens = source_rows("movielens", dict(imdb_id="tt0000801", title="Alpha", year=1990),
                            dict(imdb_id="tt0000803", title="Gamma", year=1992))
    wiki_1990s = source_rows("wikipedia", dict(title="Beta", year=1991), dict(title="Delta", year=1993),
                             dict(title="Bad", year=1700))
    wiki_more = source_rows("wikipedia", dict(title="Delta", year=1993, source_key="d2"),
                            dict(title="Epsilon", year=1994, source_key="e2"))
    result = merge_rows([imdb, movielens, wiki_1990s, wiki_more], max_year=MAX_YEAR)
    assert sorted(result.corpus["title"]) == ["Alpha", "Beta", "Delta", "Epsilon", "Gamma"]
    assert result.source_stats == {
        "imdb": {**ZERO, "rows_in": 2, "new_films": 2},
        "movielens": {**ZERO, "rows_in": 2, "matched_imdb_id": 1, "new_films": 1},
        # Beta joins IMDb; Delta is new, its second row joins it; Epsilon is new; 'Bad' is quarantined
        "wikipedia": {**ZERO, "rows_in": 5, "quarantined": 1, "matched_title_year": 2, "new_films": 2},
    }
    assert result.stats == {"rows_in": 9, "films": 5, "films_from_several_sources": 2, "rows_merged": 3,
                            "quarantined": 1, "title_conflicts": 0, **dict.fromkeys(CLEANING_COUNTERS, 0)}
    assert set(MATCH_KINDS) <= set(SOURCE_COUNTERS)
