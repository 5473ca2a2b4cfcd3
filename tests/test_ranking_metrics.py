"""Ranking metrics against hand-computed values; history masking with one scatter."""

from __future__ import annotations

import math

import pytest
import torch

from training.ranking_metrics import (
    NEG_INF,
    mask_history,
    mean_metrics,
    metrics_from_ranks,
    ranking_metrics,
    target_ranks,
)


def test_single_target_metrics_match_hand_computed_values():
    # items 1..5 (column 0 = padding); target 3 has two items above it -> rank 2 (0-based)
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.7, 0.1, 0.8]])
    out = mean_metrics(ranking_metrics(scores, torch.tensor([3]), ks=(1, 2, 3, 5)))
    assert out["Recall@1"] == 0.0 and out["Recall@2"] == 0.0 and out["Recall@3"] == 1.0
    assert math.isclose(out["NDCG@3"], 1 / math.log2(4), rel_tol=1e-6)
    assert math.isclose(out["NDCG@5"], 0.5, rel_tol=1e-6)
    assert math.isclose(out["MRR"], 1 / 3, rel_tol=1e-6)


def test_padding_column_is_never_ranked():
    scores = torch.tensor([[100.0, 1.0, 2.0]])
    assert target_ranks(mask_history(scores.clone(), torch.zeros(1, 1, dtype=torch.long)), torch.tensor([[2]])).item() == 0


def test_history_items_are_masked_out_of_the_ranking():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.3, 0.2], [0.0, 0.1, 0.2, 0.3, 0.4]])
    history = torch.tensor([[0, 1, 2], [0, 0, 4]])  # left padded
    targets = torch.tensor([3, 3])
    without = ranking_metrics(scores, targets, ks=(1,))
    masked = ranking_metrics(scores, targets, history=history, ks=(1,))
    assert without["Recall@1"].tolist() == [0.0, 0.0]
    assert masked["Recall@1"].tolist() == [1.0, 1.0]  # 1 and 2 masked in row 0; 4 masked in row 1
    masked_scores = mask_history(scores.clone(), history)
    assert torch.isinf(masked_scores[0, [0, 1, 2]]).all() and torch.isinf(masked_scores[1, [0, 4]]).all()
    assert torch.isfinite(masked_scores[0, [3, 4]]).all()


def test_multi_target_recall_and_ndcg():
    # items 1..5 scored 0.7, 0.9, 0.1, 0.6, 0.2; targets 2 and 4 have ranks 0 and 2
    scores = torch.tensor([[0.0, 0.7, 0.9, 0.1, 0.6, 0.2]])
    out = mean_metrics(ranking_metrics(scores, torch.tensor([[2, 4]]), ks=(1, 2, 3)))
    assert out["Recall@1"] == 1.0  # 1 hit / min(k=1, 2 targets)
    assert out["Recall@2"] == 0.5
    assert out["Recall@3"] == 1.0
    ideal = 1 / math.log2(2) + 1 / math.log2(3)
    assert math.isclose(out["NDCG@3"], (1 / math.log2(2) + 1 / math.log2(4)) / ideal, rel_tol=1e-6)
    assert math.isclose(out["NDCG@2"], 1 / ideal, rel_tol=1e-6)
    assert out["MRR"] == 1.0


def test_padded_targets_are_ignored():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.1]])
    one = mean_metrics(ranking_metrics(scores, torch.tensor([[2, 0]]), ks=(1, 2)))
    assert one["Recall@1"] == 1.0 and one["NDCG@2"] == 1.0 and one["MRR"] == 1.0


def test_ndcg_and_recall_with_more_targets_than_k():
    # items 1..6; targets 1, 3, 4 ranked 0, 2, 3 (item 2 scores between them)
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6, 0.1, 0.2]])
    out = mean_metrics(ranking_metrics(scores, torch.tensor([[1, 3, 4]]), ks=(1, 2, 4)))
    assert out["NDCG@1"] == 1.0 and out["Recall@1"] == 1.0  # min(|T|, k) = 1
    assert math.isclose(out["NDCG@2"], 1 / (1 + 1 / math.log2(3)), rel_tol=1e-6)
    assert out["Recall@2"] == 0.5  # one hit of min(3, 2)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert math.isclose(out["NDCG@4"], (1 + 1 / math.log2(4) + 1 / math.log2(5)) / ideal, rel_tol=1e-6)


def test_mask_history_without_padding_ids_and_the_exclude_padding_switch():
    history = torch.tensor([[2], [3]])  # no padding id in the history
    masked = mask_history(torch.ones(2, 4), history)
    assert masked.tolist() == [[NEG_INF, 1.0, NEG_INF, 1.0], [NEG_INF, 1.0, 1.0, NEG_INF]]
    kept = mask_history(torch.ones(2, 4), history, exclude_padding=False)
    assert kept.tolist() == [[1.0, 1.0, NEG_INF, 1.0], [1.0, 1.0, 1.0, NEG_INF]]  # column 0 left as it was
    with pytest.raises(ValueError, match=r"^history has padding ids but exclude_padding=False would leave id 0 ranked$"):
        mask_history(torch.ones(1, 4), torch.tensor([[0, 2]]), exclude_padding=False)


def test_ranking_metrics_per_row_of_a_batch():
    # two rows with different numbers of targets: each row's ideal DCG is its own
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7], [0.0, 0.1, 0.2, 0.9]])
    out = ranking_metrics(scores, torch.tensor([[1, 2], [1, 0]]), ks=(2,))
    assert out["NDCG@2"].tolist() == [1.0, 0.0] and out["Recall@2"].tolist() == [1.0, 0.0]
    assert out["MRR"].tolist() == pytest.approx([1.0, 1 / 3])


def test_target_ranks_mark_padded_targets_minus_one():
    scores = torch.tensor([[NEG_INF, 0.2, 0.9, 0.5]])
    assert target_ranks(scores, torch.tensor([[3, 0, 2]])).tolist() == [[1, -1, 0]]


def test_metrics_stay_on_the_device_of_the_ranks():
    # "meta" stands for an accelerator: every tensor the metrics build must follow the ranks' device
    ranks = torch.zeros(2, 3, dtype=torch.long, device="meta")
    assert {value.device.type for value in metrics_from_ranks(ranks, ks=(1, 5)).values()} == {"meta"}
