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


def test_the_baselines_rank_and_train_through_the_pipelines_scoring_path(quality):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from training.dialogue_training import DialogueTrainConfig, evaluate, fit, turn_examples
    from training.retriever import Retriever, item_text_matrix

    rng = np.random.default_rng(0)
    films = rng.normal(size=(30, 8)).astype(np.float32)
    text = item_text_matrix(films / np.linalg.norm(films, axis=1, keepdims=True))
    popularity = np.zeros(31, dtype=np.float32)
    movie_ids = [f"m{i}" for i in range(1, 31)]
    reads_like_film_7 = text[7].numpy()[None]
    encoder = SimpleNamespace(encode=lambda texts: reads_like_film_7)
    dense = Retriever(quality.DenseBaseline(text, popularity), movie_ids, 10, text_encoder=encoder)
    assert dense.retrieve([], 1, context=[{"role": "seeker", "text": "like film 7"}])[0][0] == "m7"

    adapter = quality.query_adapter_model(text, popularity)
    targets = rng.integers(1, 31, size=60)
    data = turn_examples([[] for _ in targets], text[targets].numpy(), [[int(t)] for t in targets], 4, one_per_target=True)
    fit(adapter, data, data, DialogueTrainConfig(epochs=1, ks=(1,), best_metric="Recall@1"), log=lambda _: None)
    with torch.no_grad():
        assert evaluate(adapter, data, ks=(1,))["Recall@1"] > 0.5


def test_pretraining_budget_is_epochs_not_wall_time(quality, monkeypatch):
    from rar_pipeline.settings import Settings

    monkeypatch.delenv("RAR_RETRIEVER_MAX_MINUTES", raising=False)
    for name, value in quality.training_budget(quality.PRETRAINING_EPOCHS, None).items():
        monkeypatch.setenv(name, value)
    s = Settings(profile="full")
    assert s.pretraining_epochs == quality.PRETRAINING_EPOCHS
    assert s.retriever_minutes is None  # no wall-time cap unless asked: the steps do not depend on the load
    assert quality.training_budget(3, 15.0)["RAR_RETRIEVER_MAX_MINUTES"] == "15.0"


def test_training_steps_come_from_each_stage_latest_materialisation(quality, tmp_path, monkeypatch):
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    def stage(epochs: int):
        @dg.asset(name="lrurec_pretrained")
        def lrurec_pretrained():
            return dg.MaterializeResult(metadata={"epochs_run": epochs, "iterations": 75 * epochs, "users": 10})
        return lrurec_pretrained

    instance = dg.DagsterInstance.get()
    for epochs in (3, 8):
        assert dg.materialize([stage(epochs)], instance=instance).success
    steps = quality.training_steps()
    assert steps["lrurec_pretrained"] == {"epochs_run": 8, "iterations": 600}
    assert steps["lrurec_sft"] == {} and steps["dialogue_retriever"] == {}
