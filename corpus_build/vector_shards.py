"""``movie_vectors`` in shards: plan what to embed, embed each shard apart (its own process, pod or GPU),
then commit every shard to the LanceDB table in one step.

The same incremental contract as :func:`corpus_build.vector_store.sync_vectors` (only films whose
``content_hash`` or model changed are embedded, films gone from the corpus are deleted, films stored
twice are embedded again), split so that the embedding can run on several machines::

    <work>/<plan>/plan.json                  written last: the plan is complete
    <work>/<plan>/todo-<i>.parquet           the corpus rows shard i embeds
    <work>/<plan>/shard-<i>/part-<n>.parquet their vectors, in the table's schema, one part per chunk
    <work>/<plan>/shard-<i>/done.json        written last: shard i is complete

The plan is named by what it embeds (model, shard count, each film's id and hash), so planning again
against an unchanged table finds the same folder, and a shard that failed (or was killed) is embedded
again alone: its finished parts are kept, the other shards' work is reused. Every file is written
whole (``corpus_build.atomic``), so a reader never takes half a part or a missing shard for a finished
one. Nothing reaches the table before :func:`commit_shards`, which holds the store's write lock and
removes the plan's folder once the table holds every shard.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

import polars as pl

from corpus_build.atomic import atomic_path, write_json_atomic, write_parquet_atomic
from corpus_build.movie_text import movie_text
from corpus_build.storage import arrow_dataset, as_path, read_parquet, remove_tree
from corpus_build.vector_store import (
    CORPUS_COLUMNS,
    INDEX_MIN_ROWS,
    SyncStats,
    VectorStore,
    arrow_rows,
    fill_content_hash,
    model_changed,
    plan_sync,
)

PLAN_FILE, DONE_FILE = "plan.json", "done.json"


@dataclass(frozen=True)
class VectorPlan:
    """What one movie_vectors materialisation embeds, deletes and repairs."""

    name: str  # the plan's folder name: a hash of everything below
    model: str
    shards: int
    corpus_rows: int
    to_embed: int
    shard_rows: list[int]  # films each shard embeds
    gone: list[str]  # stored films no longer in the corpus
    repeated: list[str]  # films stored more than once: every copy is deleted, then embedded again
    replace: bool  # the stored vectors come from a model of another dimension: the table starts over

    @property
    def reused(self) -> int:
        return self.corpus_rows - self.to_embed


def plan_shards(corpus: pl.DataFrame, store: VectorStore, embedder, shards: int, work) -> VectorPlan:
    """Decide what to embed and split it into ``shards`` near-equal shards (by movie_id) under ``work``;
    an identical plan already written there is reused as it is."""
    corpus = fill_content_hash(corpus.select(CORPUS_COLUMNS))
    model = embedder.model_name
    replace = bool(store.exists() and corpus.height and store.count() and model_changed(store, embedder))
    stored = store.content_hashes() if store.exists() and not replace else store.content_hashes().clear()
    repeated = sorted(stored.filter(pl.col("movie_id").is_duplicated())["movie_id"].unique().to_list())
    stored = stored.filter(~pl.col("movie_id").is_in(repeated))
    to_embed, gone = plan_sync(corpus, stored, model)
    to_embed = to_embed.sort("movie_id")
    digest = hashlib.sha256(json.dumps(
        [model, shards, replace, repeated, sorted(gone), to_embed["movie_id"].to_list(),
         to_embed["content_hash"].to_list()]).encode()).hexdigest()[:16]
    folder = as_path(work) / f"plan-{digest}"
    bounds = [round(i * to_embed.height / shards) for i in range(shards + 1)]
    plan = VectorPlan(name=folder.name, model=model, shards=shards, corpus_rows=corpus.height,
                      to_embed=to_embed.height, shard_rows=[b - a for a, b in zip(bounds, bounds[1:])],
                      gone=sorted(gone), repeated=repeated, replace=replace)
    if not (folder / PLAN_FILE).is_file():
        for index in range(shards):
            write_parquet_atomic(to_embed.slice(bounds[index], plan.shard_rows[index]), _todo(folder, index))
        write_json_atomic(asdict(plan), folder / PLAN_FILE)
    return plan


def read_plan(work, name: str) -> VectorPlan:
    """The plan ``name`` written under ``work`` (FileNotFoundError: not planned, or already committed)."""
    return VectorPlan(**json.loads((as_path(work) / name / PLAN_FILE).read_text()))


@dataclass(frozen=True)
class ShardResult:
    index: int
    rows: int  # films of the shard
    embedded: int  # films embedded by this call (parts left by an earlier attempt are kept)
    seconds: float


def embed_shard(work, name: str, index: int, embedder, commit_rows: int = 4096) -> ShardResult:
    """Embed shard ``index`` of plan ``name``, ``commit_rows`` films per part; finished parts are kept, so a
    shard that failed resumes where it stopped. Ends by writing the shard's ``done.json``."""
    import pyarrow.parquet as pq

    folder = as_path(work) / name
    plan = read_plan(work, name)
    done = folder / f"shard-{index}" / DONE_FILE
    if done.is_file():
        return ShardResult(index, plan.shard_rows[index], 0, 0.0)
    todo = read_parquet(_todo(folder, index))
    if todo.height != plan.shard_rows[index]:
        raise ValueError(f"{_todo(folder, index)} holds {todo.height} films, the plan says {plan.shard_rows[index]}: "
                         "the plan's files were damaged; delete the folder and materialise again")
    started, embedded = time.perf_counter(), 0
    dimension = embedder.dimension if todo.height else 0
    for part_index, chunk in enumerate(todo.iter_slices(commit_rows)):
        part = _part(folder, index, part_index)
        if part.is_file():
            continue
        vectors = embedder.encode([movie_text(row) for row in chunk.iter_rows(named=True)])
        rows = arrow_rows(chunk, vectors, plan.model, dimension)
        with atomic_path(part) as tmp:
            pq.write_table(rows, tmp, compression="zstd")
        embedded += chunk.height
    seconds = time.perf_counter() - started
    write_json_atomic({"rows": todo.height, "embedded": embedded, "seconds": seconds}, done)
    return ShardResult(index, todo.height, embedded, seconds)


def commit_shards(work, name: str, store: VectorStore, embedder, index_min_rows: int = INDEX_MIN_ROWS) -> SyncStats:
    """Put every shard of plan ``name`` into the table (one LanceDB commit per part), delete the films gone
    from the corpus, keep the ANN index right, then remove the plan's folder. Holds the store's write lock;
    refuses while a shard is unfinished."""
    started = time.perf_counter()
    folder = as_path(work) / name
    plan = read_plan(work, name)
    missing = [i for i in range(plan.shards) if not (folder / f"shard-{i}" / DONE_FILE).is_file()]
    if missing:
        raise RuntimeError(f"shard(s) {missing} of {name} are not embedded yet: re-run them before the commit")
    embed_seconds = sum(json.loads((folder / f"shard-{i}" / DONE_FILE).read_text())["seconds"]
                        for i in range(plan.shards))
    with store.write_lock():
        store.reopen()
        if plan.replace:
            store.create(embedder.dimension, replace=True)  # another vector space: start over
        elif plan.repeated and store.exists():
            store.delete(plan.repeated)
        if not store.exists():
            store.create(embedder.dimension)
        for index in range(plan.shards):
            for part in sorted((folder / f"shard-{index}").glob("part-*.parquet"), key=lambda p: p.name):
                store.upsert(arrow_dataset(part).to_table())
        deleted = store.delete(plan.gone) if plan.gone else 0
        index_name = store.optimise(min_rows=index_min_rows)
        stats = SyncStats(rows=store.count(), embedded=plan.to_embed, reused=plan.reused, deleted=deleted,
                          repaired=len(plan.repeated), seconds=time.perf_counter() - started,
                          embed_seconds=embed_seconds, index=index_name, dimension=store.dimension())
    remove_tree(folder)
    return stats


def _todo(folder, index: int):
    return folder / f"todo-{index}.parquet"


def _part(folder, index: int, part_index: int):
    return folder / f"shard-{index}" / f"part-{part_index:05d}.parquet"
