"""A stand-in movie corpus built from the mirror's MovieLens metadata, for development and tests.

The real ``movie_corpus`` (Wikipedia + MovieLens + IMDb) is built by ``corpus_build.merge``; this one
only has the MovieLens films with IMDb ids (ml-25m-metadata + ml-latest-small), titles with their
articles restored and MovieLens' alternate titles as aliases. Benchmarks use it with ``--dev-corpus``
and the mirror tests use it, so they do not depend on the corpus stage.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from corpus_build.linking import split_title_year, title_variants
from corpus_build.movie_text import normalise_imdb_id, restore_article


def dev_corpus(mirror: Path, target: Path) -> Path:
    """ml-25m-metadata (altered quoting: see its SOURCE.txt) + ml-latest-small, IMDb ids only."""
    rows = []
    meta = mirror / "movielens/ml-25m-metadata"
    for line in (meta / "movies.csv").read_text(encoding="utf-8").splitlines()[1:]:
        movie_id, rest = line.split(",", 1)
        title, _genres = rest.rsplit(",", 1)
        rows.append((movie_id, title.replace(";", ", "), "ml-25m"))
    small = pl.read_csv(mirror / "movielens/ml-latest-small/movies.csv", schema_overrides={"movieId": pl.String})
    rows += [(m, t, "small") for m, t in small.select("movieId", "title").iter_rows()]
    films = pl.DataFrame(rows, schema=["movieId", "raw", "release"], orient="row")
    links = pl.concat([pl.read_csv(p, schema_overrides={"movieId": pl.String, "imdbId": pl.String})
                       .select("movieId", "imdbId") for p in (meta / "links.csv",
                                                             mirror / "movielens/ml-latest-small/links.csv")]).unique()
    films = films.join(links, on="movieId").unique("imdbId", keep="first")
    out = []
    for raw, imdb in films.select("raw", "imdbId").iter_rows():
        title, year = split_title_year(raw)
        main = title_variants(title)[-1] if "(" in title else title
        out.append({"movie_id": normalise_imdb_id(imdb), "title": restore_article(main), "year": year,
                    "aliases": [restore_article(v) for v in title_variants(title) if v != main]})
    frame = pl.DataFrame(out, schema={"movie_id": pl.String, "title": pl.String, "year": pl.Int32,
                                      "aliases": pl.List(pl.String)}).filter(pl.col("movie_id").is_not_null())
    frame.write_parquet(target)
    return target
