"""Entity resolution: the rows of every source become one row per film (``CORPUS_SCHEMA``).

Matching, in order (a film is an *entity*):

1. rows with an IMDb id form one entity per id (duplicates inside a source merge too);
   two rows with different IMDb ids are never merged;
2. rows without an IMDb id form *groups* by normalised title + year (these would get the same
   ``rar:`` id anyway); each group joins at most one IMDb entity and each IMDb entity absorbs at most
   one group: exact title key (title or alias) in the same year first, then the adjacent year (±1);
3. groups still unmatched try a fuzzy title match (rapidfuzz ratio >= ``fuzzy_threshold``, >= 96 for
   keys under 10 characters) against IMDb entities of the same or adjacent year, never across
   different sequel numbers;
4. what is left becomes a film of its own with ``movie_text.rar_movie_id``.

Before matching, text is cleaned (NFC, no control or bidi-override characters) and capped
(``schema.TITLE_MAX_CHARS`` and friends); rows of one IMDb id whose titles are unrelated ("The Matrix"
and "Completely Different Film") keep the id's reference row (first by source precedence) and put the
others in quarantine as title conflicts: the id, not the title, is what one of them got wrong.

Fields come from the best source for each field (``FIELD_PRECEDENCE``), genres are the union of
canonical genres, aliases are the other titles seen. Rows that cannot become a film (no title, a year
outside 1874..next year, no year and no IMDb id) go to the quarantine with their reason. A film with an
IMDb id but no year in any source (announced, or a MovieLens "(no year)" title) is kept: its id places it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from corpus_build import movie_text
from corpus_build.atomic import write_parquet_atomic
from corpus_build.movie_text import UNSAFE_CHARACTERS
from corpus_build.normalise import CANONICAL_GENRES, canonical_genre, sequel_markers, title_keys
from corpus_build.schema import (
    CAST_LIMIT,
    CORPUS_SCHEMA,
    LIST_MAX_ITEMS,
    NAME_MAX_CHARS,
    PLOT_MAX_CHARS,
    QUARANTINE_SCHEMA,
    SOURCE_ROW_SCHEMA,
    TITLE_MAX_CHARS,
)
from corpus_build.sources import SourceResult, SourceSpec, source_dir
from corpus_build.storage import local_folder

FIRST_FILM_YEAR = 1874  # Janssen's "Passage de Vénus"

# Which source wins each field; sources not named here come after, alphabetically.
SOURCE_ORDER = ("imdb", "wikidata_sample", "movielens", "wikipedia")
FIELD_PRECEDENCE: dict[str, tuple[str, ...]] = {
    "title": ("imdb", "wikipedia", "wikidata_sample", "movielens"),
    "year": ("imdb", "wikidata_sample", "movielens", "wikipedia"),
    "runtime_minutes": ("imdb", "wikidata_sample", "movielens", "wikipedia"),
    "imdb_rating": ("imdb", "wikidata_sample", "movielens", "wikipedia"),
    "imdb_votes": ("imdb", "wikidata_sample", "movielens", "wikipedia"),
    "directors": ("imdb", "wikidata_sample", "wikipedia", "movielens"),
    "cast": ("imdb", "wikidata_sample", "wikipedia", "movielens"),
    "plot": ("wikipedia", "wikidata_sample", "imdb", "movielens"),
    "genres": ("imdb", "wikidata_sample", "movielens", "wikipedia"),
}
MATCH_KINDS = ("matched_imdb_id", "matched_title_year", "matched_fuzzy", "new_films")
# Name lists cleaned and capped like titles, and the per-source counter of names dropped from each.
_NAME_LISTS = {"aliases": "aliases_dropped", "directors": "director_names_dropped", "cast": "cast_names_dropped"}
# Per-source counters of what cleaning changed (see _prepare), beside the match kinds.
CLEANING_COUNTERS = ("rows_with_control_characters", "plots_truncated", *_NAME_LISTS.values())
SOURCE_COUNTERS = ("rows_in", "quarantined", "title_conflicts", *CLEANING_COUNTERS, *MATCH_KINDS)
# Rows sharing an IMDb id whose best title similarity (rapidfuzz token-set ratio of title keys, any
# title or alias of either row) stays under this are not the same film: the id is wrong in one of them.
TITLE_CONFLICT_SCORE = 50.0

SHORT_KEY, SHORT_KEY_THRESHOLD = 10, 96.0  # title keys under 10 characters need a near-perfect score
_EXACT, _ADJACENT, _FUZZY = 0, 1, 2
_EMPTY_LIST = pl.lit([], dtype=pl.List(pl.String))


@dataclass
class MergeResult:
    corpus: pl.DataFrame  # CORPUS_SCHEMA, sorted by movie_id
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    source_stats: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> counter -> n
    stats: dict[str, int] = field(default_factory=dict)  # films, rows merged, quarantined, ...

    def quarantine_reasons(self) -> dict[str, int]:
        """Quarantined rows per reason (reasons with a year are grouped by their text before ':')."""
        if self.quarantine.is_empty():
            return {}
        reasons = self.quarantine.group_by(pl.col("reason").str.split(":").list.first()).len()
        return dict(sorted(zip(reasons["reason"].to_list(), reasons["len"].to_list())))


def default_max_year() -> int:
    """The latest plausible release year: next year (announced films)."""
    return _dt.date.today().year + 1


# --------------------------------------------------------------------------------------------
# Entry points


def read_source(spec: SourceSpec, files: Mapping[str, Path]) -> SourceResult:
    """Run a source's reader on its local files; files the mirror did not have are left out."""
    present = {name: Path(path) for name, path in files.items() if Path(path).exists()}
    return spec.reader(present)


def local_files(spec: SourceSpec, raw_dir: Path) -> dict[str, Path] | None:
    """The files of ``spec`` fetched into ``raw_dir``; None when a required file (or every file) is absent."""
    files = {f.name: raw_dir / f.name for f in spec.files if (raw_dir / f.name).is_file()}
    required = [f.name for f in spec.files if not f.optional]
    return files if files and all(name in files for name in required) else None


def read_fetched_sources(specs: Iterable[SourceSpec], raw_root: Path) -> tuple[dict[str, SourceResult], dict[str, str]]:
    """Read every source whose files are under ``raw_root/<source>/``; say why the others were skipped."""
    results: dict[str, SourceResult] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        # The readers open files from disk: an object-store source folder is read from local copies.
        folder = local_folder(source_dir(raw_root, spec.name), [f.name for f in spec.files])
        files = local_files(spec, folder)
        if files is None:
            skipped[spec.name] = f"files not fetched under {source_dir(raw_root, spec.name)}"
            continue
        results[spec.name] = read_source(spec, files)
    return results, skipped


def build_corpus(
    results: Mapping[str, SourceResult], *, max_year: int | None = None, fuzzy_threshold: float = 92.0
) -> MergeResult:
    """Merge the rows of every source and collect every rejected record (reader and merge)."""
    merged = merge_rows([r.rows for r in results.values()], max_year=max_year, fuzzy_threshold=fuzzy_threshold)
    reader_quarantine = [_as_quarantine(r.quarantine) for r in results.values()]
    merged.quarantine = pl.concat([*reader_quarantine, merged.quarantine], how="vertical")
    for name, result in results.items():
        counts = merged.source_stats.setdefault(name, dict.fromkeys(SOURCE_COUNTERS, 0))
        counts["reader_quarantined"] = result.quarantine.height
    merged.stats["quarantined"] = merged.quarantine.height
    return merged


def most_voted(corpus: pl.DataFrame, films: int) -> pl.DataFrame:
    """The ``films`` films of ``corpus`` with the most IMDb votes (ties: by movie_id), in corpus order."""
    top = corpus.sort(["imdb_votes", "movie_id"], descending=[True, False], nulls_last=True).head(films)["movie_id"]
    return corpus.filter(pl.col("movie_id").is_in(top.implode()))


def write_corpus(result: MergeResult, corpus_path: Path, quarantine_path: Path) -> None:
    """Write both tables as zstd Parquet, atomically (quarantine first: the corpus is the signal)."""
    write_parquet_atomic(result.quarantine, quarantine_path)
    write_parquet_atomic(result.corpus, corpus_path)


def merge_rows(
    frames: Sequence[pl.DataFrame], *, max_year: int | None = None, fuzzy_threshold: float = 92.0
) -> MergeResult:
    """One row per film from source rows in ``SOURCE_ROW_SCHEMA`` (see the module docstring)."""
    max_year = max_year or default_max_year()
    rows = _prepare(frames)
    cleaning = rows.group_by("source").agg(pl.col(f"_n_{c}").sum().alias(c) for c in CLEANING_COUNTERS)
    rows = rows.drop(f"_n_{c}" for c in CLEANING_COUNTERS)
    rows, rejected = _validate(rows, max_year)
    rows, conflicts = _split_title_conflicts(rows)
    rows = _assign_entities(rows, fuzzy_threshold)
    corpus = _combine(rows)
    corpus = _finish(corpus)
    quarantine = pl.concat([rejected, conflicts], how="vertical")
    source_stats = _source_stats(rows, quarantine, frames, cleaning, conflicts)
    films_multi = int((corpus["sources"].list.len() > 1).sum()) if corpus.height else 0
    stats = {
        "rows_in": sum(f.height for f in frames),
        "films": corpus.height,
        "films_from_several_sources": films_multi,
        "rows_merged": rows.height - corpus.height,
        "quarantined": quarantine.height,
        "title_conflicts": conflicts.height,
        **{c: int(cleaning[c].sum()) for c in CLEANING_COUNTERS},
    }
    return MergeResult(corpus=corpus, quarantine=quarantine, source_stats=source_stats, stats=stats)


# --------------------------------------------------------------------------------------------
# Steps


def _prepare(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Concatenate source rows, check the contract, clean and cap text; add a row id and source rank.

    Adds ``_n_<counter>`` columns (``CLEANING_COUNTERS``) that say what cleaning changed in each row.
    """
    parts = []
    for frame in frames:
        missing = [c for c in SOURCE_ROW_SCHEMA if c not in frame.columns]
        if missing:
            source = frame["source"][0] if "source" in frame.columns and frame.height else "?"
            raise ValueError(f"source rows of {source!r} lack columns {missing} (SOURCE_ROW_SCHEMA)")
        parts.append(frame.select([pl.col(c).cast(t) for c, t in SOURCE_ROW_SCHEMA.items()]))
    rows = pl.concat(parts, how="vertical") if parts else pl.DataFrame(schema=SOURCE_ROW_SCHEMA)
    unsafe = pl.any_horizontal(
        pl.col("title").str.contains(UNSAFE_CHARACTERS),
        pl.col("plot").str.contains(UNSAFE_CHARACTERS),
        *[pl.col(c).list.eval(pl.element().str.contains(UNSAFE_CHARACTERS)).list.any() for c in _NAME_LISTS],
    ).fill_null(False)
    rows = rows.with_row_index("_rid").with_columns(
        unsafe.alias("_n_rows_with_control_characters"),
        _clean_text("title"),
        _clean_plot(pl.col("plot")),
        *[pl.col(c).list.eval(_clean_text(pl.element())).list.drop_nulls() for c in _NAME_LISTS],
        _imdb_id_expr(),
        _precedence_rank("").alias("_source_rank"),
    )
    capped = {c: pl.col(c).list.eval(pl.element().filter(pl.element().str.len_chars() <= NAME_MAX_CHARS))
              .list.head(LIST_MAX_ITEMS) for c in _NAME_LISTS}
    return rows.with_columns(
        (pl.col("plot").str.len_chars() > PLOT_MAX_CHARS).fill_null(False).alias("_n_plots_truncated"),
        _truncate_plot(pl.col("plot")),
        *[(pl.col(c).list.len() - capped[c].list.len()).alias(f"_n_{counter}") for c, counter in _NAME_LISTS.items()],
        *[capped[c].alias(c) for c in _NAME_LISTS],
    ).sort("_source_rank", "source", "source_key", "_rid")


def _imdb_id_expr() -> pl.Expr:
    """Vectorised ``movie_text.normalise_imdb_id``: 'tt0133093', '133093' -> 'tt0133093'; else null."""
    digits = pl.col("imdb_id").str.strip_chars().str.strip_prefix("tt")
    number = digits.str.replace(r"^0+", "")
    valid = digits.str.contains(r"^[0-9]+$") & (number.str.len_chars() > 0)
    return pl.when(valid).then(pl.lit("tt") + number.str.zfill(7)).otherwise(None).alias("imdb_id")


def _clean_text(column: str | pl.Expr) -> pl.Expr:
    """A title or name: NFC, no control or bidi-override characters, white space collapsed; '' -> null."""
    expr = pl.col(column) if isinstance(column, str) else column
    cleaned = expr.str.replace_all(UNSAFE_CHARACTERS, "").str.normalize("NFC").str.replace_all(r"\s+", " ")
    cleaned = cleaned.str.strip_chars()
    return pl.when(cleaned.str.len_chars() > 0).then(cleaned).otherwise(None)


def _clean_plot(plot: pl.Expr) -> pl.Expr:
    """A plot without control or bidi-override characters (its line breaks kept); blank -> null."""
    cleaned = plot.str.replace_all(UNSAFE_CHARACTERS, "")
    return pl.when(cleaned.str.strip_chars().str.len_chars() > 0).then(cleaned).otherwise(None).alias("plot")


def _truncate_plot(plot: pl.Expr) -> pl.Expr:
    """Plots over ``PLOT_MAX_CHARS`` cut at the last white space before the cap."""
    cut = plot.str.slice(0, PLOT_MAX_CHARS).str.replace(r"\s+\S*$", "")
    return pl.when(plot.str.len_chars() > PLOT_MAX_CHARS).then(cut).otherwise(plot).alias("plot")


def _validate(rows: pl.DataFrame, max_year: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split rows into those that can become (part of) a film and quarantined ones with a reason."""
    year = pl.col("year")
    reason = (
        pl.when(pl.col("title").is_null())
        .then(pl.lit("empty title"))
        .when(pl.col("title").str.len_chars() > TITLE_MAX_CHARS)
        .then(pl.lit(f"title longer than {TITLE_MAX_CHARS} characters"))
        .when(year.is_not_null() & ~year.is_between(FIRST_FILM_YEAR, max_year))
        .then(pl.format("year outside {}..{}: {}", pl.lit(FIRST_FILM_YEAR), pl.lit(max_year), year))
        .when(year.is_null() & pl.col("imdb_id").is_null())
        .then(pl.lit("year missing and no IMDb id"))
    )
    rows = rows.with_columns(reason.alias("_reason"))
    rejected = rows.filter(pl.col("_reason").is_not_null())
    return rows.filter(pl.col("_reason").is_null()).drop("_reason"), _quarantine_rows(rejected)


def _quarantine_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """Rejected source rows in QUARANTINE_SCHEMA; ``raw`` holds the row as JSON."""
    record = pl.struct([c for c in SOURCE_ROW_SCHEMA if c in rows.columns]).struct.json_encode()
    return rows.select(
        pl.col("source"),
        pl.lit(None, pl.String).alias("file"),
        pl.lit(None, pl.Int64).alias("line"),
        pl.col("_reason").alias("reason"),
        record.str.slice(0, 2000).alias("raw"),
    )


def _as_quarantine(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()])


def _split_title_conflicts(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rows, quarantined title conflicts): rows whose IMDb id's reference row has an unrelated title.

    The reference row of an id is its first by source precedence (the row whose title the film takes).
    Another row of the id agrees when one of its names (title, aliases) has a token-set ratio of at
    least ``TITLE_CONFLICT_SCORE`` with one of the reference's, on title keys; rows with no comparable
    name (an empty key) are kept.
    """
    from rapidfuzz import fuzz, process

    order = ["_source_rank", "source", "source_key", "_rid"]
    ranked = rows.filter(pl.col("imdb_id").is_not_null()).with_columns(
        pl.col("_rid").first().over("imdb_id", order_by=order).alias("_ref_rid"))
    others = ranked.filter(pl.col("_rid") != pl.col("_ref_rid"))
    if others.is_empty():
        return rows, _quarantine_rows(rows.clear().with_columns(pl.lit(None, pl.String).alias("_reason")))
    references = ranked.filter(pl.col("_rid") == pl.col("_ref_rid")).select(
        "imdb_id", pl.col("title").alias("_ref_title"), pl.concat_list("title", "aliases").alias("_ref_name"))
    pairs = (
        others.select("_rid", "imdb_id", pl.concat_list("title", "aliases").alias("_name"))
        .explode("_name")
        .join(references.explode("_ref_name"), on="imdb_id")
        .drop_nulls(["_name", "_ref_name"])
    )
    names = pl.concat([pairs["_name"], pairs["_ref_name"]]).unique()
    keys = pl.DataFrame({"_name": names, "_key": title_keys(names)})
    pairs = (
        pairs.join(keys, on="_name")
        .join(keys.rename({"_name": "_ref_name", "_key": "_ref_key"}), on="_ref_name")
        .filter((pl.col("_key") != "") & (pl.col("_ref_key") != ""))
    )
    scores = process.cpdist(pairs["_key"].to_list(), pairs["_ref_key"].to_list(), scorer=fuzz.token_set_ratio)
    best = pairs.with_columns(pl.Series("_score", scores, dtype=pl.Float64)).group_by("_rid").agg(
        pl.col("_score").max(), pl.col("_ref_title").first())
    conflicting = best.filter(pl.col("_score") < TITLE_CONFLICT_SCORE)
    rejected = rows.join(conflicting, on="_rid", how="inner").with_columns(
        pl.format("title conflicts with its IMDb id: {} is '{}'", pl.col("imdb_id"), pl.col("_ref_title"))
        .alias("_reason"))
    return rows.join(conflicting, on="_rid", how="anti"), _quarantine_rows(rejected)


def _assign_entities(rows: pl.DataFrame, fuzzy_threshold: float) -> pl.DataFrame:
    """Add ``_entity`` (the film's movie_id) and ``_match`` (how the row joined it) to every row."""
    with_id = rows.filter(pl.col("imdb_id").is_not_null())
    without_id = rows.filter(pl.col("imdb_id").is_null())
    first_of_id = pl.col("_rid").first().over("imdb_id", order_by=["_source_rank", "source", "source_key", "_rid"])
    with_id = with_id.with_columns(
        pl.col("imdb_id").alias("_entity"),
        pl.when(pl.col("_rid") == first_of_id).then(pl.lit("new_films")).otherwise(pl.lit("matched_imdb_id")).alias("_match"),
    )
    if without_id.is_empty():
        return with_id
    without_id = without_id.with_columns(
        title_keys(without_id["title"]).alias("_key")
    )
    groups = _groups(without_id)
    entity_keys = _entity_keys(with_id)
    links = _assign(_exact_candidates(groups, entity_keys))
    unmatched = groups.join(links, on="_group", how="anti")
    free_keys = entity_keys.join(links.select("_entity"), on="_entity", how="anti")
    fuzzy_links = _assign(_fuzzy_candidates(unmatched, free_keys, fuzzy_threshold))
    links = pl.concat([links, fuzzy_links], how="vertical")
    without_id = _label_group_rows(without_id, groups, links)
    return pl.concat([with_id, without_id], how="diagonal_relaxed")


def _groups(without_id: pl.DataFrame) -> pl.DataFrame:
    """Rows without an IMDb id grouped by title key + year; the group's id is the rar: id."""
    return (
        without_id.group_by("_key", "year", maintain_order=True)
        .agg(pl.col("title").first())
        .with_columns(
            pl.struct("title", "year")
            .map_elements(lambda r: movie_text.rar_movie_id(r["title"], r["year"]), return_dtype=pl.String)
            .alias("_group")
        )
        .select("_group", "_key", "year")
    )


def _entity_keys(with_id: pl.DataFrame) -> pl.DataFrame:
    """Every (title key, year) an IMDb entity is known by: its titles and aliases in every source."""
    if with_id.is_empty():
        return pl.DataFrame(schema={"_entity": pl.String, "_key": pl.String, "_year": pl.Int32, "_votes": pl.Int64})
    names = (
        with_id.select("_entity", "year", pl.concat_list(pl.col("title"), pl.col("aliases")).alias("_name"))
        .explode("_name")
        .drop_nulls(["_name", "year"])
        .unique(["_entity", "_name", "year"])
    )
    unique_names = names["_name"].unique()
    keys = pl.DataFrame({"_name": unique_names, "_key": title_keys(unique_names)})
    votes = with_id.group_by("_entity").agg(pl.col("imdb_votes").max().fill_null(-1).alias("_votes"))
    return (
        names.join(keys, on="_name")
        .filter(pl.col("_key") != "")
        .select("_entity", "_key", pl.col("year").alias("_year"))
        .unique()
        .join(votes, on="_entity")
    )


def _exact_candidates(groups: pl.DataFrame, entity_keys: pl.DataFrame) -> pl.DataFrame:
    """(group, entity) pairs with the same title key and a year at most one apart."""
    return (
        groups.join(entity_keys, on="_key")
        .with_columns((pl.col("year") - pl.col("_year")).abs().alias("_gap"))
        .filter(pl.col("_gap") <= 1)
        .group_by("_group", "_entity")
        .agg(pl.col("_gap").min(), pl.col("_votes").first())
        .select(
            "_group",
            "_entity",
            pl.when(pl.col("_gap") == 0).then(_EXACT).otherwise(_ADJACENT).alias("_rank"),
            pl.lit(100.0).alias("_score"),
            "_votes",
        )
    )


def adjacent_year_blocks(queries: pl.DataFrame, choices: pl.DataFrame, query_year: str = "year",
                         choice_year: str = "year") -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """(queries of one year, choices of that year or an adjacent one) for every year that has both: the
    blocking that keeps fuzzy title matching near linear in the number of films."""
    by_year = {y: part for (y,), part in choices.partition_by(choice_year, as_dict=True).items()}
    for (year,), block in queries.partition_by(query_year, as_dict=True).items():
        near = [by_year[y] for y in (year - 1, year, year + 1) if y in by_year]
        if near:
            yield block, pl.concat(near, how="vertical")


def _fuzzy_candidates(groups: pl.DataFrame, entity_keys: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """(group, entity) pairs whose title keys are near-identical, blocked by same/adjacent year."""
    import numpy as np
    from rapidfuzz import fuzz, process

    out: dict[str, list] = {"_group": [], "_entity": [], "_score": [], "_votes": []}
    groups = groups.filter(pl.col("_key").str.len_chars() >= 4)
    for block, choices in adjacent_year_blocks(groups, entity_keys, choice_year="_year"):
        choice_keys = choices["_key"].to_list()
        query_keys = block["_key"].to_list()
        scores = process.cdist(query_keys, choice_keys, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.uint8, workers=1)
        for qi, ci in zip(*np.nonzero(scores)):
            if sequel_markers(query_keys[qi]) != sequel_markers(choice_keys[ci]):
                continue
            if min(len(query_keys[qi]), len(choice_keys[ci])) < SHORT_KEY and scores[qi, ci] < SHORT_KEY_THRESHOLD:
                continue  # one letter decides between short titles ("drifter" / "drifters")
            out["_group"].append(block["_group"][int(qi)])
            out["_entity"].append(choices["_entity"][int(ci)])
            out["_score"].append(float(scores[qi, ci]))
            out["_votes"].append(choices["_votes"][int(ci)])
    return pl.DataFrame(
        out, schema={"_group": pl.String, "_entity": pl.String, "_score": pl.Float64, "_votes": pl.Int64}
    ).with_columns(pl.lit(_FUZZY).alias("_rank")).select("_group", "_entity", "_rank", "_score", "_votes")


def _assign(candidates: pl.DataFrame) -> pl.DataFrame:
    """One-to-one links group -> entity: best rank, then score, then votes; each entity once."""
    candidates = candidates.unique(["_group", "_entity"]).sort(
        ["_rank", "_score", "_votes", "_entity", "_group"], descending=[False, True, True, False, False]
    )
    links = []
    while not candidates.is_empty():
        best_per_group = candidates.group_by("_group", maintain_order=True).first()
        winners = best_per_group.group_by("_entity", maintain_order=True).first()
        links.append(winners.select("_group", "_entity", "_rank"))
        candidates = candidates.join(winners.select("_group"), on="_group", how="anti").join(
            winners.select("_entity"), on="_entity", how="anti"
        )
    if not links:
        return pl.DataFrame(schema={"_group": pl.String, "_entity": pl.String, "_rank": pl.Int32})
    return pl.concat(links, how="vertical").with_columns(pl.col("_rank").cast(pl.Int32))


def _label_group_rows(without_id: pl.DataFrame, groups: pl.DataFrame, links: pl.DataFrame) -> pl.DataFrame:
    """Give rows without an IMDb id their entity (linked IMDb film or their own rar: id) and match kind."""
    rows = without_id.join(groups, on=["_key", "year"], how="left").join(links, on="_group", how="left")
    first_of_group = pl.col("_rid").first().over("_group", order_by=["_source_rank", "source", "source_key", "_rid"])
    match = (
        pl.when(pl.col("_rank") == _FUZZY).then(pl.lit("matched_fuzzy"))
        .when(pl.col("_rank").is_not_null()).then(pl.lit("matched_title_year"))
        .when(pl.col("_rid") == first_of_group).then(pl.lit("new_films"))
        .otherwise(pl.lit("matched_title_year"))
    )
    return rows.with_columns(
        pl.coalesce("_entity", "_group").alias("_entity"), match.alias("_match")
    ).drop("_key", "_group", "_rank")


def _precedence_rank(field_name: str) -> pl.Expr:
    """Rank of each row's source for a field; a source counts as the family it is named after
    ("movielens_1m" ranks as "movielens"), unknown sources come last."""
    order = FIELD_PRECEDENCE.get(field_name, SOURCE_ORDER)
    rank = pl.lit(len(order), dtype=pl.Int32)
    for i, family in reversed(list(enumerate(order))):
        rank = pl.when(pl.col("source").str.starts_with(family)).then(pl.lit(i, dtype=pl.Int32)).otherwise(rank)
    return rank


_SCALAR_FIELDS = ("title", "year", "runtime_minutes", "imdb_rating", "imdb_votes", "plot", "directors", "cast")


def _combine(rows: pl.DataFrame) -> pl.DataFrame:
    """One row per entity: each field from its best source, genres/aliases/sources as unions.

    Films seen in one row only (most IMDb titles) skip the group-by: their row is the film.
    """
    rows = rows.with_columns(
        *[pl.when(pl.col(f).list.len() > 0).then(pl.col(f)).alias(f) for f in ("directors", "cast")],
        _canonical_genres_expr(rows).alias("genres"),
        pl.concat_list(pl.col("title"), pl.col("aliases")).list.drop_nulls().alias("_names"),
    )
    several = pl.len().over("_entity") > 1
    single = rows.filter(~several).select(
        pl.col("_entity"),
        *_SCALAR_FIELDS,
        pl.concat_list(pl.col("source")).alias("sources"),
        pl.col("_names").list.unique(maintain_order=True),
        pl.col("genres"),
    )
    merged = rows.filter(several)
    picked = [
        pl.col(f).sort_by(_precedence_rank(f), pl.col("source"), pl.col("_rid")).drop_nulls().first().alias(f)
        for f in _SCALAR_FIELDS
    ]
    combined = merged.group_by("_entity").agg(
        *picked,
        pl.col("source").unique().sort().alias("sources"),
        pl.col("_names").list.explode(keep_nulls=False, empty_as_null=False).unique(maintain_order=True),
    )
    combined = combined.join(_genre_union(merged), on="_entity", how="left")
    return pl.concat([single, combined.select(single.columns)], how="vertical_relaxed").rename({"_entity": "movie_id"})


def _canonical_genres_expr(rows: pl.DataFrame) -> pl.Expr:
    """Each row's genres mapped onto the canonical vocabulary (unknown dropped, no duplicates)."""
    spellings = rows["genres"].explode(keep_nulls=False, empty_as_null=False).unique().to_list()
    mapping = {s: canonical_genre(s) for s in spellings if s is not None}
    mapped = pl.element().replace_strict(mapping, default=None, return_dtype=pl.String)
    return pl.col("genres").list.eval(mapped.drop_nulls().unique(maintain_order=True))


def _genre_union(rows: pl.DataFrame) -> pl.DataFrame:
    """Union of (canonical) genres per entity, in field precedence order."""
    return (
        rows.select("_entity", _precedence_rank("genres").alias("_p"), "_rid", pl.col("genres").alias("_g"))
        .with_row_index("_pos")
        .explode("_g")
        .drop_nulls("_g")
        .sort("_entity", "_p", "_rid", "_pos")
        .unique(["_entity", "_g"], keep="first", maintain_order=True)
        .group_by("_entity", maintain_order=True)
        .agg(pl.col("_g").alias("genres"))
    )


def _finish(corpus: pl.DataFrame) -> pl.DataFrame:
    """Aliases without the title, cast trimmed, content hash, the exact CORPUS_SCHEMA, sorted."""
    corpus = corpus.with_columns(
        pl.col("genres").fill_null(_EMPTY_LIST),
        pl.col("directors").fill_null(_EMPTY_LIST),
        pl.col("cast").fill_null(_EMPTY_LIST).list.head(CAST_LIMIT),
    )
    corpus = corpus.join(_aliases(corpus), on="movie_id", how="left")
    corpus = corpus.select(
        *[pl.col(c).cast(t) for c, t in CORPUS_SCHEMA.items() if c not in ("content_hash", "aliases")],
        pl.col("aliases").fill_null(_EMPTY_LIST).cast(CORPUS_SCHEMA["aliases"]),
    ).select([c for c in CORPUS_SCHEMA if c != "content_hash"])
    return corpus.with_columns(_content_hashes(corpus)).sort("movie_id")


def _alias_key(expr: pl.Expr) -> pl.Expr:
    """A cheap spelling key for aliases: case and punctuation ignored ('Matrix, The' ~ 'matrix the')."""
    return expr.str.to_lowercase().str.replace_all(r"[^\w]+", "")


def _aliases(corpus: pl.DataFrame) -> pl.DataFrame:
    """movie_id -> the other titles seen for the film, one per spelling key, none spelled as the title."""
    return (
        corpus.select("movie_id", "title", pl.col("_names").alias("_alias"))
        .filter(pl.col("_alias").list.len() > 1)
        .with_row_index("_film")
        .explode("_alias")
        .with_columns(_alias_key(pl.col("_alias")).alias("_k"))
        .filter(pl.col("_k") != _alias_key(pl.col("title")))
        .unique(["_film", "_k"], keep="first", maintain_order=True)
        .group_by("movie_id", maintain_order=True)
        .agg(pl.col("_alias").alias("aliases"))
    )


_PY_WHITESPACE = "".join(chr(i) for i in range(0x3000 + 1) if chr(i).isspace())  # what str.strip() strips


def _joined(column: str, limit: int | None = None) -> pl.Expr:
    kept = pl.col(column).list.eval(pl.element().filter(pl.element().is_not_null() & (pl.element() != "")))
    return (kept.list.head(limit) if limit else kept).list.join(", ")


def movie_text_expr() -> pl.Expr:
    """Vectorised :func:`movie_text.movie_text` (the tests hold it equal to the Python function)."""
    title, year = pl.col("title").fill_null(""), pl.col("year")
    head = pl.when(year.is_not_null() & (year != 0)).then(pl.format("{} ({})", title, year)).otherwise(title)
    genres, directors, cast = _joined("genres"), _joined("directors"), _joined("cast", limit=5)
    plot = pl.col("plot").fill_null("").str.strip_chars(_PY_WHITESPACE)
    return pl.concat_str(
        [
            head,
            pl.when(genres != "").then(pl.format("Genres: {}.", genres)),
            pl.when(directors != "").then(pl.format("Directed by {}.", directors)),
            pl.when(cast != "").then(pl.format("Starring {}.", cast)),
            pl.when(plot != "").then(plot),
        ],
        separator=" ",
        ignore_nulls=True,
    )


def _content_hashes(corpus: pl.DataFrame) -> pl.Series:
    """movie_text.content_hash of every film: the text built in polars, hashed with hashlib."""
    import hashlib

    texts = corpus.select(movie_text_expr())[:, 0].to_list()
    hashes = [hashlib.sha256(text.encode()).hexdigest()[:16] for text in texts]
    return pl.Series("content_hash", hashes, dtype=pl.String)


def _source_stats(rows: pl.DataFrame, quarantine: pl.DataFrame, frames: Iterable[pl.DataFrame],
                  cleaning: pl.DataFrame, conflicts: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per source: rows in, quarantined, title conflicts, what cleaning changed, how each kept row joined its film."""
    stats: dict[str, dict[str, int]] = {}

    def entry(source: str) -> dict[str, int]:
        return stats.setdefault(source, dict.fromkeys(SOURCE_COUNTERS, 0))

    for frame in frames:
        for source, n in frame.group_by("source").len().iter_rows():
            entry(source)["rows_in"] += n
    for source, n in quarantine.group_by("source").len().iter_rows():
        entry(source)["quarantined"] += n
    for source, n in conflicts.group_by("source").len().iter_rows():
        entry(source)["title_conflicts"] += n
    for row in cleaning.iter_rows(named=True):
        entry(row["source"]).update({c: int(row[c]) for c in CLEANING_COUNTERS})
    for source, match, n in rows.group_by("source", "_match").len().iter_rows():
        entry(source)[match] += n
    return stats


__all__ = [
    "CANONICAL_GENRES",
    "FIELD_PRECEDENCE",
    "MergeResult",
    "build_corpus",
    "merge_rows",
    "local_files",
    "read_fetched_sources",
    "read_source",
    "write_corpus",
]
