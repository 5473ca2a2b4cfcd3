"""Write IMDb-format dumps at full scale (synthetic, seeded) for the corpus benchmark.

The five files of the IMDb non-commercial datasets (title.basics, title.ratings, title.crew,
title.principals, name.basics), gzip TSV with a header, ``\\N`` nulls and no quoting, with realistic
field distributions: by default 345,000 ``movie`` titles (about 1.2% adult, so >= 337,000 films survive
the reader's filter) among ~120,000 titles of other types, ratings for ~80%, one or two directors,
5-8 principals per film (1-4 for other titles), ~600,000 people with unicode names.

    python benchmarks/make_imdb_dumps.py /tmp/imdb-full [--movies 345000] [--seed 7] [--malformed 0]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import polars as pl

GENRES = np.array(["Drama", "Comedy", "Documentary", "Action", "Romance", "Thriller", "Crime", "Horror",
                   "Adventure", "Family", "Mystery", "Biography", "Fantasy", "History", "Music",
                   "Sci-Fi", "Animation", "Musical", "War", "Western", "Sport", "Film-Noir", "News"])
GENRE_WEIGHTS = np.linspace(3.0, 0.2, len(GENRES)) / np.linspace(3.0, 0.2, len(GENRES)).sum()
OTHER_TYPES = np.array(["short", "tvMovie", "video", "tvSeries", "tvEpisode", "tvMiniSeries", "videoGame"])
WORDS = ("Love Night Day City Blood Dark Last First Man Woman Girl Boy King Queen House Road River Sea "
         "Dream Fire Ice Storm Shadow Light Heart Secret Story Time War Game Life Death Return Rise Fall "
         "Ghost Star Moon Sun Summer Winter Angel Devil Stranger Family Home Lost Wild Silent Broken "
         "Golden Black White Red Blue Iron Stone Glass Paper Eternal Hidden Midnight Morning Paradise "
         "Amélie Straße Été Niño Café Mädchen Ça Øresund Łódź Sœur Мосты Любовь 東京 夜 사랑 Αθήνα").split()
FIRST = ("James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Barbara Richard "
         "Susan Joseph Jessica Thomas Sarah Carlos María José Lucía Jean Chloé François Zoë Søren Björn "
         "Małgorzata Jiří Ayşe Dmitri Olga Hiroshi Yuki Wei Mei Anjali Raj Oluwaseun Amara").split()
LAST = ("Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernández López "
        "González Wilson Anderson Taylor Moore Dubois Lefèvre Müller Schröder Nielsen Øberg Kowalski "
        "Dvořák Yılmaz Ivanov Petrova Tanaka Suzuki Wang Li Kim Park Sharma Okafor Mensah O'Brien").split()
CREW_CATEGORIES = np.array(["director", "writer", "producer", "composer", "cinematographer", "editor"])


def _ids(prefix: str, numbers: np.ndarray) -> pl.Series:
    """IMDb-style ids: prefix + number zero-padded to 7 digits (tt0133093, nm0000206)."""
    return pl.select(pl.format(prefix + "{}", pl.lit(pl.Series(numbers)).cast(pl.String).str.zfill(7))).to_series()


def _tconsts(rng: np.random.Generator, n: int) -> pl.Series:
    return _ids("tt", np.cumsum(rng.integers(1, 20, n)))  # sorted, unique, with gaps like the real ids


def _titles(rng: np.random.Generator, n: int) -> list[str]:
    lengths = rng.choice([1, 2, 3, 4], n, p=[0.3, 0.4, 0.2, 0.1])
    words = rng.integers(0, len(WORDS), (n, 4))
    prefix = rng.random(n) < 0.15  # "The ..." titles
    return [("The " if p else "") + " ".join(WORDS[w] for w in row[:k])
            for row, k, p in zip(words, lengths, prefix)]


def _nullify(values: pl.Series, rng: np.random.Generator, fraction: float) -> pl.Series:
    return values.zip_with(pl.Series(rng.random(len(values)) >= fraction), pl.Series([None], dtype=values.dtype))


def make_basics(rng, movies: int) -> pl.DataFrame:
    others = int(movies * 0.35)
    n = movies + others
    types = np.concatenate([np.full(movies, "movie"), rng.choice(OTHER_TYPES, others)])
    rng.shuffle(types)
    is_movie = types == "movie"
    titles = _titles(rng, n)
    originals = [t if r >= 0.15 else f"{t} ({WORDS[i]})"
                 for t, r, i in zip(titles, rng.random(n), rng.integers(0, len(WORDS), n))]
    years = np.clip(np.rint(2025 - rng.exponential(28, n)), 1894, 2026).astype(np.int64)
    runtimes = np.where(is_movie, np.clip(rng.normal(96, 22, n), 40, 400), rng.integers(1, 60, n))
    genre_count = rng.choice([1, 2, 3], n, p=[0.35, 0.35, 0.3])
    genre_idx = rng.choice(len(GENRES), (n, 3), p=GENRE_WEIGHTS)
    genres = [",".join(sorted(set(GENRES[row[:k]]))) for row, k in zip(genre_idx, genre_count)]
    return pl.DataFrame({
        "tconst": _tconsts(rng, n),
        "titleType": types,
        "primaryTitle": titles,
        "originalTitle": originals,
        "isAdult": np.where(rng.random(n) < 0.012, "1", "0"),
        "startYear": _nullify(pl.Series(years).cast(pl.String), rng, 0.03),
        "endYear": pl.Series([None] * n, dtype=pl.String),
        "runtimeMinutes": _nullify(pl.Series(runtimes.astype(np.int64)).cast(pl.String), rng, 0.1),
        "genres": _nullify(pl.Series(genres), rng, 0.02),
    })


def make_ratings(rng, tconsts: pl.Series) -> pl.DataFrame:
    rated = tconsts.filter(pl.Series(rng.random(len(tconsts)) < 0.8))
    n = len(rated)
    return pl.DataFrame({
        "tconst": rated,
        "averageRating": pl.Series(np.round(np.clip(rng.normal(6.2, 1.3, n), 1, 10), 1)).cast(pl.String),
        "numVotes": pl.Series(np.maximum(5, rng.lognormal(5, 2, n)).astype(np.int64)).cast(pl.String),
    })


def _people(rng, names: int, n: int, skew: float = 2.5) -> pl.Series:
    """n person ids, a few people appearing far more often than most (power law)."""
    index = (rng.random(n) ** skew * names).astype(np.int64) + 1
    return _ids("nm", index)


def make_crew(rng, tconsts: pl.Series, names: int) -> pl.DataFrame:
    n = len(tconsts)
    first, second = _people(rng, names, n), _people(rng, names, n)
    count = rng.choice([0, 1, 2], n, p=[0.04, 0.88, 0.08])
    directors = pl.DataFrame({"a": first, "b": second, "k": count}).select(
        pl.when(pl.col("k") == 0).then(None).when(pl.col("k") == 1).then(pl.col("a"))
        .otherwise(pl.concat_str("a", "b", separator=","))).to_series()
    return pl.DataFrame({"tconst": tconsts, "directors": directors,
                         "writers": _nullify(_people(rng, names, n), rng, 0.3)})


def make_principals(rng, basics: pl.DataFrame, names: int) -> pl.DataFrame:
    is_movie = (basics["titleType"] == "movie").to_numpy()
    per_title = np.where(is_movie, rng.integers(5, 9, len(basics)), rng.integers(1, 5, len(basics)))
    total = int(per_title.sum())
    starts = np.repeat(np.cumsum(per_title) - per_title, per_title)
    ordering = np.arange(total) - starts + 1
    cast_slots = np.repeat(rng.integers(2, 6, len(basics)), per_title)
    acting = ordering <= cast_slots
    category = np.where(acting, np.where(rng.random(total) < 0.55, "actor", "actress"),
                        rng.choice(CREW_CATEGORIES, total))
    category = np.where(acting & (rng.random(total) < 0.03), "self", category)
    characters = _nullify(pl.Series(np.char.add('["Role ', np.char.add(ordering.astype(str), '"]'))), rng, 0.1)
    return pl.DataFrame({
        "tconst": basics["tconst"].gather(np.repeat(np.arange(len(basics)), per_title)),
        "ordering": pl.Series(ordering).cast(pl.String),
        "nconst": _people(rng, names, total),
        "category": category,
        "job": pl.Series([None] * total, dtype=pl.String),
        "characters": characters.zip_with(pl.Series(acting), pl.Series([None], dtype=pl.String)),
    })


def make_names(rng, names: int) -> pl.DataFrame:
    first = np.array(FIRST)[rng.integers(0, len(FIRST), names)]
    last = np.array(LAST)[rng.integers(0, len(LAST), names)]
    births = pl.Series(rng.integers(1880, 2010, names)).cast(pl.String)
    return pl.DataFrame({
        "nconst": _ids("nm", np.arange(1, names + 1)),
        "primaryName": np.char.add(np.char.add(first, " "), last),
        "birthYear": _nullify(births, rng, 0.6),
        "deathYear": pl.Series([None] * names, dtype=pl.String),
        "primaryProfession": rng.choice(["actor", "actress", "director,writer", "producer", "composer"], names),
        "knownForTitles": pl.Series([None] * names, dtype=pl.String),
    })


def write_tsv_gz(frame: pl.DataFrame, path: Path, extra_lines: list[str] = ()) -> None:
    data = frame.write_csv(separator="\t", quote_style="never", null_value="\\N").encode()
    with gzip.open(path, "wb", compresslevel=3) as handle:
        handle.write(data)
        handle.write("".join(line + "\n" for line in extra_lines).encode())


def malformed_basics(rng, count: int) -> list[str]:
    """Lines the reader must quarantine: a missing field or a non-numeric year, alternately."""
    lines = []
    for i in range(count):
        tconst = f"tt9{i:08d}"
        if i % 2:
            lines.append(f"{tconst}\tmovie\tBroken {i}\tBroken {i}\t0\t19x{i % 10}\t\\N\t90\tDrama")
        else:
            lines.append(f"{tconst}\tmovie\tBroken {i}\tBroken {i}\t0\t2001\t\\N\t90")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--movies", type=int, default=345_000)
    parser.add_argument("--names", type=int, default=600_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--malformed", type=int, default=0, help="malformed title.basics lines to append")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    basics = make_basics(rng, args.movies)
    tables = {
        "title.basics.tsv.gz": basics,
        "title.ratings.tsv.gz": make_ratings(rng, basics["tconst"]),
        "title.crew.tsv.gz": make_crew(rng, basics["tconst"], args.names),
        "title.principals.tsv.gz": make_principals(rng, basics, args.names),
        "name.basics.tsv.gz": make_names(rng, args.names),
    }
    for name, frame in tables.items():
        extra = malformed_basics(rng, args.malformed) if name == "title.basics.tsv.gz" else []
        write_tsv_gz(frame, args.folder / name, extra)
        size = (args.folder / name).stat().st_size / 1e6
        print(f"{name:26s} {frame.height:>10,d} rows  {size:7.1f} MB")
    films = basics.filter((pl.col("titleType") == "movie") & (pl.col("isAdult") == "0")).height
    print(f"non-adult movie titles: {films:,d}; written in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
