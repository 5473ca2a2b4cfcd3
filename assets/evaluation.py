"""Evaluation stage: NDCG/Recall per dataset x system, with CIs, per-turn results and a chart."""

import dagster as dg

from assets.keys import ALIGNED, CORPUS, OWNERS, PRETRAINED, REPORT, SEQUENCES, SFT, TURNS, VECTORS
from assets.metadata import recent_metadata
from rar_pipeline.resources import GeneratorResource
from rar_pipeline.settings import get_settings

GROUP = "evaluation"


@dg.asset(
    key=REPORT, group_name=GROUP, kinds={"pytorch", "parquet"}, owners=OWNERS,
    deps=[ALIGNED, SFT, PRETRAINED, TURNS, SEQUENCES, CORPUS, VECTORS],
)
def evaluation_report(context: dg.AssetExecutionContext, generator: GeneratorResource) -> dg.MaterializeResult:
    """NDCG@{1,5,10,20}, Recall@{1,5,10,20} and MRR with bootstrap 95% CIs for every system (popularity,
    each LRURec checkpoint alone and re-ranked by the generator) on every evaluation set (test splits,
    INSPIRED dev, MovieLens next-item), under the zero-shot CRS protocol (targets mentioned earlier and
    targets outside the corpus excluded). Per-turn results: the evaluation_turns table."""
    import base64

    from training.evaluation_report import HEADLINE, NoRetrieverError, report_from_tables

    s = get_settings()
    try:
        report = report_from_tables(
            s.home, s.table_path("conversation_turns"), s.table_path("user_sequences"), s.table_path("movie_corpus"),
            generator.make_generator, s.table_path("evaluation_turns"), max_turns=s.evaluation_max_turns,
            seed=s.seed, candidates=s.alignment_set_size, log=context.log.info,
        )
    except NoRetrieverError as error:
        raise dg.Failure(str(error)) from error
    top = report.headline
    image = f"![NDCG@10 by system](data:image/png;base64,{base64.b64encode(report.png).decode()})"
    metrics = {
        f"{row['dataset']}/{row['system']}/{metric}": float(row[metric])
        for row in report.summary.iter_rows(named=True) for metric in (HEADLINE, "recall@10")
    }
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(f"{report.markdown}\n\n{image}"),
            "dagster/row_count": report.per_turn.height,
            "evaluation_turns": dg.MetadataValue.path(str(report.turns_path)),
            "chart": dg.MetadataValue.path(str(report.chart_path)),
            "headline_system": f"{top['dataset']} {top['system']}",
            "headline/ndcg@10": float(top["value"]),
            "headline/ndcg@10_lo": float(top["lo"]),
            "headline/ndcg@10_hi": float(top["hi"]),
            "generator_backend": report.generator_name,
            **metrics,
        }
    )


@dg.asset_check(asset=REPORT, description="Warns when the headline NDCG@10 drops below the previous "
                "materialisation's 95% confidence interval.")
def headline_within_previous_ci(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metas = recent_metadata(context.instance, REPORT, limit=2)
    if not metas or "headline/ndcg@10" not in metas[0]:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no headline yet"})
    current = metas[0]["headline/ndcg@10"]
    if len(metas) < 2 or "headline/ndcg@10_lo" not in metas[1]:
        return dg.AssetCheckResult(passed=True, metadata={"headline": current, "note": "first report"})
    previous_lo = metas[1]["headline/ndcg@10_lo"]
    return dg.AssetCheckResult(
        passed=current >= previous_lo,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"headline": current, "previous": metas[1]["headline/ndcg@10"], "previous_ci_low": previous_lo},
    )
