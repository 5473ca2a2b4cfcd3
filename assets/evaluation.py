"""Evaluation stage: NDCG/Recall per dataset x system, with CIs, per-turn results and a chart."""

import dagster as dg

from assets.keys import ALIGNED, CORPUS, DIALOGUE, OWNERS, PRETRAINED, REPORT, SEQUENCES, SFT, TURNS, VECTORS
from assets.metadata import readable, recent_metadata, records_table
from rar_pipeline.resources import GeneratorResource
from rar_pipeline.settings import get_settings

GROUP = "evaluation"


# Declarative automation: when the automation sensor is on, a newly promoted retriever (a new data version of
# aligned_retriever, not a nightly confirmation of the same one) or a retrained SFT retriever gets the report
# rebuilt, once its upstream runs have finished.
RETRIEVER_CHANGED = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    .allow(dg.AssetSelection.assets(ALIGNED, SFT))
    .since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("a retriever was promoted or retrained")


@dg.asset(
    key=REPORT, group_name=GROUP, kinds={"pytorch", "parquet"}, owners=OWNERS,
    deps=[ALIGNED, DIALOGUE, SFT, PRETRAINED, TURNS, SEQUENCES, CORPUS, VECTORS], automation_condition=RETRIEVER_CHANGED,
)
def evaluation_report(context: dg.AssetExecutionContext, generator: GeneratorResource) -> dg.MaterializeResult:
    """NDCG@{1,5,10,20,50}, Recall@{1,5,10,20,50} and MRR with bootstrap 95% CIs for every system (popularity of
    the learning dialogues, each retriever checkpoint (pretrained, sft: history-only LRURec, dialogue:
    dialogue-aware, aligned) alone and with the generator re-ranking its top K = RAR_ALIGNMENT_SET_SIZE)
    on every evaluation set (test splits,
    INSPIRED dev, MovieLens next-item), under the zero-shot CRS protocol (targets mentioned earlier and
    targets outside the corpus excluded). Metadata: the report (a table and a chart), every figure in one
    table entry, the headline with its CI; per-turn results: the evaluation_turns table. Rebuilt by the
    main and nightly jobs, and automatically after a promotion when the automation sensor is on."""
    import base64

    from training.evaluation_report import HEADLINE, REPORT_METRICS, NoRetrieverError, report_from_tables

    s = get_settings()
    try:
        report = report_from_tables(
            s.home, s.table_path("conversation_turns"), s.table_path("user_sequences"), s.table_path("movie_corpus"),
            generator.make_generator, s.table_path("evaluation_turns"), max_turns=s.evaluation_max_turns,
            seed=s.seed, candidates=s.alignment_set_size, datasets=s.alignment_datasets, folds=s.learning_folds(),
            log=context.log.info, generator_weight=s.pipeline_generator_weight,
        )
    except NoRetrieverError as error:
        raise dg.Failure(str(error)) from error
    top = report.headline
    chart = f"![{HEADLINE} by system and dataset](data:image/png;base64,{base64.b64encode(report.png).decode()})"
    # every metric per dataset x system, the headline first with its CI
    names = [HEADLINE, f"{HEADLINE}_lo", f"{HEADLINE}_hi", *(m for m in REPORT_METRICS if m != HEADLINE)]
    figures = [{"dataset": row["dataset"], "system": row["system"], "turns": row["turns"],
                **{name: row[name] for name in names}} for row in report.summary.iter_rows(named=True)]
    return dg.MaterializeResult(
        metadata=readable({
            "report": dg.MetadataValue.md(f"{report.markdown}\n\n{chart}"),
            "figures": records_table(figures),
            "per_turn_results": report.per_turn.height,
            "evaluation_turns": dg.MetadataValue.path(str(report.turns_path)),
            "chart_path": dg.MetadataValue.path(str(report.chart_path)),
            "headline_system": f"{top['dataset']} {top['system']}",
            "headline/ndcg@10": top["value"],
            "headline/ndcg@10_lo": top["lo"],
            "headline/ndcg@10_hi": top["hi"],
            "generator_backend": report.generator_name,
        })
    )


HEADLINE_MAX_DROP = 0.5  # also warn on a fall below half the previous headline, where its CI reaches 0


@dg.asset_check(asset=REPORT, description="Warns when the headline NDCG@10 falls below the previous report's 95% "
                f"confidence interval, or below {1 - HEADLINE_MAX_DROP:.0%} of the previous headline (small evaluation "
                "sets have CIs that reach 0, which nothing can fall below).")
def headline_within_previous_ci(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metas = recent_metadata(context.instance, REPORT, limit=2)
    if not metas or "headline/ndcg@10" not in metas[0]:
        return dg.AssetCheckResult(passed=True, metadata={"note": "no headline yet"})
    current = metas[0]["headline/ndcg@10"]
    if len(metas) < 2 or "headline/ndcg@10_lo" not in metas[1]:
        return dg.AssetCheckResult(passed=True, metadata={"headline": current, "note": "first report"})
    previous, previous_lo = metas[1]["headline/ndcg@10"], metas[1]["headline/ndcg@10_lo"]
    floor = max(previous_lo, (1 - HEADLINE_MAX_DROP) * previous)
    return dg.AssetCheckResult(
        passed=current >= floor,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=readable({"headline": current, "headline_system": metas[0].get("headline_system"),
                           "previous": previous, "previous_system": metas[1].get("headline_system"),
                           "previous_ci_low": previous_lo, "floor": floor}),
    )
