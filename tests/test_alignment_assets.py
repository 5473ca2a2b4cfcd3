"""Alignment and evaluation assets through Dagster on a tiny fixture: rounds, promotion gate, report,
nightly schedule, and a headless `rar materialize` of the nightly job."""

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest
import torch

from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, CORPUS_SCHEMA, USER_SEQUENCES_SCHEMA
from rar_pipeline.settings import get_settings

pytestmark = pytest.mark.slow

GENRES = ["Comedy", "Horror", "Science Fiction", "Romance", "Western"]


def _corpus(n=30) -> pl.DataFrame:
    rows = [{
        "movie_id": f"tt{1000000 + i}", "title": f"{GENRES[i % 5]} Story {i}", "year": 1990 + i, "genres": [GENRES[i % 5]],
        "directors": [], "cast": [], "runtime_minutes": None, "plot": f"A {GENRES[i % 5].lower()} film.", "aliases": [],
        "imdb_rating": None, "imdb_votes": None, "sources": ["test"], "content_hash": f"h{i}",
    } for i in range(n)]
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)


def _turns(corpus: pl.DataFrame) -> pl.DataFrame:
    ids = corpus["movie_id"].to_list()
    rows = []
    for i in range(80):
        genre = i % 5
        same = [m for j, m in enumerate(ids) if j % 5 == genre]
        rows.append({
            "dataset": "redial", "split": "validation" if i < 60 else "test", "dialog_id": f"d{i}", "turn_index": 1,
            "context": [{"role": "seeker", "text": f"I want a {GENRES[genre].lower()} movie like {same[0]}"}],
            "history_movie_ids": [same[i % 2]], "target_movie_ids": [same[2 + i % 3]], "target_mentioned_before": [False],
        })
    return pl.DataFrame(rows, schema=CONVERSATION_TURNS_SCHEMA)


def _sequences(corpus: pl.DataFrame) -> pl.DataFrame:
    """MovieLens histories: the report's next-item evaluation set (ml-latest-small/test)."""
    ids = corpus["movie_id"].to_list()
    rows = []
    for user in range(12):
        films = [ids[(user + 5 * t) % len(ids)] for t in range(5)]
        rows.append({"dataset": "ml-latest-small", "user_id": str(user), "movie_ids": films,
                     "train_movie_ids": films[:-2], "val_movie_id": films[-2], "test_movie_id": films[-1]})
    return pl.DataFrame(rows, schema=USER_SEQUENCES_SCHEMA)


@pytest.fixture
def tiny_pipeline(rar_home, monkeypatch):
    from training.layout import checkpoint_path
    from training.lrurec import LRURec, LRURecConfig
    from training.retriever import export_retriever

    torch.set_num_threads(1)
    for name, value in {
        "RAR_ALIGNMENT_DATASETS": '["redial"]', "RAR_ALIGNMENT_MAX_TURNS": "40", "RAR_ALIGNMENT_SET_SIZE": "5",
        "RAR_ALIGNMENT_NUM_SETS": "2", "RAR_ALIGNMENT_EPOCHS": "1", "RAR_EVALUATION_MAX_TURNS": "20",
        # a gate of ~10 turns cannot show a gain: let this fixture's rounds pass unless a test raises the bar
        "RAR_ALIGNMENT_GATE_MIN_TURNS": "1", "RAR_ALIGNMENT_GATE_MIN_DELTA": "-1",
        "RAR_RETRIEVER_KIND": "lrurec",  # this fixture's rounds start from lrurec_sft's checkpoint
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    corpus = _corpus()
    corpus.write_parquet(settings.table_path("movie_corpus"))
    _turns(corpus).write_parquet(settings.table_path("conversation_turns"))
    _sequences(corpus).write_parquet(settings.table_path("user_sequences"))
    torch.manual_seed(0)
    model = LRURec(LRURecConfig(num_items=corpus.height, hidden=16, blocks=1))
    for system in ("pretrained", "sft"):
        export_retriever(model, corpus["movie_id"].to_list(), checkpoint_path(settings.home, system), max_len=20)
    return settings


def _materialize(instance, round_key, selection):
    from assets.alignment import aligned_retriever, alignment_round, serves_a_sound_checkpoint
    from assets.evaluation import evaluation_report, headline_within_previous_ci
    from rar_pipeline.resources import GeneratorResource

    return dg.materialize(
        [alignment_round, aligned_retriever, serves_a_sound_checkpoint, evaluation_report, headline_within_previous_ci],
        selection=selection, partition_key=round_key, instance=instance,
        resources={"generator": GeneratorResource(backend="embedding")}, raise_on_error=False,
    )


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _metadata(result, key):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_round_gate_promotion_report_and_rerun(tiny_pipeline, monkeypatch):
    from training.layout import promoted_record

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("alignment_rounds", ["round-1"])
    result = _materialize(instance, "round-1", ["alignment_round", "aligned_retriever", "evaluation_report"])
    assert result.success
    meta = _metadata(result, "alignment_round")
    assert meta["parent_round"] == "sft" and meta["generator_backend"] == "embedding"
    assert meta["generator/calls"] > 0 and meta["train_turns"] > 0 and meta["gate_turns"] > 0
    assert promoted_record(tiny_pipeline.home)["round"] == "round-1"
    report = _metadata(result, "evaluation_report")
    assert "| redial/test | aligned+embedding |" in report["report"] and "data:image/png;base64," in report["report"]
    assert 0.0 <= report["headline/ndcg@10"] <= 1.0 and report["headline_system"] == "redial/test aligned+embedding"
    per_turn = pl.read_parquet(tiny_pipeline.table_path("evaluation_turns"))
    assert set(per_turn["system"]) >= {"popularity", "pretrained", "sft", "aligned", "sft+embedding"}
    next_item = per_turn.filter(pl.col("dataset") == "ml-latest-small/test")
    assert next_item.height == 12 * 4  # every user, by popularity and the three retrievers (no generator)
    assert set(next_item["system"]) == {"popularity", "pretrained", "sft", "aligned"}
    figures = {(r.data["dataset"], r.data["system"]): r.data for r in report["figures"].records}
    assert figures[("ml-latest-small/test", "aligned")]["ndcg@10"] == pytest.approx(
        next_item.filter(pl.col("system") == "aligned")["ndcg@10"].mean(), rel=1e-3)  # 4 significant digits

    # A finished round re-run costs no generator call.
    again = _materialize(instance, "round-1", ["alignment_round"])
    assert again.success and _metadata(again, "alignment_round")["generator/calls"] == 0.0

    assert _checks(result) == {"promotion_gate": True, "serves_a_sound_checkpoint": True, "headline_within_previous_ci": True}
    aligned = _metadata(result, "aligned_retriever")
    assert aligned["round"] == "round-1" and aligned["promoted"] is True

    # A round the gate rejects is kept and not promoted, and the run still succeeds: the gate's warning on the
    # round says why (with its partition), and aligned_retriever records round-1 again, unchanged.
    monkeypatch.setenv("RAR_ALIGNMENT_GATE_MIN_DELTA", "1.0")
    get_settings.cache_clear()
    instance.add_dynamic_partitions("alignment_rounds", ["round-2"])
    rejected = _materialize(instance, "round-2", ["alignment_round", "aligned_retriever"])
    assert rejected.success
    [gate] = [e for e in rejected.get_asset_check_evaluations() if e.check_name == "promotion_gate"]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN and gate.partition == "round-2"
    assert _metadata(rejected, "alignment_round")["parent_round"] == "round-1"
    assert gate.metadata["reason"].value.startswith("not promoted: ") and "lower bound" in gate.metadata["reason"].value
    kept = _metadata(rejected, "aligned_retriever")
    assert (kept["round"], kept["promoted"], kept["rejected_round"]) == ("round-1", False, "round-2")
    records = instance.fetch_materializations(dg.AssetKey("aligned_retriever"), limit=5).records
    versions = [record.asset_materialization.tags["dagster/data_version"] for record in records]
    assert versions == ["round-1", "round-1"]  # the same data version: nothing downstream goes stale
    assert promoted_record(tiny_pipeline.home)["round"] == "round-1"
    assert json.loads((tiny_pipeline.home / "alignment/rounds/round-2/round.json").read_text())["gate_passed"] is False

    # A round that fails for another reason (no parent retriever) fails the run: only a rejection is not a failure.
    (tiny_pipeline.home / "retriever/aligned/promoted.json").unlink()
    (tiny_pipeline.home / "retriever/sft/retriever.pt").unlink()
    instance.add_dynamic_partitions("alignment_rounds", ["round-3"])
    broken = _materialize(instance, "round-3", ["alignment_round", "aligned_retriever"])
    assert not broken.success and not broken.get_asset_check_evaluations()


def test_nightly_schedule_adds_a_round_and_requests_it():
    from rar_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def("nightly_alignment")
    when = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
        )
        request = schedule.evaluate_tick(context).run_requests[0]
        assert request.partition_key == "round-20261126-020000"
        assert instance.get_dynamic_partitions("alignment_rounds") == ["round-20261126-020000"]
    assert defs.resolve_job_def("nightly_alignment").partitions_def.name == "alignment_rounds"


@pytest.mark.long
def test_rar_materialize_runs_a_round_headless_and_survives_a_rejection(tiny_pipeline):
    """The nightly job from the CLI with a round the gate rejects and nothing promoted yet: the run succeeds,
    says why the round was not promoted, and a second run (the evaluation job) builds the report. Both runs
    carry the code location's origin, so the UI lists them under their jobs and on its timeline."""
    from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

    env = {**os.environ, "RAR_ALIGNMENT_GATE_MIN_DELTA": "1.0", "DAGSTER_HOME": str(tiny_pipeline.home / "dagster")}
    done = subprocess.run([sys.executable, "-m", "rar_pipeline.cli", "materialize", "--job", "nightly_alignment"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "rejected by the promotion gate: not promoted: " in done.stdout
    assert "building the report in the evaluation job" in done.stdout
    assert tiny_pipeline.table_path("evaluation_turns").is_file()
    assert not (tiny_pipeline.home / "retriever/aligned/promoted.json").exists()
    assert (tiny_pipeline.home / "dagster" / "dagster.yaml").is_file()  # no startup warning in dagster dev
    with dg.DagsterInstance.from_config(str(tiny_pipeline.home / "dagster")) as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        assert set(runs) == {"nightly_alignment", "evaluation"}
        for name, run in runs.items():
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert run.remote_job_origin.location_name == "rar_pipeline"
            # the filter of the UI's Jobs > <job> > Runs page
            label = run.remote_job_origin.repository_origin.get_label()
            assert instance.get_runs(dg.RunsFilter(job_name=name, tags={REPOSITORY_LABEL_TAG: label}))
        assert runs["nightly_alignment"].tags["dagster/partition"].startswith("round-")

    # A run that fails for another reason (no SFT retriever to start a round from) is an error.
    (tiny_pipeline.home / "retriever/sft/retriever.pt").unlink()
    failed = subprocess.run([sys.executable, "-m", "rar_pipeline.cli", "materialize", "--job", "nightly_alignment"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and ": FAILURE" in failed.stdout, failed.stdout[-2000:]


def test_aligned_retriever_check_fails_without_a_sound_promoted_checkpoint(tiny_pipeline):
    from assets.alignment import serves_a_sound_checkpoint
    from corpus_build.atomic import write_json_atomic
    from training.layout import checkpoint_path, promoted_pointer

    assert "nothing is promoted" in serves_a_sound_checkpoint().metadata["problems"].value[0]
    write_json_atomic({"round": "round-9", "parent_round": "sft"}, promoted_pointer(tiny_pipeline.home))
    problems = serves_a_sound_checkpoint().metadata["problems"].value
    assert "round-9 has no finished round record" in problems
    assert any(str(checkpoint_path(tiny_pipeline.home, "aligned")) in p and "does not exist" in p for p in problems)
