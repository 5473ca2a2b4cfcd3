"""IMDb non-commercial dumps (https://developer.imdb.com/non-commercial-datasets/) -> source rows.

Files: title.basics, title.ratings, title.crew, title.principals, name.basics; gzip TSV, UTF-8, a header
line, ``\\N`` for null, no quoting at all (a ``"`` is an ordinary character).

Which titles count as films: ``titleType == "movie"`` only. That is how the paper's ~337k-film corpus is
obtained; ``tvMovie``, ``short``, ``video``, ``tvSeries``, episodes and the rest are left out (counted in
``stats["non_movie_titles"]``). Adult titles (``isAdult == 1``) are dropped too and counted in
``stats["adult_movies"]``: they are a deliberate exclusion, not bad data, so they are not quarantined.

Reading is vectorised with polars: each file is decompressed to a temporary TSV (a truncated or corrupt
gzip is a :class:`SourceFormatError` naming the file and the line where the damage starts), the header is
checked, every line is split on tabs, and a line that is not valid UTF-8, has the wrong number of fields
or a non-numeric value goes to quarantine with its file and 1-based line; every other line is kept.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from pathlib import Path

import polars as pl

from corpus_build.movie_text import restore_article
from corpus_build.schema import CAST_LIMIT, QUARANTINE_SCHEMA, SOURCE_ROW_SCHEMA
from corpus_build.sources import SourceFormatError, SourceResult

SOURCE = "imdb"
NULL = "\\N"
RAW_CHARS = 500  # quarantine keeps this much of a rejected line
CAST_CATEGORIES = ("actor", "actress", "self")

BASICS = "title.basics.tsv.gz"
RATINGS = "title.ratings.tsv.gz"
CREW = "title.crew.tsv.gz"
PRINCIPALS = "title.principals.tsv.gz"
NAMES = "name.basics.tsv.gz"

# Each file's exact header and the pattern every non-null value of a column must match.
COLUMNS: dict[str, tuple[str, ...]] = {
    BASICS: ("tconst", "titleType", "primaryTitle", "originalTitle", "isAdult", "startYear", "endYear",
             "runtimeMinutes", "genres"),
    RATINGS: ("tconst", "averageRating", "numVotes"),
    CREW: ("tconst", "directors", "writers"),
    PRINCIPALS: ("tconst", "ordering", "nconst", "category", "job", "characters"),
    NAMES: ("nconst", "primaryName", "birthYear", "deathYear", "primaryProfession", "knownForTitles"),
}
_TCONST, _NCONST, _INT, _YEAR = r"^tt\d+$", r"^nm\d+$", r"^\d+$", r"^\d{4}$"
PATTERNS: dict[str, dict[str, str]] = {
    BASICS: {"tconst": _TCONST, "isAdult": r"^[01]$", "startYear": _YEAR, "endYear": _YEAR,
             "runtimeMinutes": _INT},
    RATINGS: {"tconst": _TCONST, "averageRating": r"^\d+(\.\d+)?$", "numVotes": _INT},
    CREW: {"tconst": _TCONST, "directors": r"^nm\d+(,nm\d+)*$"},
    PRINCIPALS: {"tconst": _TCONST, "ordering": _INT, "nconst": _NCONST},
    NAMES: {"nconst": _NCONST},
}
REQUIRED = {BASICS: ("tconst", "titleType", "primaryTitle", "isAdult"), RATINGS: ("tconst",),
            CREW: ("tconst",), PRINCIPALS: ("tconst", "ordering", "nconst"), NAMES: ("nconst",)}


def read_imdb(files: dict[str, Path]) -> SourceResult:
    """Feature films (non-adult ``movie`` titles) with rating, votes, directors and top-billed cast."""
    if not files:  # a mirror without IMDb: every (optional) file skipped, nothing to read
        return SourceResult(rows=pl.DataFrame(schema=SOURCE_ROW_SCHEMA),
                            quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA), stats={"films": 0.0})
    missing = [name for name in COLUMNS if name not in files]
    if missing:
        raise SourceFormatError(", ".join(missing), "IMDb file(s) not fetched")
    quarantines: list[pl.DataFrame] = []
    raw_dir = Path(files[BASICS]).parent  # the gunzipped text sits beside the dumps (real ones: ~7 GB)
    with tempfile.TemporaryDirectory(prefix=".imdb-", dir=raw_dir if os.access(raw_dir, os.W_OK) else None) as tmp:
        def read(name: str, keep=None, on: str = "tconst", where=None) -> pl.DataFrame:
            good, bad = read_tsv(Path(files[name]), name, Path(tmp), keep=keep, keep_on=on, where=where)
            quarantines.append(bad)
            return good

        basics = read(BASICS)
        films, stats = _films(basics)
        keys = films.select("tconst")
        ratings = read(RATINGS, keep=keys)
        crew = read(CREW, keep=keys)
        principals = read(PRINCIPALS, keep=keys, where=pl.col("category").is_in(CAST_CATEGORIES))
        directors = _explode_directors(crew)
        people = pl.concat([directors.select("nconst"), principals.select("nconst")]).unique()
        names = read(NAMES, keep=people, on="nconst").select(
            "nconst", pl.col("primaryName").str.normalize("NFC"))
    rows = _assemble(films, ratings, _name_lists(directors, names, "position", "directors", None),
                     _name_lists(principals, names, "ordering", "cast", CAST_LIMIT))
    quarantine = pl.concat(quarantines)
    stats["rows_read"] += quarantines[0].height  # title.basics lines, malformed ones included
    stats.update(films=float(rows.height), quarantined=float(quarantine.height),
                 with_rating=float(rows["imdb_rating"].is_not_null().sum()),
                 with_directors=float((rows["directors"].list.len() > 0).sum()),
                 with_cast=float((rows["cast"].list.len() > 0).sum()))
    return SourceResult(rows=rows, quarantine=quarantine, stats=stats)


# --- reading one TSV ------------------------------------------------------------------------------


def read_tsv(path: Path, name: str, tmp_dir: Path, keep: pl.DataFrame | None = None,
             keep_on: str = "tconst", where: pl.Expr | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid rows as strings with nulls, quarantine) of one IMDb TSV.

    ``keep`` (semi-join on ``keep_on``) and ``where`` filter the valid rows inside the streaming scan,
    so a file far larger than memory (the real title.principals) only holds the rows that are kept.
    """
    columns = COLUMNS[name]
    text_path = _decompressed(path, tmp_dir)
    _check_header(text_path, path, columns)
    parsed = _parse_lines(text_path, columns, PATTERNS.get(name, {}), REQUIRED.get(name, ()))
    bad = parsed.filter(pl.col("_reason").is_not_null()).select(
        source=pl.lit(SOURCE), file=pl.lit(str(path)), line=pl.col("_line").cast(pl.Int64),
        reason=pl.col("_reason"), raw=pl.col("_text").str.slice(0, RAW_CHARS))
    good = parsed.filter(pl.col("_reason").is_null()).select(columns)
    if where is not None:
        good = good.filter(where)
    if keep is not None:
        good = good.join(keep.lazy(), on=keep_on, how="semi", maintain_order="left")
    good_df, bad_df = pl.collect_all([good, bad], engine="streaming")
    return good_df, bad_df.sort("line").cast(QUARANTINE_SCHEMA)


def _decompressed(path: Path, tmp_dir: Path) -> Path:
    """The file as plain text: gunzipped into ``tmp_dir`` (or itself when it is not gzip)."""
    with open(path, "rb") as probe:
        if probe.read(2) != b"\x1f\x8b":
            return path
    out = tmp_dir / (path.name.removesuffix(".gz") + ".txt")
    lines = 0
    try:
        with gzip.open(path, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
                lines += chunk.count(b"\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SourceFormatError(path, f"truncated or corrupt gzip ({exc}); {lines} complete lines "
                                "before the damage", line=lines + 1) from exc
    return out


def _check_header(text_path: Path, path: Path, columns: tuple[str, ...]) -> None:
    with open(text_path, "rb") as handle:
        header = handle.readline().decode("utf-8", "replace").rstrip("\r\n")
    if header.split("\t") != list(columns):
        raise SourceFormatError(path, f"unexpected header {header[:200]!r}; expected "
                                f"{chr(9).join(columns)!r}", line=1)


def _parse_lines(text_path: Path, columns: tuple[str, ...], patterns: dict[str, str],
                 required: tuple[str, ...]) -> pl.LazyFrame:
    """Lines split on tabs with ``_line`` (1-based), ``_text`` and ``_reason`` (null when valid)."""
    lines = pl.scan_csv(text_path, has_header=False, skip_rows=1, separator="\x00", quote_char=None,
                        new_columns=["_text"], schema_overrides={"_text": pl.String},
                        infer_schema=False, encoding="utf8-lossy", raise_if_empty=False)
    lines = lines.with_row_index("_line", offset=2).with_columns(pl.col("_text").fill_null(""))
    fields = pl.col("_text").str.count_matches("\t", literal=True) + 1
    split = pl.col("_text").str.split_exact("\t", len(columns) - 1).struct.rename_fields(list(columns))
    parsed = lines.with_columns(_fields=fields, _split=split).unnest("_split").with_columns(
        [pl.when(pl.col(c) == NULL).then(None).otherwise(pl.col(c)).alias(c) for c in columns])
    # the lossy decode marks each invalid UTF-8 byte with U+FFFD: such a line is quarantined, not kept garbled
    reason = pl.when(pl.col("_text").str.contains("\ufffd", literal=True)).then(
        pl.lit("line is not valid UTF-8")
    ).when(pl.col("_fields") != len(columns)).then(
        pl.format("wrong number of fields: {} (expected {})", pl.col("_fields"), pl.lit(len(columns))))
    for column in required:
        reason = reason.when(pl.col(column).is_null() | (pl.col(column) == "")).then(
            pl.lit(f"missing {column}"))
    for column, pattern in patterns.items():
        reason = reason.when(pl.col(column).is_not_null() & ~pl.col(column).str.contains(pattern)).then(
            pl.format(f"bad {column}: {{}}", pl.col(column).str.slice(0, 40)))
    return parsed.with_columns(_reason=reason.otherwise(None))


# --- films ------------------------------------------------------------------------------------------


def _films(basics: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, float]]:
    is_movie = pl.col("titleType") == "movie"
    counts = basics.select(
        rows=pl.len(), non_movie=(~is_movie).sum(), adult=(is_movie & (pl.col("isAdult") == "1")).sum()
    ).row(0, named=True)
    films = basics.filter(is_movie & (pl.col("isAdult") == "0"))
    stats = {"rows_read": float(counts["rows"]), "non_movie_titles": float(counts["non_movie"]),
             "adult_movies": float(counts["adult"])}
    return films, stats


def _explode_directors(crew: pl.DataFrame) -> pl.DataFrame:
    return (crew.select("tconst", nconst=pl.col("directors").str.split(","))
            .explode("nconst").drop_nulls("nconst")
            .with_columns(position=pl.int_range(pl.len()).over("tconst")))


def _name_lists(people: pl.DataFrame, names: pl.DataFrame, order: str, alias: str,
                limit: int | None) -> pl.DataFrame:
    """tconst -> list of person names in ``order`` (names missing from name.basics are left out)."""
    named = people.join(names, on="nconst", how="inner").with_columns(pl.col(order).cast(pl.Int64))
    values = pl.col("primaryName").sort_by(order)
    return named.group_by("tconst").agg((values.head(limit) if limit else values).alias(alias))


def clean_titles(titles: pl.Series) -> pl.Series:
    """:func:`restore_article` over a column: NFC and white space vectorised, the article regex in Python
    only for the few titles with a comma (the only ones it can change)."""
    cleaned = titles.str.normalize("NFC").str.replace_all(r"\s+", " ").str.strip_chars()
    with_comma = cleaned.str.contains(",", literal=True).fill_null(False)
    if not with_comma.any():
        return cleaned
    fixed = [restore_article(t) for t in cleaned.filter(with_comma).to_list()]
    return cleaned.scatter(with_comma.arg_true(), pl.Series(fixed, dtype=pl.String))


def imdb_ids(tconsts: pl.Series) -> pl.Series:
    """:func:`normalise_imdb_id` over validated ``tt<digits>`` ids, vectorised."""
    number = tconsts.str.strip_prefix("tt").cast(pl.Int64)
    padded = pl.select(pl.format("tt{}", pl.lit(number).cast(pl.String).str.zfill(7))).to_series()
    return padded.zip_with(number > 0, pl.Series([None], dtype=pl.String)).alias(tconsts.name)


def _assemble(films: pl.DataFrame, ratings: pl.DataFrame, directors: pl.DataFrame,
              cast: pl.DataFrame) -> pl.DataFrame:
    frame = films.with_columns(title=clean_titles(films["primaryTitle"]),
                               original=clean_titles(films["originalTitle"]),
                               imdb_id=imdb_ids(films["tconst"]))
    empty = pl.lit([], dtype=pl.List(pl.String))
    frame = (frame.join(ratings, on="tconst", how="left").join(directors, on="tconst", how="left")
             .join(cast, on="tconst", how="left"))
    rows = frame.select(
        source=pl.lit(SOURCE), source_key=pl.col("tconst"), imdb_id=pl.col("imdb_id"), title=pl.col("title"),
        year=pl.col("startYear").cast(pl.Int32),
        genres=pl.col("genres").str.split(",").fill_null(empty),
        directors=pl.col("directors").fill_null(empty), cast=pl.col("cast").fill_null(empty),
        runtime_minutes=pl.col("runtimeMinutes").cast(pl.Int32), plot=pl.lit(None, dtype=pl.String),
        aliases=pl.when(pl.col("original").is_not_null() & (pl.col("original") != pl.col("title")))
        .then(pl.concat_list("original")).otherwise(empty),
        imdb_rating=pl.col("averageRating").cast(pl.Float32), imdb_votes=pl.col("numVotes").cast(pl.Int64),
    )
    return rows.select(list(SOURCE_ROW_SCHEMA)).cast(SOURCE_ROW_SCHEMA)
