"""The storage layer against a real S3 API server (moto in server mode on 127.0.0.1): paths, Parquet,
atomic writes, local copies, and a writer killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from corpus_build import storage
from corpus_build.atomic import atomic_path, torch_save_atomic, write_json_atomic, write_parquet_atomic

pytestmark = pytest.mark.usefixtures("s3_env")


@pytest.fixture
def bucket(s3_server) -> str:
    return f"s3://{s3_server.new_bucket()}"


def test_local_paths_stay_pathlib(tmp_path):
    assert type(storage.as_path(tmp_path / "x")) is type(Path("/x"))
    assert storage.as_path(f"file://{tmp_path}") == tmp_path
    assert storage.object_store_options(tmp_path) == {}
    assert storage.local_copy(tmp_path / "x") == tmp_path / "x"


def test_object_store_options_come_from_the_standard_variables(s3_server):
    options = storage.object_store_options("s3://bucket/prefix")
    assert options["aws_endpoint"] == s3_server.endpoint and options["aws_allow_http"] == "true"
    assert options["aws_access_key_id"] == "rar-test" and options["aws_region"] == "us-east-1"
    assert "rar-test-secret" not in storage.describe("s3://bucket/prefix")


def test_parquet_and_json_round_trip_on_s3(bucket):
    frame = pl.DataFrame({"movie_id": ["tt1", "tt2"], "year": [1999, 2001]})
    target = write_parquet_atomic(frame, f"{bucket}/home/tables/movie_corpus.parquet")
    assert str(target) == f"{bucket}/home/tables/movie_corpus.parquet" and target.is_file()
    assert storage.read_parquet(target).equals(frame)
    assert storage.read_parquet(target, columns=["year"])["year"].to_list() == [1999, 2001]
    assert storage.parquet_schema(target) == {"movie_id": pl.String, "year": pl.Int64}
    assert storage.parquet_rows(target) == 2
    record = write_json_atomic({"round": "r1"}, storage.as_path(bucket) / "home" / "round.json")
    assert record.read_text().startswith("{")
    assert sorted(p.name for p in (storage.as_path(bucket) / "home").glob("*.json")) == ["round.json"]


def test_local_copy_is_fetched_once_and_again_when_the_object_changes(bucket, tmp_path):
    target = storage.as_path(f"{bucket}/ckpt/retriever.pt")
    torch_save_atomic({"weights": [1, 2, 3]}, target)
    first = storage.local_copy(target, cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    assert storage.local_copy(target, cache_dir=tmp_path).stat().st_mtime_ns == stamp  # unchanged: not fetched
    torch_save_atomic({"weights": [4, 5, 6, 7]}, target)
    import torch

    assert torch.load(storage.local_copy(target, cache_dir=tmp_path))["weights"] == [4, 5, 6, 7]
    with pytest.raises(FileNotFoundError):
        storage.local_copy(f"{bucket}/ckpt/missing.pt", cache_dir=tmp_path)


def test_a_failed_write_leaves_the_old_object(bucket):
    target = f"{bucket}/tables/t.parquet"
    write_parquet_atomic(pl.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("crash mid-write")
    assert storage.read_parquet(target)["a"].to_list() == [1]


def test_remove_tree_and_fingerprint(bucket):
    folder = storage.as_path(f"{bucket}/round/epochs")
    write_json_atomic({}, folder / "last.json")
    stamp = storage.fingerprint(folder / "last.json")
    assert stamp and stamp.startswith("2:")
    storage.remove_tree(folder)
    storage.remove_tree(folder)  # absent: nothing to do
    assert not (folder / "last.json").exists() and storage.fingerprint(folder / "last.json") is None


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from corpus_build.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as out:
        for _ in range(400):  # 400 MiB written slowly: killed long before the end
            out.write(b"x" * (1 << 20)); out.flush()
            print("wrote", flush=True)
            time.sleep(0.01)
""")


@pytest.mark.hostile
def test_a_writer_killed_mid_write_leaves_no_object(bucket, tmp_path):
    target = f"{bucket}/tables/big.parquet"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, target], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    for _ in range(5):
        writer.stdout.readline()
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    time.sleep(0.2)
    assert not storage.as_path(target).exists()  # nothing a reader could take for the table
    write_parquet_atomic(pl.DataFrame({"a": [1]}), target)
    assert storage.read_parquet(target).height == 1


def test_response_cache_on_s3_publishes_segments_that_concurrent_runs_share(bucket, tmp_path, monkeypatch):
    from training.generator.cache import ResponseCache
    from training.layout import generator_cache_path

    monkeypatch.setattr(storage, "LOCAL_CACHE", tmp_path / "machine-a")
    location = generator_cache_path(f"{bucket}/home")
    assert location.name == "segments"
    first, second = ResponseCache(location), ResponseCache(location)  # two runs at once, one working copy
    first.put("k1", "m", {"ranking": ["a"]})
    second.put("k2", "m", {"ranking": ["b"]})
    first.flush()
    second.close()
    first.put("k1", "m", {"ranking": ["a", "newer"]})
    first.close()
    assert len(list(location.glob("*.jsonl.gz"))) == 3  # one immutable segment per flush, none rewritten
    monkeypatch.setattr(storage, "LOCAL_CACHE", tmp_path / "machine-b")  # another pod: an empty working copy
    reader = ResponseCache(location)
    assert reader.get("k2") == {"ranking": ["b"]} and reader.get("k1") == {"ranking": ["a", "newer"]}
    assert len(reader) == 2
    reader.close()


def test_settings_and_layout_compose_object_store_paths(s3_home):
    from rar_pipeline.settings import get_settings
    from training.layout import checkpoint_path, generator_cache_path, round_dir

    settings = get_settings()
    assert settings.remote and str(settings.home) == s3_home
    assert str(settings.table_path("movie_corpus")) == f"{s3_home}/tables/movie_corpus.parquet"
    assert settings.vector_db_uri == f"{s3_home}/lancedb"
    assert str(checkpoint_path(settings.home, "sft")) == f"{s3_home}/retriever/sft/retriever.pt"
    assert str(round_dir(settings.home, "round-1") / "round.json") == f"{s3_home}/alignment/rounds/round-1/round.json"
    assert str(generator_cache_path(settings.home)) == f"{s3_home}/generator_cache/segments"
    write_parquet_atomic(pl.DataFrame({"movie_id": ["tt1"]}), settings.table_path("movie_corpus"))
    assert settings.read_table("movie_corpus")["movie_id"].to_list() == ["tt1"]
