"""The corpus assets with dg.materialize: the sample profile (bokeh-sampledata, real), the mirror
(../shared/data), the blocking checks, and `rar sql` over the written tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

import assets.corpus as corpus_assets
from corpus_build import movie_text
from corpus_build.schema import CORPUS_SCHEMA, QUARANTINE_SCHEMA
from rar_pipeline.settings import get_settings

CHECKS = [
    corpus_assets.movie_id_unique,
    corpus_assets.title_not_empty,
    corpus_assets.year_in_range,
    corpus_assets.row_count_not_shrinking,
    corpus_assets.great_expectations_suite,
]
RAR = shutil.which("rar", path=str(Path(sys.executable).parent)) or "rar"  # the installed entry point


def materialize(instance: dg.DagsterInstance, extra=(), checks=CHECKS, selection=None) -> dg.ExecuteInProcessResult:
    return dg.materialize([corpus_assets.movie_corpus_build, *checks, *extra], instance=instance,
                          selection=selection, raise_on_error=False)


def metadata(result, key: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def observation(result, key: str) -> dict:
    """The metadata of the one observation of ``key`` in the run (a skipped source)."""
    [event] = [e.asset_observation_data.asset_observation for e in result.all_events
               if e.event_type_value == "ASSET_OBSERVATION" and e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.metadata.items()}


def source_stats(meta: dict) -> dict[str, dict]:
    """movie_corpus's per-source counters (one table entry), by source."""
    return {record.data["source"]: record.data for record in meta["source_stats"].records}


def checks_passed(result) -> dict[str, bool]:
    return {c.check_name: c.passed for c in result.get_asset_check_evaluations()}


@pytest.mark.slow
def test_sample_profile_builds_the_corpus_and_passes_every_check(rar_home):
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(instance)
    assert result.success
    assert checks_passed(result) == {c.check_key.name: True for c in CHECKS}

    corpus_meta = metadata(result, "movie_corpus")
    assert corpus_meta["dagster/row_count"] >= 15_000
    assert source_stats(corpus_meta)["wikidata_sample"]["rows_in"] >= corpus_meta["dagster/row_count"]
    assert "previous_row_count" not in corpus_meta  # first run
    # a source the profile does not read is observed as skipped, never materialised
    assert observation(result, "raw_imdb")["skipped_because"].startswith("not in profile 'sample'")
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_wikidata_sample", "movie_corpus", "movie_corpus_quarantine"}
    raw = metadata(result, "raw_wikidata_sample")
    assert raw["status"] == "fetched" and raw["files"] == 1 and len(raw["sha256"]["movies.db"]) == 64

    settings = get_settings()
    corpus = pl.read_parquet(settings.table_path("movie_corpus"))
    assert corpus.schema == pl.Schema(CORPUS_SCHEMA)
    assert corpus.height == corpus_meta["dagster/row_count"]
    assert corpus["movie_id"].is_unique().all()
    assert corpus["movie_id"].str.starts_with("tt").mean() > 0.99  # the Wikidata table knows IMDb ids
    for row in corpus.sample(200, seed=1).iter_rows(named=True):
        assert row["content_hash"] == movie_text.content_hash(row)
    quarantine = pl.read_parquet(settings.table_path("movie_corpus_quarantine"))
    assert quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)

    # `rar sql` queries the written tables by name
    sql = subprocess.run(
        [RAR, "sql", "select count(*) as films from movie_corpus"],
        env={**os.environ, "RAR_HOME": str(rar_home)}, capture_output=True, text=True, timeout=60,
    )
    assert sql.returncode == 0, sql.stderr
    assert str(corpus.height) in sql.stdout
    unknown = subprocess.run(
        [RAR, "sql", "select * from no_such_table"],
        env={**os.environ, "RAR_HOME": str(rar_home)}, capture_output=True, text=True, timeout=60,
    )
    assert unknown.returncode != 0 and "movie_corpus" in unknown.stderr  # lists the known tables

    # a second run: the package file is unchanged, the row count is compared with the first run
    again = materialize(instance, checks=[corpus_assets.row_count_not_shrinking])
    assert again.success and checks_passed(again) == {"row_count_not_shrinking": True}
    assert metadata(again, "raw_wikidata_sample")["skipped_unchanged"] == 1
    assert metadata(again, "movie_corpus")["previous_row_count"] == corpus.height


@pytest.mark.slow
def test_shrinking_corpus_fails_the_blocking_row_count_check(rar_home):
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization("movie_corpus", metadata={"dagster/row_count": 1_000_000})
    )

    @dg.asset(deps=[corpus_assets.CORPUS])
    def downstream_of_corpus() -> None:
        """Stands for movie_vectors and the rest: must not run after a failed blocking check."""

    result = materialize(instance, extra=[downstream_of_corpus], checks=[corpus_assets.row_count_not_shrinking])
    assert not result.success
    assert checks_passed(result) == {"row_count_not_shrinking": False}
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "movie_corpus" in materialized and "downstream_of_corpus" not in materialized


def test_checks_reject_a_bad_corpus_file(rar_home):
    """The plain checks read the table on disk: duplicates, empty titles and bad years fail them."""
    from corpus_build.atomic import write_parquet_atomic

    row = {c: None for c in CORPUS_SCHEMA} | dict(genres=[], directors=[], cast=[], aliases=[], sources=["x"])
    bad = pl.DataFrame(
        [
            row | dict(movie_id="tt0000001", title="A", year=1999),
            row | dict(movie_id="tt0000001", title=" ", year=1700),
            row | dict(movie_id="tt0000002", title="Announced", year=None),  # an IMDb id places it: allowed
            row | dict(movie_id="rar:0123456789ab", title="Undated", year=None),  # nothing places it
        ],
        schema=CORPUS_SCHEMA,
    )
    write_parquet_atomic(bad, get_settings().table_path("movie_corpus"))
    assert not corpus_assets.movie_id_unique().passed
    assert not corpus_assets.title_not_empty().passed
    result = corpus_assets.year_in_range()
    assert not result.passed and result.metadata["out_of_range"].value == 2
    assert result.metadata["undated_films"].value == 2


@pytest.mark.slow
@pytest.mark.mirror
def test_mirror_builds_a_corpus_of_at_least_60000_films(mirror_home):
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(instance, checks=CHECKS[:3])
    assert result.success
    assert all(checks_passed(result).values())
    meta = metadata(result, "movie_corpus")
    assert meta["dagster/row_count"] >= 60_000
    assert meta["films_from_several_sources"] > 10_000  # Wikipedia plots joined MovieLens films
    stats = source_stats(meta)
    for source in ("wikipedia", "movielens", "movielens_small", "movielens_1m"):
        assert stats[source]["rows_in"] > 0
    assert stats["wikipedia"]["matched_title_year"] > 10_000
    assert "RAR_SOURCE_MIRROR" in observation(result, "raw_imdb")["skipped_because"]
    assert observation(result, "raw_wikidata_sample")["skipped_because"].startswith("not in profile 'full'")
    corpus = pl.read_parquet(get_settings().table_path("movie_corpus"), columns=["movie_id", "sources", "plot"])
    assert corpus["movie_id"].is_unique().all()
    assert corpus["plot"].is_not_null().sum() > 30_000
    quarantine = metadata(result, "movie_corpus_quarantine")
    assert quarantine["dagster/row_count"] == meta["quarantined"]
    print("movie_corpus per source:", stats)
    print("quarantine by reason:", quarantine["by_reason"])


def test_raw_asset_reports_why_a_source_is_skipped(rar_home, monkeypatch, tmp_path):
    from corpus_build.sources.registry import SOURCES

    settings = get_settings()
    assert corpus_assets.why_skipped(SOURCES["wikidata_sample"], settings) is None
    assert "not in profile 'sample'" in corpus_assets.why_skipped(SOURCES["wikipedia"], settings)
    monkeypatch.setenv("RAR_PROFILE", "full")
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(tmp_path))  # an empty mirror
    get_settings.cache_clear()
    reason = corpus_assets.why_skipped(SOURCES["wikipedia"], get_settings())
    assert reason == f"RAR_SOURCE_MIRROR={Path(tmp_path).resolve()} holds none of its files"


@pytest.mark.slow
def test_dagster_materializes_the_corpus_selected_by_name(rar_home, tmp_path):
    """`dagster asset materialize --select movie_corpus` works: the sources and the corpus are one subsettable
    multi-asset, so selecting one of them needs no other (the corpus alone merges what was fetched before)."""
    from corpus_build.fetch import fetch_source
    from corpus_build.sources.registry import SOURCES
    from rar_pipeline.definitions import defs

    for selection in ("movie_corpus", "+movie_corpus", "raw_imdb", "movie_corpus_quarantine"):
        job = defs.resolve_implicit_global_asset_job_def()
        keys = dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph())
        assert job.get_subset(asset_selection=keys).asset_layer.executable_asset_keys == keys
    fetch_source(SOURCES["wikidata_sample"], get_settings().upstream, progress=False)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = {**os.environ, "RAR_HOME": str(rar_home), "DAGSTER_HOME": str(dagster_home)}
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    in_process = '{"execution": {"config": {"in_process": {}}}}'  # one process, not one per check step: faster
    done = subprocess.run([dagster, "asset", "materialize", "-m", "rar_pipeline.definitions", "--select", "movie_corpus",
                           "--config-json", in_process], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert len(instance.fetch_materializations(corpus_assets.CORPUS, limit=10).records) == 1
        assert not instance.fetch_materializations(dg.AssetKey("raw_wikidata_sample"), limit=1).records


def test_quarantine_share_check_fails_above_its_limit(rar_home):
    from corpus_build.quality import QUARANTINE_MAX_SHARE

    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_asset_check_context(instance=instance)
    for share, passed in ((0.0, True), (QUARANTINE_MAX_SHARE, True), (QUARANTINE_MAX_SHARE * 1.5, False)):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "movie_corpus_quarantine", metadata={"dagster/row_count": 3, "records_read": 100, "quarantined_share": share}))
        result = corpus_assets.quarantine_share_under_limit(context)
        assert result.passed is passed and result.metadata["max_share"].value == QUARANTINE_MAX_SHARE
