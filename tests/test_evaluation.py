"""Evaluation metrics on hand-computed cases, each protocol switch, bootstrap CIs, report outputs."""

import math

import numpy as np
import polars as pl
import pytest

from training.evaluation_protocol import (
    CHART_WIDTH_PX,
    Protocol,
    bootstrap_ci,
    chart_png,
    effective_targets,
    markdown_table,
    per_turn_results,
    summarise,
    turn_metrics,
)


def test_turn_metrics_by_hand():
    m = turn_metrics(["a", "b", "c", "d"], ["c", "x"], ks=(1, 5))
    assert m["recall@1"] == 0.0 and m["ndcg@1"] == 0.0
    assert m["recall@5"] == 0.5
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["mrr"] == pytest.approx(1 / 3)
    assert turn_metrics(["a"], ["a"], ks=(1,))["ndcg@1"] == 1.0


def _turns():
    return pl.DataFrame({
        "dataset": ["redial", "redial"], "split": ["test", "test"], "dialog_id": ["d1", "d2"],
        "turn_index": [3, 5], "target_movie_ids": [["m1", "m2"], ["m3"]],
        "target_mentioned_before": [[True, False], [False]],
    })


def test_exclude_mentioned_switch_changes_only_mentioned_targets():
    turns = _turns()
    rankings = [["m1", "m9"], ["m3"]]
    with_switch = per_turn_results(turns, rankings, "s", protocol=Protocol(exclude_mentioned=True, in_corpus_only=False))
    without = per_turn_results(turns, rankings, "s", protocol=Protocol(exclude_mentioned=False, in_corpus_only=False))
    # turn 1: m1 was mentioned before; excluded -> only m2 counts and the hit on m1 no longer scores
    assert with_switch["recall@1"].to_list() == [0.0, 1.0]
    assert without["recall@1"].to_list() == [0.5, 1.0]
    assert with_switch["n_targets"].to_list() == [1, 1] and without["n_targets"].to_list() == [2, 1]


def test_in_corpus_switch_drops_out_of_corpus_targets_and_empty_turns():
    turns = _turns()
    rankings = [["m2"], ["m3"]]
    items = {"m1", "m2"}
    on = per_turn_results(turns, rankings, "s", item_set=items, protocol=Protocol(False, True))
    off = per_turn_results(turns, rankings, "s", item_set=items, protocol=Protocol(False, False))
    assert on.height == 1 and off.height == 2  # turn 2's only target m3 is outside the item set
    assert on["recall@1"].to_list() == [0.5]
    assert effective_targets(["m1", "m3", "m1"], None, items, Protocol(False, True)) == ["m1"]


def test_rankings_must_match_turns():
    with pytest.raises(ValueError, match="1 rankings for 2 turns"):
        per_turn_results(_turns(), [["m1"]], "s")


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(50)
    large = rng.random(5000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=500)
    lo_l, hi_l = bootstrap_ci(large, n_boot=500)
    assert lo_s < small.mean() < hi_s
    assert (hi_l - lo_l) < (hi_s - lo_s)


def test_summary_markdown_and_png():
    turns = _turns()
    per_turn = pl.concat([
        per_turn_results(turns, [["m2", "m1"], ["m3"]], "good", protocol=Protocol(False, False)),
        per_turn_results(turns, [["m9"], ["m8"]], "bad", protocol=Protocol(False, False)),
    ])
    summary = summarise(per_turn, ["ndcg@10", "recall@10"], n_boot=100)
    assert summary["turns"].to_list() == [2, 2]
    assert summary.filter(pl.col("system") == "good")["recall@10"].item() == 1.0
    table = markdown_table(summary, ["ndcg@10", "recall@10"])
    assert "| redial | good | 2 |" in table and "| redial | bad | 2 | 0.0000" in table
    png = chart_png(summary, "ndcg@10", rounds={"r1": 0.1, "r2": 0.2})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    assert 500 < width <= CHART_WIDTH_PX and height < width  # fits the UI's metadata dialog, no empty margin
    assert len(png) < 30_000  # embedded in the report's metadata: every materialisation event carries it


def test_headline_check_warns_only_below_the_previous_ci():
    import dagster as dg

    from assets.evaluation import REPORT, headline_within_previous_ci

    def report(instance, value, lo, hi):
        instance.report_runless_asset_event(dg.AssetMaterialization(REPORT, metadata={
            "headline/ndcg@10": value, "headline/ndcg@10_lo": lo, "headline/ndcg@10_hi": hi}))

    def check(instance):
        return headline_within_previous_ci(dg.build_asset_check_context(instance=instance))

    with dg.instance_for_test() as instance:
        report(instance, 0.20, 0.15, 0.25)
        assert check(instance).passed  # first report
        report(instance, 0.16, 0.10, 0.22)
        assert check(instance).passed  # lower, but inside the previous CI
        report(instance, 0.09, 0.05, 0.13)
        result = check(instance)
        assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
        assert result.metadata["previous_ci_low"].value == 0.10

    with dg.instance_for_test() as instance:  # the sample profile: tiny values whose CI reaches 0
        report(instance, 0.003, 0.0, 0.008)
        report(instance, 0.002, 0.0, 0.006)
        assert check(instance).passed  # within half of the previous headline
        report(instance, 0.0009, 0.0, 0.003)
        result = check(instance)
        assert not result.passed and result.metadata["floor"].value == 0.001


def test_headline_prefers_the_largest_dialogue_set():
    from training.evaluation_report import headline

    summary = pl.DataFrame({
        "dataset": ["inspired/validation", "redial/test", "redial/test"], "system": ["sft+embedding", "sft", "sft+embedding"],
        "turns": [50, 900, 900], "ndcg@10": [0.5, 0.1, 0.2], "ndcg@10_lo": [0.4, 0.05, 0.15], "ndcg@10_hi": [0.6, 0.15, 0.25],
    })
    top = headline(summary, ["inspired/validation", "redial/test"])
    assert (top["dataset"], top["system"], top["value"]) == ("redial/test", "sft+embedding", 0.2)


def test_report_is_requested_when_a_new_retriever_is_promoted():
    """Declarative automation: a new data version of aligned_retriever (a promotion) or a retrained SFT
    retriever requests the report once; a nightly confirmation of the same round or a new corpus does not."""
    import dagster as dg

    from assets.evaluation import evaluation_report
    from rar_pipeline.resources import GeneratorResource

    defs = dg.Definitions(assets=[evaluation_report], resources={"generator": GeneratorResource(backend="embedding")})

    def materialized(instance, key, version=None):
        tags = {"dagster/data_version": version} if version else None
        instance.report_runless_asset_event(dg.AssetMaterialization(key, tags=tags))

    with dg.instance_for_test() as instance:
        cursor = None

        def requested() -> int:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            return result.total_requested

        assert requested() == 0
        materialized(instance, "aligned_retriever", "round-1")
        assert requested() == 1 and requested() == 0  # requested once
        materialized(instance, "evaluation_report")
        materialized(instance, "aligned_retriever", "round-1")  # a rejected round: the same retriever again
        assert requested() == 0
        materialized(instance, "movie_vectors")
        assert requested() == 0
        materialized(instance, "aligned_retriever", "round-3")
        materialized(instance, "evaluation_report")  # the nightly job rebuilt the report in the same run
        assert requested() == 0
        materialized(instance, "lrurec_sft", "retrained")
        assert requested() == 1


def test_ndcg_ideal_is_capped_at_k_when_a_turn_has_more_targets_than_k():
    # three targets a, b, c at 0-based ranks 0, 2, 3: the ideal list of length k holds min(3, k) hits
    m = turn_metrics(["a", "x", "b", "c"], ["a", "b", "c"], ks=(1, 2, 4))
    assert m["ndcg@1"] == 1.0  # ideal: one position, one hit
    assert m["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["ndcg@4"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / 2))
    assert m["recall@2"] == pytest.approx(1 / 3) and m["recall@4"] == 1.0 and m["mrr"] == 1.0


def test_bootstrap_ci_of_two_values_by_hand():
    # the mean of two draws from {0, 1} is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4: the 95% interval
    # spans 0..1, the 40% interval (quantiles 0.3 and 0.7) is 0.5..0.5
    values = np.array([0.0, 1.0])
    assert bootstrap_ci(values, n_boot=4000, seed=1) == (0.0, 1.0)
    assert bootstrap_ci(values, n_boot=4000, seed=1, level=0.4) == (0.5, 0.5)
    assert bootstrap_ci(np.array([0.25] * 7), n_boot=10) == (0.25, 0.25)
    low, high = bootstrap_ci(np.array([]))
    assert math.isnan(low) and math.isnan(high)


def test_bootstrap_ci_is_seeded():
    values = np.random.default_rng(3).random(30)
    assert bootstrap_ci(values, n_boot=200, seed=5) == bootstrap_ci(values, n_boot=200, seed=5)
    assert bootstrap_ci(values, n_boot=200, seed=5) != bootstrap_ci(values, n_boot=200, seed=6)


def test_turns_without_the_mentioned_column_keep_every_target_and_top10_holds_ten():
    turns = _turns().drop("target_mentioned_before")
    ranking = ["x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "m1", "m3"]
    out = per_turn_results(turns, [ranking, ranking], "s", protocol=Protocol(exclude_mentioned=True, in_corpus_only=False))
    assert out["n_targets"].to_list() == [2, 1]  # nothing is known to be mentioned before: nothing excluded
    assert out["top10"].to_list() == [ranking[:10]] * 2
    assert out["recall@20"].to_list() == [0.5, 1.0] and out["mrr"].to_list() == [1 / 11, 1 / 12]
    assert out.columns[:7] == ["system", "dataset", "split", "dialog_id", "turn_index", "n_targets", "top10"]
    assert out["dialog_id"].to_list() == ["d1", "d2"] and out["turn_index"].to_list() == [3, 5]


def test_turn_metrics_of_an_empty_ranking_and_of_no_target():
    assert set(turn_metrics([], ["a"], ks=(1, 5)).values()) == {0.0}
    assert set(turn_metrics(["a", "b"], [], ks=(1, 5)).values()) == {0.0}
    assert list(turn_metrics(["a"], ["a"], ks=(1, 5))) == ["ndcg@1", "recall@1", "ndcg@5", "recall@5", "mrr"]


def test_markdown_table_and_chart_size_exactly():
    turns = _turns()
    per_turn = pl.concat([
        per_turn_results(turns, [["m2", "m1"], ["m3"]], "good", protocol=Protocol(False, False)),
        per_turn_results(turns, [["m9"], ["m8"]], "bad", protocol=Protocol(False, False)),
    ])
    summary = summarise(per_turn, ["ndcg@10", "recall@10"], n_boot=50)
    assert summary.columns == ["dataset", "system", "turns", "ndcg@10", "ndcg@10_lo", "ndcg@10_hi", "recall@10",
                               "recall@10_lo", "recall@10_hi"]
    assert markdown_table(summary, ["ndcg@10", "recall@10"]).splitlines() == [
        "| dataset | system | turns | ndcg@10 [95% CI] | recall@10 [95% CI] |",
        "|---|---|---|---|---|",
        "| redial | good | 2 | 1.0000 [1.000, 1.000] | 1.0000 [1.000, 1.000] |",
        "| redial | bad | 2 | 0.0000 [0.000, 0.000] | 0.0000 [0.000, 0.000] |",
    ]
    assert markdown_table(summary, ["ndcg@10", "recall@10"], with_ci=["ndcg@10"]).splitlines()[::2] == [
        "| dataset | system | turns | ndcg@10 [95% CI] | recall@10 |",
        "| redial | good | 2 | 1.0000 [1.000, 1.000] | 1.0000 |",
    ]


def test_bootstrap_ci_of_one_turn_is_that_turns_value():
    assert bootstrap_ci(np.array([0.25])) == (0.25, 0.25)


def test_a_turn_whose_mentioned_flags_do_not_match_its_targets_is_an_error():
    with pytest.raises(ValueError):  # zip(strict=True): a corrupt row never silently loses a target
        effective_targets(["m1", "m2"], [False], None, Protocol())


def test_per_turn_results_report_exactly_the_ks_asked_for():
    out = per_turn_results(_turns(), [["m2", "m1"], ["m3"]], "s", protocol=Protocol(False, False), ks=(1, 3))
    assert out.columns[7:] == ["ndcg@1", "recall@1", "ndcg@3", "recall@3", "mrr"]


def test_summary_cis_are_the_bootstrap_with_the_callers_resamples_and_seed():
    values = [0.0, 0.2, 0.5, 1.0, 0.1]
    per_turn = pl.DataFrame({"dataset": ["redial"] * 5, "system": ["s"] * 5, "mrr": values})
    row = summarise(per_turn, ["mrr"], n_boot=37, seed=11).row(0, named=True)
    assert (row["mrr_lo"], row["mrr_hi"]) == bootstrap_ci(np.array(values), n_boot=37, seed=11)
    assert row["mrr"] == pytest.approx(0.36) and row["turns"] == 5
