"""movie_vectors benchmarks; prints, in one run:

(a) throughput of the asset's code path (sync_vectors into LanceDB: movie text, embedding, commits)
    vs a bare ``SentenceTransformer.encode`` on the same texts (goal >= 0.9);
(b) refresh after +1% new films on a 100k-film table vs a full build (goal <= 5% of the time);
(c) top-10 ANN latency p50/p95 and recall@10 vs exact search over 337k 384-d vectors
    (goal p50 <= 5 ms, recall >= 0.95).

Texts are real: films of ../shared/data/wikipedia-movie-data (title, year, genres, cast, plot).
Where a real run would take hours on a CPU, synthetic data stands in, and the output says so:
(b) the 100k-film bulk gets synthetic vectors (a stand-in embedder) and its real embedding time is
extrapolated from the real throughput measured in the same run; the +1% new films are real films
embedded for real. (c) uses clustered synthetic unit vectors (no model involved).

Usage: python benchmarks/vectors.py [--only abc] [--texts 512] [--table-rows 100000] [--ann-rows 337000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from corpus_build.embed import Embedder, resolve_model
from corpus_build.movie_text import content_hash, movie_text
from corpus_build.schema import CORPUS_SCHEMA
from corpus_build.vector_store import (
    HNSW_EF,
    INDEX_MIN_ROWS,
    NPROBES,
    REFINE_FACTOR,
    VectorStore,
    sync_vectors,
    table_schema,
)

DATA = Path(os.environ.get("RAR_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def wikipedia_films(limit: int, offset: int = 0) -> pl.DataFrame:
    """Real films with plots from the Wikipedia movie data, as a CORPUS_SCHEMA frame."""
    rows = []
    for path in sorted((DATA / "wikipedia-movie-data").glob("movies-*.json"), reverse=True):
        for i, film in enumerate(json.loads(path.read_text())):
            if not film.get("extract"):
                continue
            rows.append(
                dict(movie_id=f"wiki:{path.stem}:{i}", title=film["title"], year=film.get("year"),
                     genres=film.get("genres") or [], directors=[], cast=(film.get("cast") or [])[:10],
                     runtime_minutes=None, plot=film["extract"], aliases=[], imdb_rating=None,
                     imdb_votes=None, sources=["wikipedia"])
            )
            if len(rows) >= offset + limit:
                break
        if len(rows) >= offset + limit:
            break
    rows = rows[offset:]
    for row in rows:
        row["content_hash"] = content_hash(row)
    return pl.DataFrame(rows, schema=CORPUS_SCHEMA)


def synthetic_films(n: int, seed: int = 0) -> pl.DataFrame:
    """n made-up films (title, year, genres, plot of random words) with their content hashes."""
    rng = np.random.default_rng(seed)
    words = np.array("love war ship city night detective robot dragon family heist river king storm secret".split())
    genres = ["Drama", "Comedy", "Action", "Horror", "Romance", "Science Fiction", "Thriller"]
    frame = pl.DataFrame(
        {
            "movie_id": [f"syn:{i}" for i in range(n)],
            "title": [f"Synthetic Film {i}" for i in range(n)],
            "year": rng.integers(1920, 2025, n).astype(np.int32),
            "genres": [[genres[g]] for g in rng.integers(0, len(genres), n)],
            "directors": [["A. Director"]] * n,
            "cast": [["An Actor", "Another Actor"]] * n,
            "plot": [" ".join(rng.choice(words, 60)) for _ in range(n)],
        }
    )
    frame = frame.with_columns(
        pl.lit(None, pl.Int32).alias("runtime_minutes"), pl.lit([], pl.List(pl.String)).alias("aliases"),
        pl.lit(None, pl.Float32).alias("imdb_rating"), pl.lit(None, pl.Int64).alias("imdb_votes"),
        pl.lit(["synthetic"], pl.List(pl.String)).alias("sources"),
    )
    frame = frame.with_columns(pl.Series("content_hash", [content_hash(r) for r in frame.iter_rows(named=True)]))
    return frame.select(list(CORPUS_SCHEMA)).cast(CORPUS_SCHEMA)


def clustered_unit_vectors(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (how real embeddings bunch by genre/topic)."""
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        assign = rng.integers(0, clusters, stop - start)
        out[start:stop] = centres[assign] + 0.6 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


class SyntheticEmbedder:
    """Stand-in for the bulk of (b) only: random clustered unit vectors under the real model's name,
    so the table looks built by that model and a later real run reuses them."""

    def __init__(self, model_name: str, dimension: int, seed: int = 1) -> None:
        self.model_name, self.dimension = model_name, dimension
        self.rng = np.random.default_rng(seed)

    def encode(self, texts) -> np.ndarray:
        return clustered_unit_vectors(len(texts), self.dimension, 64, self.rng)


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# --- (a) ----------------------------------------------------------------------------------------


def bench_throughput(n_texts: int, batch_size: int, rounds: int = 3) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    films = wikipedia_films(n_texts)
    texts = [movie_text(row) for row in films.iter_rows(named=True)]
    embedder = Embedder(batch_size=batch_size)  # the asset's settings: precision auto
    bare = SentenceTransformer(resolve_model(embedder.model_name), device=embedder.model.device.type)
    embedder.encode(texts[:batch_size])  # warm-up
    bare.encode(texts[:batch_size], batch_size=batch_size)

    def asset_path():
        with tempfile.TemporaryDirectory() as tmp:
            stats = sync_vectors(films, VectorStore(tmp), embedder, progress=False)
            assert stats.embedded == len(texts)

    def bare_fp32():
        bare.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    def bare_same_precision():
        device = bare.device.type
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=embedder.uses_bf16):
            bare.encode(texts, batch_size=batch_size, normalize_embeddings=True)

    # interleaved rounds, best of each: on a shared machine the load drifts between runs
    timings: dict[str, list[float]] = {"asset": [], "bare": [], "bare_same": [], "encode_only": []}
    for _ in range(rounds):
        for name, fn in [("asset", asset_path), ("bare", bare_fp32), ("bare_same", bare_same_precision),
                         ("encode_only", lambda: embedder.encode(texts))]:
            timings[name].append(best_of(1, fn))
    t_asset, t_bare, t_bare_same, t_encode = (min(timings[k]) for k in ("asset", "bare", "bare_same", "encode_only"))
    rate = len(texts) / t_asset
    print(f"(a) {len(texts)} real movie texts (mean {np.mean([len(t) for t in texts]):.0f} chars), batch {batch_size}, "
          f"{torch.get_num_threads()} threads, bf16 autocast={embedder.uses_bf16}")
    print(f"    asset code path (sync_vectors -> LanceDB): {rate:7.1f} texts/s  ({t_asset:.1f} s)")
    print(f"    bare SentenceTransformer.encode, fp32:      {len(texts) / t_bare:7.1f} texts/s  "
          f"-> ratio {t_bare / t_asset:.2f} (goal >= 0.9)")
    print(f"    bare encode under the same bf16 autocast:   {len(texts) / t_bare_same:7.1f} texts/s  "
          f"-> ratio {t_bare_same / t_asset:.2f} (overhead of the path alone)")
    print(f"    Embedder.encode alone (no LanceDB):         {len(texts) / t_encode:7.1f} texts/s  "
          f"(best of {rounds} interleaved rounds each)")
    fp32 = Embedder(precision="fp32").encode(texts[:128])
    bf16 = Embedder(precision="bf16").encode(texts[:128])
    cosine = (fp32 * bf16).sum(axis=1)
    print(f"    bf16 vs fp32 vectors on 128 texts: mean cosine {cosine.mean():.5f}, min {cosine.min():.5f}")
    return rate


# --- (b) ----------------------------------------------------------------------------------------


def bench_refresh(table_rows: int, batch_size: int) -> None:
    new_rows = table_rows // 100
    embedder = Embedder(batch_size=batch_size)
    bulk = synthetic_films(table_rows)
    new = wikipedia_films(new_rows)
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(tmp)
        stand_in = SyntheticEmbedder(embedder.model_name, embedder.dimension)
        full = sync_vectors(bulk, store, stand_in, progress=False)
        grown = pl.concat([bulk, new])
        unchanged = sync_vectors(bulk, store, embedder, progress=False)
        refresh = sync_vectors(grown, store, embedder, progress=False)
    rate = refresh.texts_per_second
    full_estimate = full.seconds - full.embed_seconds + table_rows / rate
    print(f"(b) {table_rows:,}-film table, +{new_rows:,} new films (1%)")
    print(f"    full build: code path measured with synthetic vectors for the bulk: {full.seconds - full.embed_seconds:.1f} s "
          f"(movie text, hashing, {table_rows // 4096 + 1} commits, index {full.index});")
    print(f"      + real embedding of {table_rows:,} texts extrapolated at the refresh's measured {rate:.1f} texts/s: "
          f"{table_rows / rate:.0f} s -> full build ~{full_estimate:.0f} s")
    print(f"    unchanged rerun: embedded {unchanged.embedded}, reused {unchanged.reused:,}, {unchanged.seconds:.1f} s")
    print(f"    refresh (real, measured end to end): embedded {refresh.embedded:,} real films, reused {refresh.reused:,}, "
          f"deleted {refresh.deleted}, {refresh.seconds:.1f} s (index {refresh.index})")
    print(f"    refresh / full build = {refresh.seconds / full_estimate:.1%} (goal <= 5%)")


# --- (c) ----------------------------------------------------------------------------------------


def _table_of(store: VectorStore, vectors: np.ndarray, years: np.ndarray) -> None:
    import pyarrow as pa

    n, dim = vectors.shape
    schema = table_schema(dim)
    store.create(dim)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        rows = {f.name: pa.nulls(stop - start, f.type) for f in schema}
        rows.update(
            movie_id=pa.array([f"m{i}" for i in range(start, stop)]),
            year=pa.array(years[start:stop], pa.int32()),
            title=pa.array([f"Film {i}" for i in range(start, stop)]),
            vector=pa.FixedSizeListArray.from_arrays(pa.array(vectors[start:stop].reshape(-1)), dim),
        )
        store.table.add(pa.table(rows, schema=schema))


def _latency_recall(store, queries, truth, k=10, **search) -> tuple[float, float, float]:
    for q in queries[:50]:
        store.search(q, k=k, **search)  # warm-up (index and file caches)
    times, recalls = [], []
    for q, true_ids in zip(queries, truth):
        start = time.perf_counter()
        hits = store.search(q, k=k, **search)
        times.append((time.perf_counter() - start) * 1000)
        recalls.append(len({h["movie_id"] for h in hits} & true_ids) / k)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], float(np.mean(recalls))


def bench_ann(rows: int, dim: int, n_queries: int, sweep: bool, cache: str | None = None) -> None:
    rng = np.random.default_rng(7)
    vectors = clustered_unit_vectors(rows + n_queries, dim, 2_000, rng)
    queries, vectors = vectors[:n_queries], vectors[n_queries:]  # held-out queries
    years = rng.integers(1920, 2025, rows).astype(np.int32)
    scores = vectors @ queries.T  # exact cosine (unit vectors)
    top = np.argpartition(-scores, 10, axis=0)[:10].T
    truth = [{f"m{i}" for i in row} for row in top]
    del scores
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore(cache or tmp)
        build = None
        if not (cache and store.exists() and store.table.count_rows() == rows):
            _table_of(store, vectors, years)
            start = time.perf_counter()
            store.optimise()
            build = time.perf_counter() - start
        index = store.index_name()
        print(f"(c) {rows:,} x {dim}-d clustered synthetic unit vectors, {n_queries} held-out queries, top-10")
        print(f"    index {index} (cosine), " + (f"built in {build:.0f} s" if build else f"reused from {cache}"))
        settings = f"nprobes {NPROBES}, ef {HNSW_EF}, refine_factor {REFINE_FACTOR}"
        p50, p95, recall = _latency_recall(store, queries, truth, columns=())
        print(f"    ANN ids + scores ({settings}): p50 {p50:.1f} ms, p95 {p95:.1f} ms, recall@10 {recall:.3f} "
              f"(goal p50 <= 5 ms, recall >= 0.95)")
        p50m, p95m, _ = _latency_recall(store, queries, truth)
        print(f"    the same with the 6 prompt-metadata columns: p50 {p50m:.1f} ms, p95 {p95m:.1f} ms")
        p50f, p95f, recallf = _latency_recall(store, queries[:20], truth[:20], exact=True, columns=())
        print(f"    exact flat scan in LanceDB: p50 {p50f:.0f} ms, p95 {p95f:.0f} ms, recall {recallf:.3f} (20 queries)")
        if sweep:
            for nprobes, ef, refine in [(4, 32, None), (8, 64, None), (12, 64, None), (4, 48, 3), (8, 48, 3),
                                        (6, 64, 5), (NPROBES, HNSW_EF, REFINE_FACTOR)]:
                p50s, p95s, rs = _latency_recall(store, queries, truth, columns=(), nprobes=nprobes, ef=ef,
                                                 refine_factor=refine)
                print(f"    sweep nprobes {nprobes:>2} ef {ef:>3} refine {refine or '-':>2}: p50 {p50s:.1f} ms, "
                      f"p95 {p95s:.1f} ms, recall {rs:.3f}")
    with tempfile.TemporaryDirectory() as tmp:  # why exact search below INDEX_MIN_ROWS
        small = VectorStore(tmp)
        _table_of(small, vectors[:INDEX_MIN_ROWS], years[:INDEX_MIN_ROWS])
        small_truth = [{f"m{i}" for i in np.argsort(-(vectors[:INDEX_MIN_ROWS] @ q))[:10]} for q in queries[:20]]
        p50s, p95s, rs = _latency_recall(small, queries[:20], small_truth, columns=())
        print(f"    below the index threshold ({INDEX_MIN_ROWS:,} rows, exact): p50 {p50s:.0f} ms, p95 {p95s:.0f} ms, "
              f"recall {rs:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="abc", help="which parts to run (a, b, c)")
    parser.add_argument("--texts", type=int, default=512, help="(a) real texts to embed")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--table-rows", type=int, default=100_000, help="(b) films in the table before the refresh")
    parser.add_argument("--ann-rows", type=int, default=337_000, help="(c) vectors in the table")
    parser.add_argument("--queries", type=int, default=200, help="(c) queries timed")
    parser.add_argument("--sweep", action="store_true", help="(c) also try other nprobes/ef/refine settings")
    parser.add_argument("--ann-cache", default=None,
                        help="(c) keep the 337k table (and its index) in this folder and reuse it on later runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, cuda={torch.cuda.is_available()}")
    if "a" in args.only:
        bench_throughput(args.texts, args.batch_size)
    if "b" in args.only:
        bench_refresh(args.table_rows, args.batch_size)
    if "c" in args.only:
        bench_ann(args.ann_rows, 384, args.queries, args.sweep, args.ann_cache)


if __name__ == "__main__":
    main()
