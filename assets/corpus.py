"""Corpus stage: one ``raw_<source>`` asset per upstream, ``movie_corpus`` + its quarantine, and checks.

Every source of the registry has an asset in every profile (the graph is the same everywhere). A source
the current profile does not use, or whose files the mirror lacks, is not fetched: it records an
observation with the reason and no materialisation, so the UI never shows it as ingested. The sources,
the corpus and its quarantine are one subsettable multi-asset: any of them can be selected alone (the
corpus alone merges what was fetched before), and a skipped source does not skip the corpus.
"""

import json
from datetime import timedelta

import dagster as dg

from assets.keys import CORPUS, CORPUS_QUARANTINE, OWNERS, raw_key
from assets.metadata import latest_metadata, readable, recent_metadata, records_table, table_schema
from corpus_build.quality import QUARANTINE_MAX_SHARE
from corpus_build.schema import CORPUS_COLUMN_DESCRIPTIONS, QUARANTINE_COLUMN_DESCRIPTIONS
from corpus_build.sources.registry import SOURCES, source_files_present, sources_for_profile
from rar_pipeline.settings import get_settings

GROUP = "corpus"
RAW_KEYS = [raw_key(name) for name in SOURCES]


# --- raw_<source> -------------------------------------------------------------------------------


def why_skipped(spec, settings) -> str | None:
    """Why ``spec`` does no work under the current settings (None: it should be fetched)."""
    if settings.profile not in spec.profiles:
        return f"not in profile {settings.profile!r} (used by: {', '.join(spec.profiles)})"
    if not source_files_present(spec, settings.source_mirror):
        return f"RAR_SOURCE_MIRROR={settings.source_mirror} holds none of its files"
    return None


def _raw_spec(spec) -> dg.AssetSpec:
    return dg.AssetSpec(
        raw_key(spec.name), group_name=GROUP, kinds={"python", "file"}, owners=OWNERS, skippable=True,
        description=f"{spec.description} Files land in `$RAR_HOME/raw/{spec.name}/` with size, sha256 and "
        f"fetch time. Read by the profile(s): {', '.join(spec.profiles)}; in another profile it is observed as "
        "skipped, never materialised.",
    )


def fetch_raw(context: dg.AssetExecutionContext, spec, settings):
    """Fetch one upstream into ``$RAR_HOME/raw/<source>/``: its materialisation, or an observation saying why
    the source was skipped."""
    from corpus_build.fetch import fetch_source, fetched_metadata

    key = raw_key(spec.name)
    reason = why_skipped(spec, settings)
    if reason is not None:
        context.log.info(f"{key.to_user_string()} skipped: {reason}")
        return dg.AssetObservation(asset_key=key, metadata={"status": "skipped", "skipped_because": reason})
    files = fetch_source(spec, settings.upstream, progress=False)
    return dg.MaterializeResult(asset_key=key, metadata=readable({
        "status": "fetched",
        "files": len(files),
        "size_bytes": sum(f.size for f in files),
        "skipped_unchanged": sum(f.skipped_unchanged for f in files),
        "origin": ", ".join(sorted({f.origin for f in files})),
        "fetched_at": max((f.fetched_at for f in files), default=""),
        "sha256": {f.name: f.sha256 for f in files},
        "path": dg.MetadataValue.path(str(settings.upstream.source_dir(spec.name))),
        "file_details": dg.MetadataValue.json(json.loads(json.dumps(fetched_metadata(files), default=str))),
    }))


# --- movie_corpus + movie_corpus_quarantine ------------------------------------------------------


# The weekly_corpus_refresh schedule rebuilds the corpus every Sunday: a warning once a refresh is missed.
WEEKLY = dg.FreshnessPolicy.time_window(warn_window=timedelta(days=7, hours=6), fail_window=timedelta(days=14))


def _table_spec(key: dg.AssetKey, description: str, freshness_policy=None) -> dg.AssetSpec:
    """A Parquet table the corpus build writes from the raw sources."""
    return dg.AssetSpec(key, group_name=GROUP, kinds={"polars", "parquet"}, owners=OWNERS, deps=RAW_KEYS,
                        description=description, freshness_policy=freshness_policy)


@dg.multi_asset(
    name="movie_corpus_build",
    specs=[
        *(_raw_spec(spec) for spec in SOURCES.values()),
        _table_spec(
            CORPUS,
            "Merged, normalised, deduplicated movies, one row per film (zstd Parquet at "
            "`$RAR_HOME/tables/movie_corpus.parquet`): IMDb-id, title+year and fuzzy matching across sources. "
            "Expected weekly (the weekly_corpus_refresh schedule).",
            freshness_policy=WEEKLY,
        ),
        _table_spec(
            CORPUS_QUARANTINE,
            "Every source record rejected while building movie_corpus, with its source, file, line and reason "
            "(written with every build of movie_corpus).",
        ),
    ],
    can_subset=True,
)
def movie_corpus_build(context: dg.AssetExecutionContext):
    """Fetch the selected sources, then merge every fetched source of the profile into movie_corpus and its
    quarantine (both tables are written together, whichever of the two is selected)."""
    settings = get_settings()
    selected = context.selected_asset_keys
    for spec in SOURCES.values():
        if raw_key(spec.name) in selected:
            result = fetch_raw(context, spec, settings)
            if isinstance(result, dg.AssetObservation):
                context.log_event(result)
            else:
                yield result
    if selected & {CORPUS, CORPUS_QUARANTINE}:
        yield from _merge(context, settings, selected)


def _merge(context: dg.AssetExecutionContext, settings, selected):
    from corpus_build.merge import build_corpus, most_voted, read_fetched_sources, write_corpus
    from corpus_build.quality import films_split_since

    specs = sources_for_profile(settings.profile, settings.source_mirror)
    results, skipped = read_fetched_sources(specs, settings.raw_dir)
    for name, reason in skipped.items():
        context.log.warning(f"source {name} not merged: {reason}")
    if not results:
        raise dg.Failure(f"no source of profile {settings.profile!r} has been fetched: {skipped}")
    merged = build_corpus(results)
    if settings.profile == "sample" and settings.sample_films:
        merged.corpus = most_voted(merged.corpus, settings.sample_films)
        context.log.info(f"RAR_SAMPLE_FILMS: the {merged.corpus.height} most voted films kept")
    corpus_path, quarantine_path = settings.table_path("movie_corpus"), settings.table_path("movie_corpus_quarantine")
    split = films_split_since(corpus_path, merged.corpus)  # the file still holds the previous corpus
    write_corpus(merged, corpus_path, quarantine_path)
    if CORPUS in selected:
        previous = previous_row_count(context.instance)
        yield dg.MaterializeResult(asset_key=CORPUS,
                                   metadata=_corpus_metadata(merged, corpus_path, previous, skipped, split))
    else:
        context.log.info("movie_corpus.parquet was rewritten with its quarantine; materialise movie_corpus to record it")
    if CORPUS_QUARANTINE in selected:
        yield dg.MaterializeResult(asset_key=CORPUS_QUARANTINE, metadata=_quarantine_metadata(merged, quarantine_path))
    else:
        context.log.info("movie_corpus_quarantine.parquet was rewritten with the corpus; materialise "
                         "movie_corpus_quarantine to record it")


def _quarantine_metadata(merged, path) -> dict:
    records = sum(counts.get("rows_in", 0) + counts.get("reader_quarantined", 0)
                  for counts in merged.source_stats.values())
    return readable({
        "dagster/row_count": merged.quarantine.height,
        "records_read": records,
        "quarantined_share": merged.quarantine.height / records if records else 0.0,
        "path": dg.MetadataValue.path(str(path)),
        "by_reason": dg.MetadataValue.json(merged.quarantine_reasons()),
        "dagster/column_schema": table_schema(merged.quarantine.schema, QUARANTINE_COLUMN_DESCRIPTIONS),
    })


def previous_row_count(instance: dg.DagsterInstance) -> int | None:
    """Row count of the latest recorded movie_corpus materialisation (None: there was none)."""
    return _row_count(latest_metadata(instance, CORPUS))


def _corpus_metadata(merged, path, previous: int | None, skipped: dict[str, str], split) -> dict:
    return readable({
        "dagster/row_count": merged.corpus.height,
        "dagster/column_schema": table_schema(merged.corpus.schema, CORPUS_COLUMN_DESCRIPTIONS),
        "path": dg.MetadataValue.path(str(path)),
        "films_from_several_sources": merged.stats["films_from_several_sources"],
        "rows_merged": merged.stats["rows_merged"],
        "quarantined": merged.stats["quarantined"],
        "title_conflicts": merged.stats["title_conflicts"],
        "new_films_matching_previous": split.height if split is not None else None,
        "split_film_examples": dg.MetadataValue.json(_split_examples(split)) if split is not None else None,
        "previous_row_count": previous,
        "source_stats": records_table([{"source": source, **counts} for source, counts in sorted(merged.source_stats.items())]),
        "sources_skipped": dg.MetadataValue.json(skipped),
    })


def _split_examples(split, limit: int = 10) -> list[str]:
    return [f"{r['movie_id']} {r['title']!r} ({r['year']}) ~ {r['previous_movie_id']} {r['previous_title']!r}"
            for r in split.head(limit).iter_rows(named=True)]


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


# --- check on movie_corpus_quarantine -----------------------------------------------------------


@dg.asset_check(
    asset=CORPUS_QUARANTINE,
    description=f"At most {QUARANTINE_MAX_SHARE:.0%} of the source records read are quarantined; more means an "
    "upstream changed its format or a file arrived damaged.",
)
def quarantine_share_under_limit(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metadata = latest_metadata(context.instance, CORPUS_QUARANTINE)
    if "quarantined_share" not in metadata:
        return dg.AssetCheckResult(passed=False, metadata={"error": "movie_corpus_quarantine has no recorded share"})
    share = float(metadata["quarantined_share"])
    return dg.AssetCheckResult(
        passed=share <= QUARANTINE_MAX_SHARE,
        metadata=readable({"quarantined_share": share, "max_share": QUARANTINE_MAX_SHARE,
                           "quarantined": metadata.get("dagster/row_count"), "records_read": metadata.get("records_read"),
                           "by_reason": dg.MetadataValue.json(metadata.get("by_reason") or {})}),
    )
