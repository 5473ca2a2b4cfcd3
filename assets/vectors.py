"""Vectors stage: ``movie_vectors``, one embedding per film of ``movie_corpus`` in LanceDB, and its checks."""

import dagster as dg

from assets.keys import CORPUS, OWNERS, VECTORS
from assets.metadata import readable, table_schema
from corpus_build.schema import VECTORS_COLUMN_DESCRIPTIONS
from rar_pipeline.execution import gpu_step_tags
from rar_pipeline.settings import get_settings


@dg.op(ins={"corpus": dg.In(dg.Nothing)}, out=dg.DynamicOut(dict))
def plan_vector_shards(context: dg.OpExecutionContext):
    """Which films to embed (new or changed content_hash, another model), delete and repair, split into
    RAR_EMBEDDING_SHARDS shards: one dynamic output per shard."""
    from corpus_build.catalog import file_fingerprint
    from corpus_build.vector_shards import plan_shards
    from corpus_build.vector_store import read_corpus

    settings = get_settings()
    corpus_path = settings.table_path("movie_corpus")
    if not corpus_path.exists():
        raise dg.Failure(f"movie_corpus not found at {corpus_path}: materialise movie_corpus first")
    fingerprint = file_fingerprint(corpus_path)  # before reading: a rewrite during the run shows as a change
    store = settings.vector_store()
    plan = plan_shards(read_corpus(corpus_path), store, store.embedder, settings.embedding_shards,
                       settings.vector_work_dir)
    context.log.info(f"movie_vectors: {plan.to_embed} of {plan.corpus_rows} films to embed in {plan.shards} "
                     f"shard(s) {plan.shard_rows}, {len(plan.gone)} to delete ({plan.name})")
    for index in range(plan.shards):
        yield dg.DynamicOutput({"plan": plan.name, "shard": index, "corpus_fingerprint": fingerprint},
                               mapping_key=f"shard_{index}")


@dg.op(tags=gpu_step_tags())
def embed_vector_shard(context: dg.OpExecutionContext, shard: dict) -> dict:
    """Embed one shard of the plan (a GPU step under the k8s executor); finished parts of an earlier
    attempt are kept."""
    from corpus_build.vector_shards import embed_shard

    settings = get_settings()
    result = embed_shard(settings.vector_work_dir, shard["plan"], shard["shard"], settings.embedder())
    context.log.info(f"shard {result.index}: {result.embedded} of {result.rows} films embedded in {result.seconds:.1f} s")
    return shard


@dg.op(out=dg.Out(dg.Nothing))
def commit_vector_shards(context: dg.OpExecutionContext, shards: list[dict]) -> None:
    """Every shard into the LanceDB table, films gone from the corpus deleted, the ANN index kept right."""
    from corpus_build.storage import describe
    from corpus_build.vector_shards import commit_shards

    settings = get_settings()
    store = settings.vector_store()
    stats = commit_shards(settings.vector_work_dir, shards[0]["plan"], store, store.embedder)
    context.log.info(f"movie_vectors: {stats.embedded} embedded, {stats.reused} reused, {stats.deleted} deleted")
    context.add_output_metadata(readable({
        "dagster/row_count": stats.rows,
        "dagster/column_schema": table_schema({f.name: f.type for f in store.table.schema}, VECTORS_COLUMN_DESCRIPTIONS),
        "embedded": stats.embedded,
        "reused": stats.reused,
        "deleted": stats.deleted,
        "repaired_duplicates": stats.repaired,
        "shards": len(shards),
        "seconds": stats.seconds,
        "texts_per_second": stats.texts_per_second,
        "dimension": stats.dimension,
        "index": stats.index,
        "model": settings.embedding_model,
        "uri": describe(settings.vector_db_uri),
        "table": "movie_vectors",
        "corpus_fingerprint": shards[0]["corpus_fingerprint"],
    }))


@dg.graph_asset(
    key=VECTORS,
    ins={"corpus": dg.AssetIn(CORPUS, dagster_type=dg.Nothing)},
    group_name="corpus",
    kinds={"lancedb", "python"},
    owners=OWNERS,
)
def movie_vectors(corpus):
    """One normalised embedding per film of movie_corpus in the LanceDB table `movie_vectors`
    (movie_id, vector, content_hash, prompt metadata), with an IVF_HNSW_SQ index once the table is large.
    Incremental: only films whose content_hash is new or changed are embedded, in RAR_EMBEDDING_SHARDS
    shards (one step each, a GPU pod under the k8s executor), then committed in one step; films gone
    from the corpus are deleted. A failed shard is embedded again alone (re-execute the run from failure)."""
    shards = plan_vector_shards(corpus).map(embed_vector_shard)
    return commit_vector_shards(shards.collect())


def _store_and_corpus_ids():
    settings = get_settings()
    corpus_ids = settings.read_table("movie_corpus", columns=["movie_id"])
    return settings.vector_store(), corpus_ids


@dg.asset_check(asset=VECTORS, blocking=True, description="One vector per corpus film: row counts match.")
def vectors_row_count_matches_corpus() -> dg.AssetCheckResult:
    store, corpus_ids = _store_and_corpus_ids()
    rows = store.count()
    return dg.AssetCheckResult(
        passed=rows == corpus_ids.height, metadata={"vectors": rows, "corpus": corpus_ids.height}
    )


@dg.asset_check(asset=VECTORS, blocking=True, description="Every movie_id in the table is a corpus film.")
def vectors_ids_in_corpus() -> dg.AssetCheckResult:
    store, corpus_ids = _store_and_corpus_ids()
    stored = store.read_columns(["movie_id"])
    unknown = stored.join(corpus_ids, on="movie_id", how="anti")["movie_id"].to_list()
    return dg.AssetCheckResult(
        passed=not unknown, metadata={"not_in_corpus": len(unknown), "examples": unknown[:10]}
    )


@dg.asset_check(asset=VECTORS, blocking=True, description="Vector dimension equals the embedding model's.")
def vectors_dimension() -> dg.AssetCheckResult:
    settings = get_settings()
    store, _ = _store_and_corpus_ids()
    expected = settings.embedder().dimension
    return dg.AssetCheckResult(
        passed=store.dimension() == expected,
        metadata={"table_dimension": store.dimension(), "model_dimension": expected, "model": settings.embedding_model},
    )


@dg.asset_check(asset=VECTORS, blocking=True, description="No vector has NaN/inf values or a zero norm.")
def vectors_finite_nonzero() -> dg.AssetCheckResult:
    from corpus_build.vector_store import bad_vectors

    bad = bad_vectors(get_settings().vector_store())
    return dg.AssetCheckResult(passed=not bad, metadata={"bad_vectors": len(bad), "examples": bad[:10]})
