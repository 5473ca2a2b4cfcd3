"""Entity resolution: IMDb-id matches, title + year (±1), fuzzy titles, ids, aliases, quarantine."""

from __future__ import annotations

import polars as pl
import pytest

from corpus_build import movie_text
from corpus_build.merge import build_corpus, merge_rows
from corpus_build.normalise import canonical_genre, canonical_genres, sequel_markers
from corpus_build.schema import CORPUS_SCHEMA, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceResult

MAX_YEAR = 2027


def source_rows(source: str, *records: dict) -> pl.DataFrame:
    """Rows in SOURCE_ROW_SCHEMA; unspecified fields are null / empty lists."""
    rows = []
    for i, record in enumerate(records):
        row = {c: None for c in SOURCE_ROW_SCHEMA}
        row.update(source=source, source_key=f"{source}-{i}", genres=[], directors=[], cast=[], aliases=[])
        row.update(record)
        rows.append(row)
    return pl.DataFrame(rows, schema=SOURCE_ROW_SCHEMA)


def by_id(result) -> dict[str, dict]:
    return {row["movie_id"]: row for row in result.corpus.iter_rows(named=True)}


def test_imdb_id_matches_across_and_within_sources():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0133093", title="The Matrix", year=1999, imdb_rating=8.7, imdb_votes=2_000_000,
             runtime_minutes=136, directors=["Lana Wachowski"], genres=["Action", "Sci-Fi"]),
    )
    movielens = source_rows(
        "movielens",
        dict(imdb_id="0133093", title="Matrix, The", year=1999, genres=["Thriller"]),  # same id, unpadded
        dict(imdb_id="tt0133093", title="The Matrix", year=1999, genres=["Sci-Fi"]),  # duplicate in source
    )
    result = merge_rows([imdb, movielens], max_year=MAX_YEAR)
    assert result.corpus.height == 1
    film = by_id(result)["tt0133093"]
    assert film["sources"] == ["imdb", "movielens"]
    assert film["imdb_rating"] == pytest.approx(8.7) and film["runtime_minutes"] == 136
    assert film["genres"] == ["Action", "Science Fiction", "Thriller"]
    assert result.source_stats["movielens"]["matched_imdb_id"] == 2
    assert result.source_stats["imdb"]["new_films"] == 1
    assert result.stats["rows_merged"] == 2


def test_title_and_year_match_exact_then_adjacent_year():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0000011", title="Le Samouraï", year=1967),
        dict(imdb_id="tt0000012", title="Heat", year=1995),
    )
    wiki = source_rows(
        "wikipedia",
        dict(title="Le Samourai", year=1967, plot="A hitman."),  # accents differ: same key
        dict(title="Heat", year=1996, plot="A heist."),  # one year off
        dict(title="Heat", year=1998, plot="Not the same film."),  # too far: a film of its own
    )
    result = merge_rows([imdb, wiki], max_year=MAX_YEAR)
    films = by_id(result)
    assert films["tt0000011"]["plot"] == "A hitman." and films["tt0000011"]["title"] == "Le Samouraï"
    assert films["tt0000012"]["plot"] == "A heist." and films["tt0000012"]["year"] == 1995
    assert films[movie_text.rar_movie_id("Heat", 1998)]["plot"] == "Not the same film."
    assert result.source_stats["wikipedia"]["matched_title_year"] == 2
    assert result.source_stats["wikipedia"]["new_films"] == 1


def test_each_imdb_film_absorbs_one_title_group_preferring_the_exact_year():
    imdb = source_rows("imdb", dict(imdb_id="tt0099726", title="Hamlet", year=1990))
    wiki = source_rows(
        "wikipedia",
        dict(title="Hamlet", year=1991, plot="later one"),
        dict(title="Hamlet", year=1990, plot="exact one"),
    )
    films = by_id(merge_rows([imdb, wiki], max_year=MAX_YEAR))
    assert films["tt0099726"]["plot"] == "exact one"
    assert films[movie_text.rar_movie_id("Hamlet", 1991)]["plot"] == "later one"


def test_fuzzy_match_for_near_identical_titles_only():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0120737", title="The Lord of the Rings: The Fellowship of the Ring", year=2001),
        dict(imdb_id="tt0079817", title="Rocky II", year=1979),
        dict(imdb_id="tt0926084", title="Harry Potter and the Deathly Hallows: Part 1", year=2010),
        dict(imdb_id="tt0019839", title="Drifters", year=1929),
    )
    wiki = source_rows(
        "wikipedia",
        dict(title="Lord of the Rings: Fellowship of the Ring", year=2001, plot="Frodo."),
        dict(title="Rocky III", year=1979, plot="Sequel number differs."),
        dict(title="Harry Potter and the Deathly Hallows – Part 2", year=2011, plot="Part 2."),
        dict(title="The Drifter", year=1929, plot="A western, not the documentary."),  # short keys: stricter
    )
    result = merge_rows([imdb, wiki], max_year=MAX_YEAR)
    films = by_id(result)
    assert films["tt0120737"]["plot"] == "Frodo."
    assert films["tt0079817"]["plot"] is None
    assert films["tt0926084"]["plot"] is None
    assert films["tt0019839"]["plot"] is None
    assert result.source_stats["wikipedia"]["matched_fuzzy"] == 1
    assert result.corpus.height == 7
    # a stricter threshold turns the fuzzy match off
    assert merge_rows([imdb, wiki], max_year=MAX_YEAR, fuzzy_threshold=99).corpus.height == 8


def test_rows_with_different_imdb_ids_never_merge():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0000021", title="Alice", year=1988),
        dict(imdb_id="tt0000022", title="Alice", year=1988),
    )
    movielens = source_rows("movielens", dict(imdb_id="tt0000023", title="Alice", year=1988))
    wiki = source_rows("wikipedia", dict(title="Alice", year=1988, plot="p"))
    result = merge_rows([imdb, movielens, wiki], max_year=MAX_YEAR)
    assert sorted(result.corpus["movie_id"]) == ["tt0000021", "tt0000022", "tt0000023"]
    assert result.corpus["movie_id"].is_unique().all()
    assert result.corpus.filter(pl.col("plot") == "p").height == 1  # the title group joined exactly one


def test_ids_and_hashes_are_stable_across_runs_and_row_order():
    imdb = source_rows("imdb", *(dict(imdb_id=f"tt{i:07d}", title=f"Film {i}", year=1950 + i % 50) for i in range(1, 40)))
    wiki = source_rows("wikipedia", *(dict(title=f"Film {i}", year=1950 + i % 50, plot=f"plot {i}") for i in range(20, 60)))
    first = merge_rows([imdb, wiki], max_year=MAX_YEAR).corpus
    again = merge_rows([wiki.sample(fraction=1.0, shuffle=True, seed=3), imdb.reverse()], max_year=MAX_YEAR).corpus
    assert first.equals(again)
    assert first.height == 59
    wiki_only = first.filter(pl.col("movie_id").str.starts_with("rar:"))
    assert wiki_only.height == 20
    assert set(wiki_only["movie_id"]) == {movie_text.rar_movie_id(f"Film {i}", 1950 + i % 50) for i in range(40, 60)}
    for row in first.iter_rows(named=True):
        assert row["content_hash"] == movie_text.content_hash(row)


def test_field_precedence_aliases_and_schema():
    imdb = source_rows(
        "imdb",
        dict(imdb_id="tt0211915", title="Amélie", year=2001, aliases=["Le fabuleux destin d'Amélie Poulain"],
             cast=[f"Actor {i}" for i in range(15)], directors=["Jean-Pierre Jeunet"], imdb_votes=800_000),
    )
    wiki = source_rows(
        "wikipedia",
        dict(title="Amelie", year=2001, plot="A shy waitress.", cast=["Audrey Tautou"], genres=["Romance", "Comedy"]),
    )
    movielens = source_rows(
        "movielens",
        dict(imdb_id="tt0211915", title="Amelie (Fabuleux destin d'Amélie Poulain, Le)", year=2001, genres=["Comedy", "Romance"]),
    )
    result = merge_rows([wiki, movielens, imdb], max_year=MAX_YEAR)
    assert result.corpus.schema == pl.Schema(CORPUS_SCHEMA)
    film = by_id(result)["tt0211915"]
    assert film["title"] == "Amélie"
    assert film["plot"] == "A shy waitress."
    assert film["cast"] == [f"Actor {i}" for i in range(10)]  # IMDb wins, top billed only
    assert film["genres"] == ["Comedy", "Romance"]
    # other titles seen, in source order; spellings differing only in case/punctuation count once
    assert film["aliases"] == ["Le fabuleux destin d'Amélie Poulain", "Amelie (Fabuleux destin d'Amélie Poulain, Le)", "Amelie"]
    assert film["sources"] == ["imdb", "movielens", "wikipedia"]


def test_quarantine_keeps_good_rows_and_gives_reasons():
    wiki = source_rows(
        "wikipedia",
        dict(title="  ", year=1990),
        dict(title="Too Early", year=1700),
        dict(title="Too Late", year=2999),
        dict(title="No Year"),
        dict(title="Fine", year=1990),
    )
    # an IMDb id places a film even when no source dates it; a row with neither is quarantined
    movielens = source_rows(
        "movielens",
        dict(imdb_id="tt0000031", title="Dated Elsewhere"),
        dict(imdb_id="tt0000032", title="Never Dated"),
    )
    imdb = source_rows("imdb", dict(imdb_id="tt0000031", title="Dated Elsewhere", year=1977))
    result = merge_rows([wiki, movielens, imdb], max_year=MAX_YEAR)
    assert sorted(result.corpus["title"]) == ["Dated Elsewhere", "Fine", "Never Dated"]
    assert by_id(result)["tt0000031"]["year"] == 1977 and by_id(result)["tt0000032"]["year"] is None
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert result.quarantine_reasons() == {
        "empty title": 1,
        "year missing and no IMDb id": 1,
        "year outside 1874..2027": 2,
    }
    assert result.source_stats["wikipedia"]["quarantined"] == 4
    assert "Too Early" in result.quarantine.filter(pl.col("reason").str.contains("1700"))["raw"][0]


def test_build_corpus_keeps_reader_quarantine():
    rejected = pl.DataFrame(
        [{"source": "wikipedia", "file": "movies-1990s.json", "line": 7, "reason": "not JSON", "raw": "{"}],
        schema=QUARANTINE_SCHEMA,
    )
    rows = source_rows("wikipedia", dict(title="Fine", year=1990))
    result = build_corpus({"wikipedia": SourceResult(rows=rows, quarantine=rejected)}, max_year=MAX_YEAR)
    assert result.corpus.height == 1
    assert result.quarantine["reason"].to_list() == ["not JSON"]
    assert result.source_stats["wikipedia"]["reader_quarantined"] == 1


def test_source_rows_must_follow_the_contract():
    with pytest.raises(ValueError, match="lack columns.*imdb_id"):
        merge_rows([source_rows("wikipedia", dict(title="x", year=1990)).drop("imdb_id")])


def test_genre_vocabulary_and_sequel_markers():
    assert canonical_genre("Sci-Fi") == "Science Fiction"
    assert canonical_genre("science fiction film") == "Science Fiction"
    assert canonical_genre("Animated") == "Animation"
    assert canonical_genre("(no genres listed)") is None
    assert canonical_genres(["Noir", "Film-Noir", "Children", "IMAX"]) == ["Film Noir", "Family"]
    assert sequel_markers("rocky ii") != sequel_markers("rocky iii")
    assert sequel_markers("the matrix") == frozenset()


def test_vectorised_movie_text_equals_the_contract_function():
    from corpus_build.merge import movie_text_expr

    films = pl.DataFrame(
        [
            dict(title="Amélie", year=2001, genres=["Comedy", "", None], directors=[], cast=[f"A{i}" for i in range(8)],
                 plot="\x1f  A shy waitress.\u2003\n"),
            dict(title="No Year", year=None, genres=[], directors=["X", "Y"], cast=[], plot=None),
            dict(title="Only Title", year=1950, genres=[], directors=[], cast=[None, "B"], plot="   "),
            dict(title=None, year=1, genres=[f"G{i}" for i in range(7)], directors=[f"D{i}" for i in range(7)],
                 cast=[], plot="p"),
            dict(title="Year Zero", year=0, genres=[], directors=[], cast=[], plot=None),
        ],
        schema={k: CORPUS_SCHEMA[k] for k in ("title", "year", "genres", "directors", "cast", "plot")},
    )
    texts = films.select(movie_text_expr())[:, 0].to_list()
    assert texts == [movie_text.movie_text(row) for row in films.iter_rows(named=True)]


def test_vectorised_title_keys_equal_the_contract_function():
    from corpus_build.normalise import safe_title_key, title_keys

    titles = ["Matrix, The", "Homme, L'", "A Man & a Woman", "Good, the Bad, The", "  The   The Movie ", "An",
              "", None, "x_y", "Rocky II", "Boot, Das", "Tab\tTitle", "Amélie", "Straße", "Ça, La", "C.C. & Company"]
    assert title_keys(pl.Series(titles)).to_list() == [safe_title_key(t) for t in titles]
