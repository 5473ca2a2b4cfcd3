"""Training loop: checkpoints, resume after a kill, sampled negatives, sequences and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.fit import TrainConfig, fit, next_item_loss
from training.lrurec import LRURec, LRURecConfig
from training.sequences import (
    NegativeSampler,
    batches,
    eval_set,
    item_counts,
    last_item_examples,
    left_pad,
    next_item_examples,
    next_item_windows,
)

torch.set_num_threads(1)


def _data(num_items=15, users=40, length=9, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [[(int(s) + t) % num_items + 1 for t in range(length)] for s in rng.integers(0, num_items, users)]
    train = [s[:-1] for s in seqs]
    return next_item_examples(train, 12), eval_set(train, [[s[-1]] for s in seqs], 12)


def _model(num_items=15):
    torch.manual_seed(0)
    return LRURec(LRURecConfig(num_items=num_items, hidden=16))


def _config(**overrides):
    base = dict(max_len=12, batch_size=16, epochs=3, patience=10, threads=1, progress=False, ks=(1, 10))
    return TrainConfig(**{**base, **overrides})


class Killed(Exception):
    pass


@pytest.mark.slow
def test_run_killed_after_an_epoch_resumes_from_that_epoch(tmp_path):
    train, val = _data()

    def kill_after_first(epoch, state):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fit(_model(), train, val, _config(), tmp_path, on_epoch_end=kill_after_first, log=lambda _: None)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)
    assert saved["state"]["epoch"] == 1 and "state" in saved["optimizer"]
    iterations_per_epoch = saved["state"]["iteration"]

    messages = []
    result = fit(_model(), train, val, _config(), tmp_path, resume=True, log=messages.append)
    assert result.start_epoch == 1
    assert result.epochs_run == 2
    assert result.iterations == 3 * iterations_per_epoch
    assert any("resumed" in m for m in messages)
    assert len(result.curve) == 1 + 3  # the initial validation, then one per epoch


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    train, val = _data()
    whole = _model()
    fit(whole, train, val, _config(epochs=2), tmp_path / "whole", log=lambda _: None)
    part = _model()
    fit(part, train, val, _config(epochs=1), tmp_path / "part", log=lambda _: None)
    resumed = _model()
    fit(resumed, train, val, _config(epochs=2), tmp_path / "part", resume=True, log=lambda _: None)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_early_stopping_and_best_checkpoint(tmp_path):
    train, val = _data()
    result = fit(_model(), train, val, _config(epochs=50, patience=2, lr=0.0), tmp_path, log=lambda _: None)
    assert result.stopped_early and result.epochs_run < 50
    assert (tmp_path / "best.pt").is_file()


@pytest.mark.parametrize("mode", ["uniform", "popularity"])
def test_sampled_negatives_train(tmp_path, mode):
    train, val = _data()
    model = _model()
    sampler = NegativeSampler(15, mode, item_counts(train, 15))
    tokens, labels = next(batches(train, 16, np.random.default_rng(0)))
    before = next_item_loss(model, tokens, labels, sampler, 8).item()
    result = fit(model, train, val, _config(epochs=4, negatives=8, sampler=mode, lr=1e-2), tmp_path, log=lambda _: None)
    after = next_item_loss(model.eval(), tokens, labels, sampler, 8).item()
    assert after < before
    assert result.best_metrics["Recall@10"] > 0


def test_negative_sampler_draws_items_only():
    counts = np.array([0, 100, 1, 1, 1])
    sampler = NegativeSampler(4, "popularity", counts)
    draws = sampler.sample(5000, generator=torch.Generator().manual_seed(0))
    assert draws.min() >= 1 and draws.max() <= 4
    assert (draws == 1).float().mean() > 0.5  # the popular item dominates
    with pytest.raises(ValueError, match="mode"):
        NegativeSampler(4, "zipf")


def test_windows_padding_and_fine_tuning_examples():
    assert next_item_windows([[1, 2, 3, 4, 5, 6, 7]], max_len=3) == [[5, 6, 7], [2, 3, 4]]
    assert next_item_windows([[1, 2, 3, 4, 5]], max_len=3) == [[1, 2, 3, 4, 5]]  # shorter than 2 windows
    assert left_pad([[1, 2, 3], [4]], 2).tolist() == [[2, 3], [0, 4]]
    ex = last_item_examples([[1, 2], [], [3]], [[5, 6], [7], [8]], max_len=4)
    assert ex.tokens.tolist() == [[0, 0, 1, 2], [0, 0, 1, 2], [0, 0, 0, 3]]
    assert ex.labels.tolist() == [[0, 0, 0, 5], [0, 0, 0, 6], [0, 0, 0, 8]]


def test_batches_trim_left_padding():
    ex = next_item_examples([[1, 2, 3], [4, 5, 6, 7]], max_len=10)
    tokens, labels = next(batches(ex, 8, np.random.default_rng(0), shuffle=False))
    assert tokens.shape == (2, 3) and labels.shape == (2, 3)


def test_time_budget_stop_still_validates_the_trained_weights(tmp_path):
    train, val = _data()
    result = fit(_model(), train, val, _config(epochs=5, max_minutes=1e-9), tmp_path, log=lambda _: None)
    assert result.stopped_early and result.iterations == 1
    assert [row["iteration"] for row in result.curve] == [0, 1]  # the initial and the final validation


def test_target_coverage_counts_each_turn_and_target():
    import polars as pl

    from training.pretraining import target_coverage

    turns = pl.DataFrame({"dataset": ["redial", "redial", "redial", "inspired"],
                          "split": ["test", "test", "train", "validation"],
                          "target_movie_ids": [["a", "b"], ["a"], ["c"], ["d"]]})
    coverage = target_coverage(turns, [["a", "x"], ["c"]])
    assert coverage == {"inspired/validation": 0.0, "redial/test": 2 / 3, "redial/train": 1.0}


def test_pretraining_datasets_are_selected_by_name():
    import polars as pl

    from training.pretraining import select_datasets

    sequences = pl.DataFrame({"dataset": ["ml-1m", "ml-100k", "ml-1m"], "user_id": ["1", "1", "2"]})
    assert select_datasets(sequences, []).height == 3  # every dataset; user "1" twice, once per dataset
    assert select_datasets(sequences, ["ml-1m"])["user_id"].to_list() == ["1", "2"]
    with pytest.raises(ValueError, match=r"no rows of \['ml-32m'\].*'ml-100k', 'ml-1m'"):
        select_datasets(sequences, ["ml-1m", "ml-32m"])


def test_pooled_test_metrics_weight_each_dataset_by_its_users():
    from training.pretraining import _pooled

    pooled = _pooled({"ml-1m": {"NDCG@10": 0.2}, "ml-100k": {"NDCG@10": 0.5}, "empty": {}},
                     {"ml-1m": 3, "ml-100k": 1, "empty": 0})
    assert pooled == {"NDCG@10": pytest.approx(0.275)}


def test_pretraining_test_metrics_rank_the_test_film_after_train_and_validation_films(tmp_path):
    """The test metrics, recomputed from the exported retriever another way: each user's history is the
    train films plus the validation film, the target the test film, NDCG@10 = 1 / log2(rank + 2)."""
    import math

    import numpy as np
    import polars as pl

    from corpus_build.schema import USER_SEQUENCES_SCHEMA
    from training.pretraining import pretrain_from_tables
    from training.retriever import Retriever

    torch.set_num_threads(1)
    films = [f"tt{i:07d}" for i in range(1, 41)]
    rng = np.random.default_rng(3)
    rows = []
    for user in range(60):
        start = int(rng.integers(0, 40))
        history = [films[(start + 3 * t) % 40] for t in range(int(rng.integers(5, 9)))]
        rows.append({"dataset": "ml-100k", "user_id": str(user), "movie_ids": history,
                     "train_movie_ids": history[:-2], "val_movie_id": history[-2], "test_movie_id": history[-1]})
    pl.DataFrame(rows, schema=USER_SEQUENCES_SCHEMA).write_parquet(tmp_path / "sequences.parquet")
    pl.DataFrame({"movie_id": films}).write_parquet(tmp_path / "corpus.parquet")
    config = TrainConfig(max_len=20, epochs=2, threads=1, progress=False, batch_size=32)
    out = pretrain_from_tables(tmp_path / "sequences.parquet", tmp_path / "corpus.parquet", tmp_path / "pre",
                               config, hidden=16)
    retriever = Retriever.from_checkpoint(out["checkpoint"])
    ranked = retriever.retrieve_batch([r["train_movie_ids"] + [r["val_movie_id"]] for r in rows], k=len(films))
    ndcg, recall = [], []
    for row, hits in zip(rows, ranked):
        order = [movie_id for movie_id, _ in hits]
        rank = order.index(row["test_movie_id"]) if row["test_movie_id"] in order else len(films)
        ndcg.append(1 / math.log2(rank + 2) if rank < 10 else 0.0)
        recall.append(1.0 if rank < 10 else 0.0)
    assert out["test"]["NDCG@10"] == pytest.approx(np.mean(ndcg), abs=1e-5)
    assert out["test"]["Recall@10"] == pytest.approx(np.mean(recall), abs=1e-5)
    assert out["test_by_dataset"]["ml-100k"]["NDCG@10"] == pytest.approx(np.mean(ndcg), abs=1e-5)
