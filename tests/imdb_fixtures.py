"""IMDb-format fixture dumps, written by code into a temporary folder (no committed data).

A few dozen rows per file, in the real layout (gzip TSV, header, ``\\N`` nulls, no quoting), with the
awkward cases the reader must handle: non-movie title types, adult titles, the same title in different
years, unicode (including a decomposed NFD title), quote characters, nulls, malformed rows and
principals listed out of billing order.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from corpus_build.sources.imdb import BASICS, COLUMNS, CREW, NAMES, PRINCIPALS, RATINGS

N = "\\N"

# tconst, titleType, primaryTitle, originalTitle, isAdult, startYear, endYear, runtimeMinutes, genres
BASICS_ROWS = [
    ("tt0133093", "movie", "The Matrix", "The Matrix", "0", "1999", N, "136", "Action,Sci-Fi"),
    ("tt0040416", "movie", "Hamlet", "Hamlet", "0", "1948", N, "154", "Drama"),
    ("tt0099726", "movie", "Hamlet", "Hamlet", "0", "1990", N, "134", "Drama"),
    ("tt0116477", "movie", "Hamlet", "Hamlet", "0", "1996", N, "242", "Drama"),
    ("tt0211915", "movie", "Amélie", "Le fabuleux destin d'Amélie Poulain", "0", "2001", N, "122",
     "Comedy,Romance"),
    ("tt0245429", "movie", "Spirited Away", "千と千尋の神隠し", "0", "2001", N, "125",
     "Adventure,Animation,Family"),
    ("tt0113247", "movie", "La Haine", "La haine", "0", "1995", N, "98", "Crime,Drama"),
    ("tt0000777", "movie", 'Weird: The "Al" Story', 'Weird: The "Al" Story', "0", "2022", N, "108",
     "Biography,Comedy"),
    ("tt0499000", "movie", "Cafe\u0301 Society", "Cafe\u0301 Society", "0", "2016", N, N, N),  # NFD
    ("tt10000001", "movie", "Untitled Future Film", "Untitled Future Film", "0", N, N, N, "Drama"),
    ("tt0050083", "movie", "12 Angry Men", "12 Angry Men", "0", "1957", N, "96", "Crime,Drama"),
    ("tt9000001", "movie", "Adult Feature", "Adult Feature", "1", "2005", N, "80", "Adult"),
    ("tt9000002", "movie", "Another Adult Feature", "Another Adult Feature", "1", "2006", N, "75", N),
    ("tt0000001", "short", "Carmencita", "Carmencita", "0", "1894", N, "1", "Documentary,Short"),
    ("tt0108778", "tvSeries", "Friends", "Friends", "0", "1994", "2004", "22", "Comedy,Romance"),
    ("tt0583459", "tvEpisode", "The One Where Monica Gets a Roommate", "The One Where Monica Gets a Roommate",
     "0", "1994", N, "22", "Comedy,Romance"),
    ("tt0120586", "tvMovie", "A TV Film", "A TV Film", "0", "1998", N, "90", "Drama"),
    ("tt0106062", "video", "Straight to Video", "Straight to Video", "0", "1993", N, "85", "Action"),
    ("tt0132245", "videoGame", "A Game", "A Game", "0", "1998", N, N, "Adventure"),
    ("tt0087182", "movie", "Dune", "Dune", "0", "1984", N, "137", "Action,Adventure,Sci-Fi"),
    ("tt1160419", "movie", "Dune", "Dune: Part One", "0", "2021", N, "155", "Action,Adventure,Drama"),
    ("tt0000439", "movie", "The Great Train Robbery", "The Great Train Robbery", "0", "1903", N, "11",
     "Action,Crime,Western"),
    ("tt0056172", "movie", "Lawrence of Arabia", "Lawrence of Arabia", "0", "1962", N, "218",
     "Adventure,Biography,Drama"),
    ("tt0095765", "movie", "Cinema Paradiso", "Nuovo Cinema Paradiso", "0", "1988", N, "155", "Drama,Romance"),
    ("tt0118799", "movie", "Life Is Beautiful", "La vita è bella", "0", "1997", N, "116", "Comedy,Drama,Romance"),
    ("tt0082096", "movie", "Das Boot", "Das Boot", "0", "1981", N, "149", "Drama,War"),
    ("tt0457430", "movie", "Pan's Labyrinth", "El laberinto del fauno", "0", "2006", N, "118",
     "Drama,Fantasy,War"),
    ("tt0090605", "movie", "Aliens", "Aliens", "0", "1986", N, "137", "Action,Adventure,Sci-Fi"),
    ("tt9000003", "movie", "Third Adult Feature", "Third Adult Feature", "1", N, N, N, N),
    ("tt0303461", "tvSeries", "Firefly", "Firefly", "0", "2002", "2003", "44", "Adventure,Drama,Sci-Fi"),
    ("tt0120737", "tvShort", "A TV Short", "A TV Short", "0", "2001", N, "7", "Animation,Short"),
    ("tt0384766", "tvMiniSeries", "Rome", "Rome", "0", "2005", "2007", "52", "Action,Drama,History"),
    ("tt0196229", "tvSpecial", "A Special", "A Special", "0", "2000", N, "60", "Music"),
    ("tt0114709", "movie", "Toy Story", "Toy Story", "0", "1995", N, "81", "Adventure,Animation,Comedy"),
]
MOVIE_TCONSTS = {r[0] for r in BASICS_ROWS if r[1] == "movie" and r[4] == "0"}
# Malformed lines, written after the good rows: (line text, reason fragment).
BASICS_BAD = [
    ("tt0999991\tmovie\tShort Row\tShort Row\t0\t2001\t\\N\t90", "wrong number of fields: 8"),
    ("tt0999992\tmovie\tBad Year\tBad Year\t0\t19x9\t\\N\t90\tDrama", "bad startYear: 19x9"),
]

RATINGS_ROWS = [
    ("tt0133093", "8.7", "2100000"), ("tt0040416", "7.6", "42000"), ("tt0099726", "6.7", "31000"),
    ("tt0211915", "8.3", "800000"), ("tt0245429", "8.6", "900000"), ("tt0113247", "8.1", "200000"),
    ("tt0050083", "9.0", "900000"), ("tt9000001", "5.0", "100"), ("tt0108778", "8.9", "1100000"),
    ("tt0087182", "6.3", "170000"), ("tt1160419", "8.0", "800000"), ("tt0000439", "7.3", "20000"),
    ("tt0056172", "8.3", "310000"), ("tt0095765", "8.5", "280000"), ("tt0118799", "8.6", "740000"),
    ("tt0082096", "8.4", "260000"), ("tt0457430", "8.2", "700000"), ("tt0090605", "8.4", "740000"),
    ("tt0303461", "9.0", "290000"), ("tt0114709", "8.3", "1050000"),
]
RATINGS_BAD = [("tt0116477\t7.7", "wrong number of fields: 2")]

CREW_ROWS = [
    ("tt0133093", "nm0905154,nm0905152", "nm0905152,nm0905154"),
    ("tt0040416", "nm0000110", N), ("tt0099726", "nm0001988", N), ("tt0116477", "nm0000110", N),
    ("tt0211915", "nm0000466", "nm0000466"), ("tt0245429", "nm0594503", "nm0594503"),
    ("tt0113247", "nm0440872", "nm0440872"), ("tt0050083", "nm0001486", N),
    ("tt0000777", N, N), ("tt0108778", N, "nm0193295"),
    ("tt0087182", "nm0000186", "nm0000186"), ("tt1160419", "nm0898288", "nm0898288"),
    ("tt0114709", "nm0005124", "nm0005124,nm0004056"), ("tt0457430", "nm0868219", "nm0868219"),
]

# tconst, ordering, nconst, category, job, characters -- deliberately not in billing order.
PRINCIPALS_ROWS = [
    ("tt0133093", "3", "nm0005251", "actress", N, '["Trinity"]'),
    ("tt0133093", "1", "nm0000206", "actor", N, '["Neo"]'),
    ("tt0133093", "2", "nm0000401", "actor", N, '["Morpheus"]'),
    ("tt0133093", "4", "nm0915989", "actor", N, '["Agent Smith"]'),
    ("tt0133093", "5", "nm0905154", "director", N, N),
    ("tt0133093", "6", "nm0204485", "composer", N, N),
    ("tt0211915", "1", "nm0851582", "actress", N, '["Amélie Poulain"]'),
    ("tt0211915", "2", "nm0440872", "actor", N, '["Nino Quincampoix"]'),
    ("tt0245429", "1", "nm0000000", "actress", N, '["Chihiro"]'),  # nconst missing from name.basics
    ("tt0245429", "2", "nm0433304", "self", N, N),
    ("tt0050083", "1", "nm0000020", "actor", N, '["Juror 8"]'),
    *[("tt0050083", str(i), f"nm90000{i:02d}", "actor", N, f'["Juror {i}"]') for i in range(2, 13)],
    ("tt0108778", "1", "nm0001073", "actress", N, '["Rachel"]'),
]
PRINCIPALS_BAD = [("tt0133093\tseven\tnm0000999\tactor\t\\N\t\\N", "bad ordering: seven")]

# nconst, primaryName, birthYear, deathYear, primaryProfession, knownForTitles
NAMES_ROWS = [
    ("nm0905154", "Lana Wachowski", "1965", N, "writer,director", "tt0133093"),
    ("nm0905152", "Lilly Wachowski", "1967", N, "writer,director", "tt0133093"),
    ("nm0000206", "Keanu Reeves", "1964", N, "actor", "tt0133093"),
    ("nm0000401", "Laurence Fishburne", "1961", N, "actor", "tt0133093"),
    ("nm0005251", "Carrie-Anne Moss", "1967", N, "actress", "tt0133093"),
    ("nm0915989", "Hugo Weaving", "1960", N, "actor", "tt0133093"),
    ("nm0204485", "Don Davis", "1957", N, "composer", "tt0133093"),
    ("nm0000110", "Laurence Olivier", "1907", "1989", "actor,director", "tt0040416"),
    ("nm0001988", "Franco Zeffirelli", "1923", "2019", "director", "tt0099726"),
    ("nm0000466", "Jean-Pierre Jeunet", "1953", N, "director", "tt0211915"),
    ("nm0851582", "Audrey Tautou", "1976", N, "actress", "tt0211915"),
    ("nm0440872", "Mathieu Kassovitz", "1967", N, "actor,director", "tt0113247"),
    ("nm0594503", "宮崎駿", "1941", N, "director", "tt0245429"),
    ("nm0433304", "Zoe\u0308 Self", N, N, "self", N),
    ("nm0001486", "Sidney Lumet", "1924", "2011", "director", "tt0050083"),
    ("nm0000020", "Henry Fonda", "1905", "1982", "actor", "tt0050083"),
    *[(f"nm90000{i:02d}", f"Juror Actor {i}", N, N, "actor", "tt0050083") for i in range(2, 13)],
    ("nm0001073", "Jennifer Aniston", "1969", N, "actress", "tt0108778"),
    ("nm0000186", "David Lynch", "1946", "2025", "director,writer", "tt0087182"),
    ("nm0898288", "Denis Villeneuve", "1967", N, "director,writer", "tt1160419"),
    ("nm0005124", "John Lasseter", "1957", N, "director,producer", "tt0114709"),
    ("nm0868219", "Guillermo del Toro", "1964", N, "director,writer", "tt0457430"),
]
NAMES_BAD = [("nm0999999\tOnly Three\t1970", "wrong number of fields: 3")]

ROWS = {BASICS: (BASICS_ROWS, BASICS_BAD), RATINGS: (RATINGS_ROWS, RATINGS_BAD), CREW: (CREW_ROWS, []),
        PRINCIPALS: (PRINCIPALS_ROWS, PRINCIPALS_BAD), NAMES: (NAMES_ROWS, NAMES_BAD)}
BAD_LINE_COUNT = sum(len(bad) for _, bad in ROWS.values())


def imdb_lines(name: str, malformed: bool = True) -> list[str]:
    """The lines of one fixture file (header first); malformed lines come after the good rows."""
    good, bad = ROWS[name]
    lines = ["\t".join(COLUMNS[name]), *("\t".join(row) for row in good)]
    return lines + ([text for text, _ in bad] if malformed else [])


def write_imdb_fixtures(folder: Path, malformed: bool = True) -> dict[str, Path]:
    """Write the five fixture dumps into ``folder``; return {file name: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in COLUMNS:
        paths[name] = write_gzip_lines(folder / name, imdb_lines(name, malformed))
    return paths


def write_gzip_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
    return path


def bad_line_number(name: str, index: int = 0) -> int:
    """1-based line number of the ``index``-th malformed line of ``name`` (header is line 1)."""
    return 1 + len(ROWS[name][0]) + index + 1
