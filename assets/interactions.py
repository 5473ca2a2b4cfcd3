"""Interactions: MovieLens histories and conversation turns, every film linked to movie_corpus."""

import dagster as dg

from assets.keys import CORPUS, OWNERS, SEQUENCES, TURNS
from assets.metadata import latest_metadata, readable, records_table, table_schema
from corpus_build.schema import CONVERSATION_TURNS_COLUMN_DESCRIPTIONS, USER_SEQUENCES_COLUMN_DESCRIPTIONS
from rar_pipeline.settings import get_settings

GROUP = "interactions"


def _linker():
    from corpus_build.linking import Linker

    return Linker.from_parquet(get_settings().table_path("movie_corpus"))


def _write(frame, name: str):
    from corpus_build.atomic import write_parquet_atomic

    return write_parquet_atomic(frame, get_settings().table_path(name))


def _metadata(built, path, descriptions) -> dict:
    """A table's metadata: schema, link rates per dataset (one table entry) and the build's counts."""
    log = built.log
    return {
        "dagster/row_count": built.frame.height,
        "dagster/column_schema": table_schema(built.frame.schema, descriptions),
        "path": dg.MetadataValue.path(str(path)),
        "link_rates": records_table([{"dataset": d, "mentions": log.mentions[d], "linked": log.linked.get(d, 0),
                                      "link_rate": rate} for d, rate in log.rates().items()]),
        "unresolved_distinct": log.unresolved().height,
        "build_counts": records_table([{"count": name, "value": value} for name, value in built.stats.items()]),
    }


def _save_unresolved(built) -> None:
    """This asset's unresolved mentions replace its datasets' rows in the unresolved_mentions table."""
    import polars as pl

    settings = get_settings()
    fresh = built.log.unresolved()
    if settings.table_file("unresolved_mentions").exists():
        old = settings.read_table("unresolved_mentions").filter(~pl.col("dataset").is_in(list(built.log.rates())))
        fresh = pl.concat([old, fresh], how="vertical_relaxed")
    _write(fresh, "unresolved_mentions")


@dg.asset(key=SEQUENCES, group_name=GROUP, kinds={"polars", "parquet"}, owners=OWNERS, deps=[CORPUS])
def user_sequences() -> dg.MaterializeResult:
    """MovieLens histories as chronological movie_id sequences, one row per (dataset, user), with the
    LRURec leave-one-out split (last film = test, second to last = validation; 5-core)."""
    import polars as pl

    from corpus_build.interactions.build import build_user_sequences

    settings = get_settings()
    built = build_user_sequences(settings.profile, settings.upstream, _linker())
    path = _write(built.frame, "user_sequences")
    _save_unresolved(built)
    metadata = _metadata(built, path, USER_SEQUENCES_COLUMN_DESCRIPTIONS)
    by_dataset = built.frame.group_by("dataset").agg(users=pl.len(), interactions=pl.col("movie_ids").list.len().sum())
    metadata["users_by_dataset"] = records_table(by_dataset.sort("dataset").to_dicts())
    metadata["interactions"] = int(by_dataset["interactions"].sum())
    return dg.MaterializeResult(metadata=readable(metadata))


@dg.asset(key=TURNS, group_name=GROUP, kinds={"polars", "parquet"}, owners=OWNERS, deps=[CORPUS, SEQUENCES])
def conversation_turns() -> dg.MaterializeResult:
    """One row per recommender turn that recommends a film (ReDial, INSPIRED, Reddit-Movie; in the sample
    profile dialogues synthesised from MovieLens histories): context, mentioned and target movie_ids, split."""

    from corpus_build.interactions.build import build_conversation_turns, turns_by_split

    settings = get_settings()
    sequences_path = settings.table_path("user_sequences")
    sequences = settings.read_table("user_sequences") if sequences_path.exists() else None
    built = build_conversation_turns(settings.profile, settings.upstream, _linker(), settings.seed, sequences)
    path = _write(built.frame, "conversation_turns")
    _write(built.quarantine, "conversation_turns_quarantine")
    _save_unresolved(built)
    metadata = _metadata(built, path, CONVERSATION_TURNS_COLUMN_DESCRIPTIONS)
    metadata["turns_by_split"] = records_table(turns_by_split(built.frame).to_dicts())
    metadata["quarantined"] = built.quarantine.height
    metadata["dialogs"] = built.frame.select("dataset", "dialog_id").unique().height
    return dg.MaterializeResult(metadata=readable(metadata))


# --- checks (blocking) --------------------------------------------------------------------------


def _latest_link_rates(context: dg.AssetCheckExecutionContext, key: dg.AssetKey) -> dict[str, float]:
    """Link rate per dataset of the latest materialisation, exact (from the counts, not the rounded rate)."""
    table = latest_metadata(context.instance, key).get("link_rates")
    rows = [r.data for r in table.records] if table is not None else []
    return {row["dataset"]: row["linked"] / row["mentions"] if row["mentions"] else 0.0 for row in rows}


def _link_rate_result(rates: dict[str, float]) -> dg.AssetCheckResult:
    floors = get_settings().limits.min_link_rate
    failing = {d: r for d, r in rates.items() if r < floors.get(d, floors["default"])}
    return dg.AssetCheckResult(passed=not failing,
                               metadata=readable({"link_rates": rates, "below_threshold": failing, "floors": floors}))


@dg.asset_check(asset=SEQUENCES, blocking=True, description="Share of MovieLens films linked to the corpus, per dataset, above its floor.")
def user_sequences_link_rate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return _link_rate_result(_latest_link_rates(context, SEQUENCES))


@dg.asset_check(asset=TURNS, blocking=True, description="Share of dialogue film mentions linked to the corpus, per dataset and split, above its floor.")
def conversation_turns_link_rate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return _link_rate_result(_latest_link_rates(context, TURNS))


@dg.asset_check(asset=TURNS, blocking=True, description="Every turn has targets, and every target is a corpus movie_id.")
def targets_in_corpus() -> dg.AssetCheckResult:
    import polars as pl

    settings = get_settings()
    turns = settings.read_table("conversation_turns")
    corpus_ids = settings.read_table("movie_corpus", columns=["movie_id"])["movie_id"]
    targets = turns.select("target_movie_ids").explode("target_movie_ids")["target_movie_ids"]
    no_target = turns.filter(pl.col("target_movie_ids").list.len() == 0).height
    unknown = targets.filter(targets.is_null() | ~targets.is_in(corpus_ids.implode())).len()
    return dg.AssetCheckResult(passed=no_target == 0 and unknown == 0,
                               metadata={"turns_without_target": no_target, "targets_not_in_corpus": unknown})


@dg.asset_check(asset=TURNS, blocking=True, description="Splits are disjoint: no dialogue appears in two splits.")
def splits_disjoint() -> dg.AssetCheckResult:

    from corpus_build.interactions.splits import overlapping_dialogs

    overlap = overlapping_dialogs(get_settings().read_table("conversation_turns"))
    return dg.AssetCheckResult(passed=overlap.is_empty(),
                               metadata={"dialogs_in_several_splits": overlap.height,
                                         "examples": overlap.head(10)["dialog_id"].to_list()})
