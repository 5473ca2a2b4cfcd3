"""Corpus stage: one ``raw_<source>`` asset per upstream, ``movie_corpus`` + its quarantine, and checks.

Every source of the registry has an asset in every profile (the graph is the same everywhere); a
source the current profile does not use, or whose files the mirror lacks, materialises as "skipped"
with the reason instead of failing. ``movie_corpus`` reads the sources that were fetched.
"""

import json

import dagster as dg

from assets.keys import CORPUS, CORPUS_QUARANTINE, OWNERS, raw_key
from assets.metadata import latest_metadata, recent_metadata, table_schema
from corpus_build.sources.registry import SOURCES, source_files_present, sources_for_profile
from rar_pipeline.settings import get_settings

GROUP = "corpus"


# --- raw_<source> -------------------------------------------------------------------------------


def why_skipped(spec, settings) -> str | None:
    """Why ``spec`` does no work under the current settings (None: it should be fetched)."""
    if settings.profile not in spec.profiles:
        return f"not in profile {settings.profile!r} (used by: {', '.join(spec.profiles)})"
    if not source_files_present(spec, settings.source_mirror):
        return f"RAR_SOURCE_MIRROR={settings.source_mirror} holds none of its files"
    return None


def raw_source_asset(spec) -> dg.AssetsDefinition:
    """The asset that brings one upstream's files to ``$RAR_HOME/raw/<source>/``."""

    @dg.asset(
        key=raw_key(spec.name),
        group_name=GROUP,
        kinds={"python", "file"},
        owners=OWNERS,
        description=f"{spec.description} Files land in $RAR_HOME/raw/{spec.name}/ with size, sha256 and fetch time.",
    )
    def _raw(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from corpus_build.fetch import fetch_source, fetched_metadata

        settings = get_settings()
        reason = why_skipped(spec, settings)
        if reason is not None:
            context.log.info(f"raw_{spec.name} skipped: {reason}")
            return dg.MaterializeResult(metadata={"status": "skipped", "skipped_because": reason, "files": 0})
        files = fetch_source(spec, settings.upstream, progress=False)
        meta = fetched_metadata(files)
        return dg.MaterializeResult(
            metadata={
                "status": "fetched",
                "files": len(files),
                "size_bytes": float(sum(f.size for f in files)),
                "skipped_unchanged": sum(f.skipped_unchanged for f in files),
                "origin": ", ".join(sorted({f.origin for f in files})),
                "fetched_at": max((f.fetched_at for f in files), default=""),
                "sha256": {f.name: f.sha256 for f in files},
                "path": dg.MetadataValue.path(str(settings.upstream.source_dir(spec.name))),
                "file_details": dg.MetadataValue.json(json.loads(json.dumps(meta, default=str))),
            }
        )

    return _raw


RAW_ASSETS = [raw_source_asset(spec) for spec in SOURCES.values()]
RAW_KEYS = [raw_key(name) for name in SOURCES]


# --- movie_corpus + movie_corpus_quarantine ------------------------------------------------------


def _table_spec(key: dg.AssetKey, description: str) -> dg.AssetSpec:
    """A Parquet table the corpus build writes from the raw sources."""
    return dg.AssetSpec(key, group_name=GROUP, kinds={"polars", "parquet"}, owners=OWNERS, deps=RAW_KEYS,
                        description=description)


@dg.multi_asset(
    name="movie_corpus_build",
    specs=[
        _table_spec(
            CORPUS,
            "Merged, normalised, deduplicated movies, one row per film (zstd Parquet at "
            "$RAR_HOME/tables/movie_corpus.parquet): IMDb-id, title+year and fuzzy matching across sources.",
        ),
        _table_spec(
            CORPUS_QUARANTINE,
            "Every source record rejected while building movie_corpus, with its source, file, line and reason.",
        ),
    ],
)
def movie_corpus_build(context: dg.AssetExecutionContext):
    """Merge the fetched sources of the current profile into movie_corpus and its quarantine."""
    from corpus_build.merge import build_corpus, read_fetched_sources, write_corpus
    from corpus_build.quality import films_split_since

    settings = get_settings()
    specs = sources_for_profile(settings.profile, settings.source_mirror)
    results, skipped = read_fetched_sources(specs, settings.raw_dir)
    for name, reason in skipped.items():
        context.log.warning(f"source {name} not merged: {reason}")
    if not results:
        raise dg.Failure(f"no source of profile {settings.profile!r} has been fetched: {skipped}")
    merged = build_corpus(results)
    corpus_path, quarantine_path = settings.table_path("movie_corpus"), settings.table_path("movie_corpus_quarantine")
    split = films_split_since(corpus_path, merged.corpus)  # the file still holds the previous corpus
    write_corpus(merged, corpus_path, quarantine_path)
    previous = previous_row_count(context.instance)
    yield dg.MaterializeResult(asset_key=CORPUS, metadata=_corpus_metadata(merged, corpus_path, previous, skipped, split))
    yield dg.MaterializeResult(
        asset_key=CORPUS_QUARANTINE,
        metadata={
            "dagster/row_count": merged.quarantine.height,
            "path": dg.MetadataValue.path(str(quarantine_path)),
            "by_reason": dg.MetadataValue.json(merged.quarantine_reasons()),
            "dagster/column_schema": table_schema(merged.quarantine),
        },
    )


def previous_row_count(instance: dg.DagsterInstance) -> int | None:
    """Row count of the latest recorded movie_corpus materialisation (None: there was none)."""
    return _row_count(latest_metadata(instance, CORPUS))


def _corpus_metadata(merged, path, previous: int | None, skipped: dict[str, str], split) -> dict:
    metadata: dict = {
        "dagster/row_count": merged.corpus.height,
        "dagster/column_schema": table_schema(merged.corpus),
        "path": dg.MetadataValue.path(str(path)),
        "films_from_several_sources": float(merged.stats["films_from_several_sources"]),
        "rows_merged": float(merged.stats["rows_merged"]),
        "quarantined": float(merged.stats["quarantined"]),
        "title_conflicts": float(merged.stats["title_conflicts"]),
        "new_films_matching_previous": float(split.height) if split is not None else None,
        "split_film_examples": dg.MetadataValue.json(_split_examples(split)) if split is not None else None,
        "previous_row_count": float(previous) if previous is not None else None,
        "source_stats": dg.MetadataValue.md(_stats_table(merged.source_stats)),
        "sources_skipped": dg.MetadataValue.json(skipped),
    }
    for source, counts in merged.source_stats.items():
        for counter, value in counts.items():
            metadata[f"{source}/{counter}"] = float(value)
    return {k: v for k, v in metadata.items() if v is not None}


def _split_examples(split, limit: int = 10) -> list[str]:
    return [f"{r['movie_id']} {r['title']!r} ({r['year']}) ~ {r['previous_movie_id']} {r['previous_title']!r}"
            for r in split.head(limit).iter_rows(named=True)]


def _stats_table(stats: dict[str, dict[str, int]]) -> str:
    counters = sorted({c for counts in stats.values() for c in counts})
    lines = ["| source | " + " | ".join(counters) + " |", "|---" * (len(counters) + 1) + "|"]
    for source, counts in sorted(stats.items()):
        lines.append(f"| {source} | " + " | ".join(f"{counts.get(c, 0):,}" for c in counters) + " |")
    return "\n".join(lines)


# --- checks on movie_corpus (blocking: a failing corpus stops everything downstream) --------------


def _load_corpus():

    return get_settings().read_table("movie_corpus")


@dg.asset_check(asset=CORPUS, blocking=True, description="movie_id is unique.")
def movie_id_unique() -> dg.AssetCheckResult:
    from corpus_build.quality import duplicate_ids

    duplicates = duplicate_ids(_load_corpus())
    return dg.AssetCheckResult(
        passed=duplicates.is_empty(),
        metadata={"duplicate_ids": duplicates.height, "examples": duplicates.head(10)["movie_id"].to_list()},
    )


@dg.asset_check(asset=CORPUS, blocking=True, description="Every film has a non-empty title.")
def title_not_empty() -> dg.AssetCheckResult:
    from corpus_build.quality import empty_titles

    empty = empty_titles(_load_corpus())
    return dg.AssetCheckResult(
        passed=empty.is_empty(), metadata={"empty_titles": empty.height, "examples": empty.head(10)["movie_id"].to_list()}
    )


@dg.asset_check(
    asset=CORPUS,
    blocking=True,
    description="Every known year lies within 1874..next year; a film without a year must have an IMDb id.",
)
def year_in_range() -> dg.AssetCheckResult:
    from corpus_build.merge import FIRST_FILM_YEAR, default_max_year
    from corpus_build.quality import years_out_of_range

    max_year = default_max_year()
    corpus = _load_corpus()
    bad = years_out_of_range(corpus, max_year)
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        metadata={"out_of_range": bad.height, "range": f"{FIRST_FILM_YEAR}..{max_year}",
                  "undated_films": int(corpus["year"].null_count()),
                  "examples": bad.head(10)["movie_id"].to_list()},
    )


@dg.asset_check(
    asset=CORPUS, blocking=True, description="Row count is not below 95% of the previous materialisation."
)
def row_count_not_shrinking(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    from corpus_build.quality import row_count_ok

    counts = [_row_count(metadata) for metadata in recent_metadata(context.instance, CORPUS, limit=2)]
    current = counts[0] if counts else None
    previous = counts[1] if len(counts) > 1 else None
    if current is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "movie_corpus has no recorded row count"})
    return dg.AssetCheckResult(
        passed=row_count_ok(current, previous),
        metadata={"row_count": current, "previous_row_count": previous if previous is not None else "first run"},
    )


def _row_count(metadata: dict) -> int | None:
    value = metadata.get("dagster/row_count")
    return int(value) if value is not None else None


@dg.asset_check(
    asset=CORPUS,
    blocking=True,
    description="At most 0.1% of titles show mojibake ('LumiÃ¨re') or replacement characters: an upstream "
    "file decoded with the wrong encoding.",
)
def titles_decoded_cleanly() -> dg.AssetCheckResult:
    from corpus_build.quality import GARBLED_TITLES_MAX_SHARE, garbled_titles, garbled_titles_ok

    corpus = _load_corpus()
    garbled = garbled_titles(corpus)
    return dg.AssetCheckResult(
        passed=garbled_titles_ok(garbled.height, corpus.height),
        metadata={"garbled_titles": garbled.height, "max_share": GARBLED_TITLES_MAX_SHARE,
                  "examples": [f"{r['movie_id']} {r['title']!r}" for r in garbled.head(10).iter_rows(named=True)]},
    )


@dg.asset_check(
    asset=CORPUS,
    blocking=True,
    description="Few new rar: films look like films of the previous materialisation (same sources): more "
    "means rows that used to join a film no longer do (split films).",
)
def no_films_split_from_previous(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    from corpus_build.quality import SPLIT_FILMS_MAX, SPLIT_FILMS_MAX_SHARE, split_films_ok

    metadata = latest_metadata(context.instance, CORPUS)
    split, films = metadata.get("new_films_matching_previous"), metadata.get("dagster/row_count")
    if split is None or films is None:
        return dg.AssetCheckResult(passed=True, metadata={"compared": "no previous materialisation of the same sources"})
    return dg.AssetCheckResult(
        passed=split_films_ok(int(split), int(films)),
        metadata={"new_films_matching_previous": int(split),
                  "max": max(SPLIT_FILMS_MAX, int(SPLIT_FILMS_MAX_SHARE * films)),
                  "examples": metadata.get("split_film_examples", [])},
    )


@dg.asset_check(
    asset=CORPUS,
    blocking=True,
    description="Great Expectations suite: ids, titles, years, ratings, votes, runtimes, list lengths, hashes.",
)
def great_expectations_suite() -> dg.AssetCheckResult:
    from corpus_build.merge import default_max_year
    from corpus_build.quality import run_expectation_suite

    outcome = run_expectation_suite(_load_corpus(), default_max_year())
    return dg.AssetCheckResult(
        passed=outcome.success,
        metadata={"expectations": outcome.evaluated, "failed": dg.MetadataValue.json(outcome.failed)},
    )
