"""The sample main job on an object store: RAR_HOME=s3://... on a real S3 API server (moto in server
mode on 127.0.0.1), run by `rar materialize` under the multiprocess executor, read back by `rar sql`,
`rar search` and `rar recommend`, then refreshed (corpus_refresh) and its round materialised again to show
that every artefact is reused (those two runs in one process: the multiprocess executor is the first run's).

To finish in a couple of minutes the run is the sample profile cut down by settings, never faked:
RAR_SAMPLE_FILMS keeps the 600 most voted films of the sample corpus (RAR_MIN_LINK_RATE lowered with
it: the MovieLens ratings name far more films, 3% of them link), the films are embedded by a tiny sentence-transformers
encoder (tests/tiny_encoder.py), and training and evaluation run one epoch on a few turns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.long]

REPO = Path(__file__).resolve().parents[1]
CUT_DOWN = {
    "RAR_SAMPLE_FILMS": "600", "RAR_MIN_LINK_RATE": "0.01", "RAR_EMBEDDING_PRECISION": "fp32",
    "RAR_RETRIEVER_EPOCHS": "1", "RAR_RETRIEVER_SFT_EPOCHS": "1", "RAR_RETRIEVER_MAX_MINUTES": "0.5",
    "RAR_RETRIEVER_THREADS": "1", "RAR_ALIGNMENT_MAX_TURNS": "48", "RAR_ALIGNMENT_EPOCHS": "1",
    "RAR_ALIGNMENT_PROBE_TURNS": "8", "RAR_EVALUATION_MAX_TURNS": "30", "RAR_MAX_CONCURRENT_STEPS": "2",
}


def rar(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    rar_bin = Path(sys.executable).with_name("rar")
    command = [str(rar_bin), *args] if rar_bin.exists() else [sys.executable, "-m", "rar_pipeline.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_sample_main_job_on_s3_under_the_multiprocess_executor(s3_server, tiny_encoder, tmp_path, monkeypatch):
    import dagster as dg

    bucket = s3_server.new_bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAR_", "AWS_", "DAGSTER_"))}
    env |= {**s3_server.env, **CUT_DOWN, "RAR_HOME": f"s3://{bucket}/home", "RAR_EMBEDDING_MODEL": str(tiny_encoder),
            "DAGSTER_HOME": str(tmp_path / "dagster"), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
            "HOME": str(tmp_path)}  # the local copies and working copies of this machine start empty
    first = rar(env, "materialize")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert "Executing steps using multiprocess executor" in first.stdout + first.stderr

    # Nothing of the run is on the local disk but Dagster's own records and caches.
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    for expected in ("home/tables/movie_corpus.parquet", "home/tables/conversation_turns.parquet",
                     "home/retriever/pretrained/retriever.pt", "home/retriever/sft/retriever.pt"):
        assert expected in keys
    assert any(k.startswith("home/lancedb/movie_vectors.lance/") for k in keys)
    rounds = sorted({k.split("/")[3] for k in keys if k.startswith("home/alignment/rounds/")})
    assert len(rounds) == 1 and f"home/alignment/rounds/{rounds[0]}/round.json" in keys
    assert any(k.startswith(f"home/alignment/rounds/{rounds[0]}/rollouts/part-") for k in keys)
    assert not [k for k in keys if k.startswith("home/work/")], "movie_vectors left its shards behind"

    # The commands read the object store (in this process, as `rar` would; the environment of the run).
    from click.testing import CliRunner

    from rar_pipeline.cli import main as cli
    from rar_pipeline.settings import get_settings

    for name in [n for n in os.environ if n.startswith(("RAR_", "AWS_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    runner = CliRunner()
    sql = runner.invoke(cli, ["sql", "select count(*) as films from movie_corpus"])
    assert sql.exit_code == 0 and "600" in sql.output, sql.output
    refused = runner.invoke(cli, ["sql", "select * from read_csv('/etc/passwd')"])
    assert refused.exit_code != 0 and "reads only the pipeline's tables" in refused.output
    search = runner.invoke(cli, ["search", "a war film", "--k", "3"])
    assert search.exit_code == 0 and len(re.findall(r"(?m)^ *\d+\. ", search.stdout)) == 3, search.output
    recommend = runner.invoke(cli, ["recommend", "I loved The Matrix and Inception, what next?", "--k", "5", "--no-service"])
    assert recommend.exit_code == 0 and "retriever: " in recommend.stdout, recommend.output
    assert "no trained retriever" not in recommend.stdout  # a retriever checkpoint read from the store
    assert len(re.findall(r"(?m)^ *\d+\. ", recommend.stdout)) == 5, recommend.output

    # A second run reuses what the first built: no film embedded again, no finished round asked again.
    round_record = {"Bucket": bucket, "Key": f"home/alignment/rounds/{rounds[0]}/round.json"}
    written = client.head_object(**round_record)["LastModified"]
    reuse_env = env | {"RAR_EXECUTOR": "in_process"}  # a process per step would cost a minute here
    second = rar(reuse_env, "materialize", "--job", "corpus_refresh")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    again = subprocess.run([sys.executable, "-c", RERUN_ROUND, rounds[0]], env=reuse_env, capture_output=True, text=True,
                           cwd=REPO, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1]) == {"generator/requests": 0.0, "generator/calls": 0.0}
    assert client.head_object(**round_record)["LastModified"] == written  # its record was read, not rewritten
    instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
    vectors = instance.fetch_materializations(dg.AssetKey("movie_vectors"), limit=2).records
    assert [r.asset_materialization.metadata["embedded"].value for r in vectors] == [0, 600]
    assert vectors[0].asset_materialization.metadata["reused"].value == 600


RERUN_ROUND = r"""
import json, sys
import dagster as dg
with dg.execute_job(dg.build_reconstructable_job("rar_pipeline.definitions", "resolved_job", reconstructable_args=("main",)),
                    instance=dg.DagsterInstance.get(), asset_selection=[dg.AssetKey("alignment_round")],
                    tags={"dagster/partition": sys.argv[1]}, raise_on_error=False) as result:
    metadata = result.asset_materializations_for_node("alignment_round")[0].metadata
print(json.dumps({name: metadata[name].value for name in ("generator/requests", "generator/calls")}))
"""
