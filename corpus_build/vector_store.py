"""The ``movie_vectors`` table: one embedding per film in embedded LanceDB, kept in step with the corpus.

- :class:`VectorStore` wraps one LanceDB table (local folder or object-store URI): upsert by
  movie_id, delete, ANN index once the table is large, search with filters, aligned lookups.
- :func:`sync_vectors` makes the table match a corpus frame incrementally: only rows whose
  ``content_hash`` (or model) changed are embedded; films gone from the corpus are deleted.
  Every committed chunk carries its rows' ``content_hash``, so an interrupted run resumes where it
  stopped, and no row ever holds a vector that does not match its stored hash.
- Writers take turns: a sync holds a file lock beside a local table from its plan to its last commit
  (two concurrent syncs that both planned against the same state would insert every film twice).
  Object stores have no such lock; there, and for tables damaged before, a sync first removes every
  film stored more than once and embeds it again, so a re-run repairs duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from corpus_build.movie_text import content_hash, movie_text

TABLE_NAME = "movie_vectors"
# Corpus columns the table keeps: what a prompt needs to describe a film.
META_COLUMNS = ("title", "year", "genres", "directors", "cast", "plot")
# Below this many rows search is exact (a flat scan is fast enough and has recall 1.0).
INDEX_MIN_ROWS = 50_000
# ANN index and search settings chosen by benchmarks/vectors.py --sweep (337k x 384, clustered): an
# IVF_HNSW_SQ index (HNSW graphs of 8-bit scalar-quantised vectors inside ~4k-row IVF partitions)
# reaches recall@10 0.954 without re-ranking; re-ranking 3 x k candidates on the full vectors lifts it
# to 0.982 (p50 3.5 ms on 2 cores). IVF_PQ needed refine_factor 20 (200 full-vector reads) for recall
# >= 0.95 and was ~2x slower per query.
ROWS_PER_PARTITION = 4_096
NPROBES = 6
HNSW_EF = 48
REFINE_FACTOR = 3
_ID_CHUNK = 1_000  # ids per "movie_id IN (...)" filter


def table_schema(dimension: int):
    import pyarrow as pa

    names = pa.list_(pa.string())
    return pa.schema(
        [
            ("movie_id", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
            ("content_hash", pa.string()),
            ("model", pa.string()),
            ("title", pa.string()),
            ("year", pa.int32()),
            ("genres", names),
            ("directors", names),
            ("cast", names),
            ("plot", pa.string()),
        ]
    )


def _sql_in(ids: Sequence[str]) -> str:
    quoted = ",".join("'" + str(i).replace("'", "''") + "'" for i in ids)
    return f"movie_id IN ({quoted})"


def index_partitions(rows: int) -> int:
    """IVF partitions: the power of two nearest rows / 4,096 (64 at 337k, as measured), at least 2."""
    return int(2 ** max(round(math.log2(max(rows, 1) / ROWS_PER_PARTITION)), 1))


class VectorStore:
    """One LanceDB table of movie vectors and the metadata a prompt needs."""

    def __init__(self, uri: str, table_name: str = TABLE_NAME, embedder=None) -> None:
        import lancedb

        from corpus_build.storage import object_store_options

        self.uri = str(uri)
        self.table_name = table_name
        self.embedder = embedder  # turns text queries into vectors (an Embedder; loads lazily)
        # An object-store URI's credentials and endpoint (corpus_build.storage); none for a local folder.
        self._connect = {"storage_options": options} if (options := object_store_options(self.uri)) else {}
        self.db = lancedb.connect(self.uri, **self._connect)
        self._table = None  # the open table handle (sees this handle's own writes)
        self._index: str | None | bool = False  # cached index name; False: not looked up yet
        self._async_table = None  # read handle for search (see _run_query); lazily opened
        self._writes = 0  # writes through this store; the async handle re-reads the table after one
        self._async_seen = 0
        self._loops = threading.local()  # one event loop per calling thread

    # --- table life cycle -------------------------------------------------------------------
    def write_lock(self):
        """A lock that serialises this table's writers across processes: a file lock beside a local
        table, nothing for an object-store URI (see :func:`sync_vectors`)."""
        if "://" in self.uri and not self.uri.startswith("file://"):
            return contextlib.nullcontext()
        from filelock import FileLock

        folder = Path(self.uri.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(folder / f".{self.table_name}.lock")

    def reopen(self) -> None:
        """Forget the open handle: the next access sees what other processes committed meanwhile."""
        self._table = None
        self._index = False
        self._writes += 1

    def exists(self) -> bool:
        return self._table is not None or self.table_name in self.db.list_tables().tables

    @property
    def table(self):
        if self._table is None:
            if not self.exists():
                raise FileNotFoundError(
                    f"no LanceDB table {self.table_name!r} at {self.uri}: materialise movie_vectors first"
                )
            self._table = self.db.open_table(self.table_name)
        return self._table

    def create(self, dimension: int, replace: bool = False):
        mode = "overwrite" if replace else "create"
        self._table = self.db.create_table(self.table_name, schema=table_schema(dimension), mode=mode)
        self._index = None
        self._writes += 1
        return self._table

    def dimension(self) -> int | None:
        return self.table.schema.field("vector").type.list_size if self.exists() else None

    def count(self) -> int:
        return self.table.count_rows() if self.exists() else 0

    # --- writes -----------------------------------------------------------------------------
    def upsert(self, rows) -> None:
        """Insert or replace rows (a pyarrow Table in :func:`table_schema`) by movie_id: one commit."""
        if rows.num_rows:
            self.table.merge_insert("movie_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
            self._writes += 1

    def delete(self, movie_ids: Sequence[str]) -> int:
        deleted = 0
        for start in range(0, len(movie_ids), _ID_CHUNK):
            deleted += self.table.delete(_sql_in(movie_ids[start : start + _ID_CHUNK])).num_deleted_rows
        self._writes += 1
        return deleted

    def index_name(self) -> str | None:
        if self._index is False:
            names = [ix.name for ix in self.table.list_indices() if "vector" in ix.columns]
            self._index = names[0] if names else None
        return self._index

    def optimise(self, min_rows: int = INDEX_MIN_ROWS) -> str:
        """Compact fragments and keep the ANN index right for the table's size; returns the index name.

        Below ``min_rows`` there is no index (exact search). Above, IVF_HNSW_SQ with partitions ~
        rows / 4,096; it is retrained when the table size calls for another partition count (or the
        table holds an index of another type), else new rows are added to it by ``optimize()``.
        """
        table = self.table
        rows = table.count_rows()
        table.optimize()
        self._writes += 1
        self._index = False  # look it up afresh
        current = self.index_name()
        if rows < min_rows:
            if current:
                table.drop_index(current)
                self._index = None
                self._writes += 1
            return "none (exact search)"
        partitions = index_partitions(rows)
        wanted = f"vector_ivf_hnsw_sq_{partitions}"  # the name says the type and partitioning
        if current != wanted:
            from lancedb.index import IvfHnswSq

            if current:
                table.drop_index(current)
            table.create_index(
                "vector",  # the column (lancedb's unified index API)
                config=IvfHnswSq(distance_type="cosine", num_partitions=partitions),
                name=wanted,
            )
            self._index = wanted
            self._writes += 1
        return wanted

    # --- reads ------------------------------------------------------------------------------
    def read_columns(self, columns: Sequence[str], where: str | None = None) -> pl.DataFrame:
        query = self.table.search().select(list(columns)).limit(None)
        if where:
            query = query.where(where)
        return pl.from_arrow(query.to_arrow())

    def content_hashes(self) -> pl.DataFrame:
        """movie_id, content_hash, model of every stored row (no vectors read)."""
        if not self.exists():
            return pl.DataFrame(schema={"movie_id": pl.String, "content_hash": pl.String, "model": pl.String})
        return self.read_columns(["movie_id", "content_hash", "model"])

    def _rows_for(self, movie_ids: Sequence[str], columns: Sequence[str]) -> pl.DataFrame:
        """Rows for the given ids (a full column scan when the list is long)."""
        if len(movie_ids) > 20 * _ID_CHUNK:
            frame = self.read_columns(["movie_id", *columns])
            return frame.join(pl.DataFrame({"movie_id": list(movie_ids)}).unique(), on="movie_id", how="semi")
        parts = [
            self.read_columns(["movie_id", *columns], where=_sql_in(movie_ids[start : start + _ID_CHUNK]))
            for start in range(0, len(movie_ids), _ID_CHUNK)
        ]
        return pl.concat(parts) if parts else self.read_columns(["movie_id", *columns], where="false")

    def _aligned(self, movie_ids: Sequence[str], columns: Sequence[str]) -> pl.DataFrame:
        movie_ids = list(movie_ids)
        order = pl.DataFrame({"movie_id": movie_ids}, schema={"movie_id": pl.String})
        rows = self._rows_for(movie_ids, columns).with_columns(pl.lit(True).alias("_found"))
        found = order.join(rows, on="movie_id", how="left", maintain_order="left")
        missing = found.filter(pl.col("_found").is_null())["movie_id"].to_list()
        if missing:
            raise KeyError(f"{len(missing)} movie_id(s) not in {self.table_name}: {missing[:5]}")
        return found.drop("_found")

    def load_vectors(self, movie_ids: Sequence[str]) -> np.ndarray:
        """``(len(movie_ids), dim)`` float32 vectors in the order of ``movie_ids`` (KeyError if any is absent)."""
        found = self._aligned(movie_ids, ["vector"])
        dim = self.dimension()
        if found.height == 0:
            return np.zeros((0, dim), dtype=np.float32)
        return found["vector"].to_numpy().astype(np.float32, copy=False).reshape(-1, dim)

    def get_movies(self, movie_ids: Sequence[str]) -> list[dict]:
        """Prompt metadata (movie_id, title, year, genres, directors, cast, plot) in the given order."""
        return self._aligned(movie_ids, list(META_COLUMNS)).to_dicts()

    def search(
        self,
        query: str | np.ndarray,
        k: int = 10,
        year_min: int | None = None,
        year_max: int | None = None,
        exclude_ids: Sequence[str] = (),
        exact: bool | None = None,
        columns: Sequence[str] = META_COLUMNS,
        nprobes: int = NPROBES,
        ef: int = HNSW_EF,
        refine_factor: int | None = REFINE_FACTOR,
    ) -> list[dict]:
        """Top-``k`` films by cosine similarity to ``query`` (a text, or a normalised vector), best first.

        Each hit is ``{"movie_id", "score", *columns}``; ``columns=()`` returns ids and scores only
        (the metadata columns cost ~1-2 ms more per query). Filters apply before the search
        (prefilter), so ``k`` results come back whenever ``k`` films pass them. ``exact=None`` uses
        the ANN index when the table has one.
        """
        if isinstance(query, str):
            if self.embedder is None:
                raise ValueError("a text query needs an embedder: VectorStore(uri, embedder=Embedder(...))")
            query = self.embedder.encode([query])[0]
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        _ = self.table  # a missing table raises its "materialise movie_vectors first" error here
        where = _filters(year_min, year_max, exclude_ids)
        use_index = not exact and (exact is not None or self.index_name() is not None)

        async def top_k(table):
            builder = table.query().nearest_to(query).distance_type("cosine").limit(k)
            builder = builder.select(["movie_id", *columns, "_distance"])
            if where:
                builder = builder.where(where)  # a prefilter: applied before the nearest-neighbour search
            if not use_index:
                builder = builder.bypass_vector_index()
            else:
                builder = builder.nprobes(nprobes).ef(ef)
                if refine_factor:
                    builder = builder.refine_factor(refine_factor)
            return await builder.to_list()

        hits = self._run_query(top_k)
        for hit in hits:
            hit["score"] = 1.0 - float(hit.pop("_distance"))
        return hits

    def _run_query(self, query_fn):
        """``await query_fn(async_table)`` on an event loop of the calling thread.

        Through lancedb's sync API every query is handed to its background event-loop thread and
        waited for; on two busy cores that hop costs ~1 ms of a ~5 ms ANN query (benchmarks/vectors.py),
        so search awaits the async API on a loop of its own. The async handle re-reads the table after
        a write through this store. Called from inside a running loop (a notebook), the query runs
        on a short-lived worker thread instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            loop = getattr(self._loops, "loop", None)
            if loop is None:
                loop = self._loops.loop = asyncio.new_event_loop()
            return loop.run_until_complete(self._query_latest(query_fn))
        with ThreadPoolExecutor(1) as worker:
            return worker.submit(asyncio.run, self._query_latest(query_fn)).result()

    async def _query_latest(self, query_fn):
        import lancedb

        if self._async_table is None:
            self._async_table = await (await lancedb.connect_async(self.uri, **self._connect)).open_table(self.table_name)
            self._async_seen = self._writes
        elif self._async_seen != self._writes:
            writes = self._writes
            await self._async_table.checkout_latest()
            self._async_seen = writes
        return await query_fn(self._async_table)


def bad_vectors(store: VectorStore, batch_rows: int = 16_384) -> list[str]:
    """movie_ids whose vector has a NaN/inf value or a (near-)zero norm; streams the table in batches."""
    bad: list[str] = []
    dim = store.dimension()
    query = store.table.search().select(["movie_id", "vector"]).limit(None)
    for batch in query.to_batches(batch_rows):
        column = batch.column("vector")
        vectors = np.full((batch.num_rows, dim), np.nan, dtype=np.float32)  # a null vector counts as bad
        valid = ~column.is_null().to_numpy(zero_copy_only=False)
        vectors[valid] = column.drop_null().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0.0), axis=1)
        ids = batch.column("movie_id").to_pylist()
        bad += [ids[i] for i in np.flatnonzero(~finite | (norms < 1e-6))]
    return bad


def _filters(year_min: int | None, year_max: int | None, exclude_ids: Sequence[str]) -> str:
    clauses = []
    if year_min is not None:
        clauses.append(f"year >= {int(year_min)}")
    if year_max is not None:
        clauses.append(f"year <= {int(year_max)}")
    if exclude_ids:
        clauses.append(f"NOT ({_sql_in(list(exclude_ids))})")
    return " AND ".join(clauses)


# --- incremental sync -----------------------------------------------------------------------


@dataclass
class SyncStats:
    rows: int  # rows in the table afterwards (= corpus rows)
    embedded: int  # rows whose vector was computed in this run
    reused: int  # rows whose stored vector was up to date
    deleted: int  # films gone from the corpus, removed from the table
    repaired: int  # films that were stored more than once (removed, then embedded again)
    seconds: float
    embed_seconds: float
    index: str
    dimension: int

    @property
    def texts_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0

    def as_metadata(self) -> dict:
        return {**asdict(self), "texts_per_second": self.texts_per_second}


CORPUS_COLUMNS = ("movie_id", *META_COLUMNS, "content_hash")


def read_corpus(path) -> pl.DataFrame:
    """The columns of ``movie_corpus`` that the vectors need, with missing hashes filled in."""
    from corpus_build.storage import read_parquet

    frame = read_parquet(path, columns=list(CORPUS_COLUMNS))
    return fill_content_hash(frame)


def fill_content_hash(frame: pl.DataFrame) -> pl.DataFrame:
    if frame["content_hash"].null_count() == 0:
        return frame
    hashes = [h or content_hash(row) for h, row in zip(frame["content_hash"], frame.iter_rows(named=True))]
    return frame.with_columns(pl.Series("content_hash", hashes, dtype=pl.String))


def plan_sync(corpus: pl.DataFrame, stored: pl.DataFrame, model: str) -> tuple[pl.DataFrame, list[str]]:
    """Rows to embed (new, changed text, or another model) and stored ids gone from the corpus."""
    duplicated = corpus.filter(pl.col("movie_id").is_duplicated())["movie_id"].unique().to_list()
    if duplicated:
        raise ValueError(f"movie_corpus has duplicate movie_id values: {duplicated[:5]}")
    stored = stored.rename({"content_hash": "stored_hash", "model": "stored_model"})
    joined = corpus.join(stored, on="movie_id", how="left", maintain_order="left")
    stale = (
        pl.col("stored_hash").is_null()
        | (pl.col("stored_hash") != pl.col("content_hash"))
        | (pl.col("stored_model") != model)
    )
    to_embed = joined.filter(stale).drop("stored_hash", "stored_model")
    gone = stored.join(corpus.select("movie_id"), on="movie_id", how="anti")["movie_id"].to_list()
    return to_embed, gone


def arrow_rows(chunk: pl.DataFrame, vectors: np.ndarray, model: str, dimension: int):
    import pyarrow as pa

    schema = table_schema(dimension)
    columns = {name: chunk[name].to_arrow() for name in CORPUS_COLUMNS}
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dimension)
    columns["model"] = pa.array([model] * chunk.height, pa.string())
    return pa.table({f.name: columns[f.name].cast(f.type) for f in schema}, schema=schema)


def sync_vectors(
    corpus: pl.DataFrame,
    store: VectorStore,
    embedder,
    commit_rows: int = 4096,
    index_min_rows: int = INDEX_MIN_ROWS,
    progress: bool = True,
    on_commit: Callable[[int], None] | None = None,
) -> SyncStats:
    """Make ``store`` hold exactly one up-to-date vector per corpus film, embedding only what changed.

    Rows are embedded and committed ``commit_rows`` at a time (one LanceDB version each), with
    their content_hash, so an interrupted run loses at most one chunk of work. Deletions come
    after all embedding. ``on_commit(rows_done)`` is called after each commit. The whole sync holds
    the store's write lock; films stored more than once are removed first and embedded again.
    """
    with store.write_lock():
        store.reopen()  # what a writer that held the lock before committed
        return _sync_locked(corpus, store, embedder, commit_rows, index_min_rows, progress, on_commit)


def _sync_locked(corpus, store, embedder, commit_rows, index_min_rows, progress, on_commit) -> SyncStats:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    corpus = fill_content_hash(corpus.select(CORPUS_COLUMNS))
    model = embedder.model_name
    if store.exists() and corpus.height and store.count() and model_changed(store, embedder):
        store.create(embedder.dimension, replace=True)  # another vector space: start over
    stored = store.content_hashes()
    repeated = stored.filter(pl.col("movie_id").is_duplicated())["movie_id"].unique().to_list()
    if repeated:  # left by an unlocked concurrent writer: drop every copy, embed once again below
        store.delete(repeated)
        stored = stored.filter(~pl.col("movie_id").is_in(repeated))
    to_embed, gone = plan_sync(corpus, stored, model)
    if not store.exists():
        store.create(embedder.dimension)
    dimension = store.dimension()
    embed_seconds, done = 0.0, 0
    with tqdm(total=to_embed.height, desc="embedding films", unit="film", disable=not progress) as bar:
        for chunk in to_embed.iter_slices(commit_rows):
            tick = time.perf_counter()
            vectors = embedder.encode([movie_text(row) for row in chunk.iter_rows(named=True)])
            embed_seconds += time.perf_counter() - tick
            store.upsert(arrow_rows(chunk, vectors, model, dimension))
            done += chunk.height
            bar.update(chunk.height)
            if on_commit:
                on_commit(done)
    deleted = store.delete(gone) if gone else 0
    index = store.optimise(min_rows=index_min_rows)
    return SyncStats(
        rows=store.count(),
        embedded=done,
        reused=corpus.height - to_embed.height,
        deleted=deleted,
        repaired=len(repeated),
        seconds=time.perf_counter() - started,
        embed_seconds=embed_seconds,
        index=index,
        dimension=dimension,
    )


def model_changed(store: VectorStore, embedder) -> bool:
    """True when the stored vectors come from another model with another dimension."""
    stored_dim = store.dimension()
    models = store.read_columns(["model"])["model"].unique().to_list()
    return models != [embedder.model_name] and stored_dim != embedder.dimension
