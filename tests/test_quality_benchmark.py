"""benchmarks/quality.py's table: every system is compared with the history-only retriever on the same turns,
systems re-ranked by the generator with the history-only retriever re-ranked by it, whatever '+' the
system's own name holds (``dense+pop``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_turn(system: str, ndcg: list[float]) -> pl.DataFrame:
    n = len(ndcg)
    return pl.DataFrame({
        "dataset": ["redial/test"] * n, "system": [system] * n, "dialog_id": [f"d{i}" for i in range(n)],
        "turn_index": [0] * n, "ndcg@10": ndcg, "recall@10": ndcg, "recall@20": ndcg, "recall@50": ndcg,
    })


def test_reference_of_each_system(quality):
    assert quality._reference_of("dense+pop") == "lrurec"
    assert quality._reference_of("dense+pop+embedding") == "lrurec+embedding"
    assert quality._reference_of("dialogue+embedding") == "lrurec+embedding"
    assert quality._reference_of("query-adapter") == "lrurec"
    assert quality._split("dense+pop+embedding") == ("dense+pop", "embedding")
    assert quality._split("dense+pop") == ("dense+pop", None)


def test_paired_difference_for_a_system_named_with_a_plus(quality):
    per_turn = pl.concat([
        _per_turn("lrurec", [0.0, 0.5, 0.0, 1.0]),
        _per_turn("dense+pop", [1.0, 0.5, 0.0, 1.0]),
        _per_turn("lrurec+embedding", [0.0, 0.0, 0.0, 1.0]),
        _per_turn("dense+pop+embedding", [0.0, 1.0, 1.0, 1.0]),
    ])
    rows = {row["system"]: row for row in quality.summary_rows(per_turn, n_boot=200, seed=0)}
    assert rows["dense+pop"]["ndcg@10_vs_lrurec"] == pytest.approx(0.25)
    assert rows["dense+pop+embedding"]["ndcg@10_vs_lrurec"] == pytest.approx(0.5)
    assert "ndcg@10_vs_lrurec" not in rows["lrurec"]
    low, high = rows["dense+pop"]["ndcg@10_vs_lrurec_ci"]
    assert 0.0 <= low <= 0.25 <= high <= 1.0  # differences are 1, 0, 0, 0: never below 0
    table = quality.markdown(list(rows.values()))
    assert "| redial/test | dense+pop | 4 | 0.6250" in table and "+0.2500 [" in table
