"""Evaluation stage: NDCG/Recall per dataset x system, with CIs, per-turn results and a chart."""

import dagster as dg

from rar_pipeline.resources import GeneratorResource
from rar_pipeline.settings import get_settings

GROUP = "evaluation"
OWNERS = ["team:rar"]
REPORT = dg.AssetKey("evaluation_report")


def _retrievers(home):
    from training.layout import SYSTEMS, checkpoint_path
    from training.retriever import Retriever

    return {
        system: Retriever.from_checkpoint(checkpoint_path(home, system))
        for system in reversed(SYSTEMS) if checkpoint_path(home, system).is_file()
    }


@dg.asset(
    group_name=GROUP, kinds={"pytorch", "parquet"}, owners=OWNERS,
    deps=["aligned_retriever", "lrurec_sft", "lrurec_pretrained", "conversation_turns", "user_sequences", "movie_corpus",
          "movie_vectors"],
)
def evaluation_report(context: dg.AssetExecutionContext, generator: GeneratorResource) -> dg.MaterializeResult:
    """NDCG@{1,5,10,20}, Recall@{1,5,10,20} and MRR with bootstrap 95% CIs for every system (popularity,
    each LRURec checkpoint alone and re-ranked by the generator) on every evaluation set (test splits,
    INSPIRED dev, MovieLens next-item), under the zero-shot CRS protocol (targets mentioned earlier and
    targets outside the corpus excluded). Per-turn results: the evaluation_turns table."""
    import base64

    import polars as pl

    from corpus_build.atomic import write_bytes_atomic, write_parquet_atomic
    from training.layout import evaluation_chart_path, rounds_dir
    from training.report import (
        HEADLINE, build_report, evaluate_systems, evaluation_sets, headline, popularity_counts, rounds_curve,
    )
    from training.turn_pools import CorpusLookup

    s = get_settings()
    turns = pl.read_parquet(s.table_path("conversation_turns"))
    sequences_path = s.table_path("user_sequences")
    sequences = pl.read_parquet(sequences_path) if sequences_path.is_file() else None
    lookup = CorpusLookup.from_parquet(s.table_path("movie_corpus"))
    sets = evaluation_sets(turns, sequences, s.evaluation_max_turns, s.seed)
    retrievers = _retrievers(s.home)
    if not retrievers:
        raise dg.Failure("no retriever checkpoint found: materialise lrurec_pretrained first")
    gen = generator.make_generator()
    try:
        per_turn = evaluate_systems(
            sets, retrievers, gen, lookup, popularity_counts(turns, sequences), set(lookup.corpus["movie_id"].to_list()),
            candidates=s.alignment_set_size, log=context.log.info,
        )
    finally:
        gen.close()
    turns_path = write_parquet_atomic(per_turn, s.table_path("evaluation_turns"))
    summary, markdown, png = build_report(per_turn, rounds_curve(rounds_dir(s.home)), n_boot=1000, seed=s.seed)
    chart_path = write_bytes_atomic(png, evaluation_chart_path(s.home))
    top = headline(summary, [e.name for e in sets if e.has_dialogue])
    image = f"![NDCG@10 by system](data:image/png;base64,{base64.b64encode(png).decode()})"
    metrics = {
        f"{row['dataset']}/{row['system']}/{metric}": float(row[metric])
        for row in summary.iter_rows(named=True) for metric in (HEADLINE, "recall@10")
    }
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(f"{markdown}\n\n{image}"),
            "dagster/row_count": per_turn.height,
            "evaluation_turns": dg.MetadataValue.path(str(turns_path)),
            "chart": dg.MetadataValue.path(str(chart_path)),
            "headline_system": f"{top['dataset']} {top['system']}",
            "headline/ndcg@10": float(top["value"]),
            "headline/ndcg@10_lo": float(top["lo"]),
            "headline/ndcg@10_hi": float(top["hi"]),
            "generator_backend": gen.name,
            **metrics,
        }
    )


@dg.asset_check(asset=REPORT, description="Warns when the headline NDCG@10 drops below the previous "
                "materialisation's 95% confidence interval.")
def headline_within_previous_ci(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    records = context.instance.fetch_materializations(REPORT, limit=2).records
    metas = [r.asset_materialization.metadata for r in records if r.asset_materialization]
    if not metas or "headline/ndcg@10" not in metas[0]:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no headline yet"})
    current = metas[0]["headline/ndcg@10"].value
    if len(metas) < 2 or "headline/ndcg@10_lo" not in metas[1]:
        return dg.AssetCheckResult(passed=True, metadata={"headline": current, "note": "first report"})
    previous_lo = metas[1]["headline/ndcg@10_lo"].value
    return dg.AssetCheckResult(
        passed=current >= previous_lo,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"headline": current, "previous": metas[1]["headline/ndcg@10"].value, "previous_ci_low": previous_lo},
    )
