"""Ranking metrics with full ranking over the item table and the user's history masked (LRURec protocol).

Everything is vectorised: the history is masked with one ``scatter_``, and a target's rank is the
number of items scored strictly higher than it (no sort).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def mask_history(scores: torch.Tensor, history: torch.Tensor, exclude_padding: bool = True) -> torch.Tensor:
    """In place: items of ``history`` ([B, L] ids, 0 = padding) get -inf in ``scores`` [B, N + 1]."""
    scores.scatter_(1, history.long(), NEG_INF)
    if exclude_padding:
        scores[:, 0] = NEG_INF
    elif (history == 0).any():
        raise ValueError("history has padding ids but exclude_padding=False would leave id 0 ranked")
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target ([B, T] ids, 0 = no target) among all items; padded targets get -1."""
    target_scores = scores.gather(1, targets.long())  # [B, T]
    ranks = (scores.unsqueeze(1) > target_scores.unsqueeze(2)).sum(-1)  # [B, T]
    return torch.where(targets > 0, ranks, torch.full_like(ranks, -1))


def metrics_from_ranks(ranks: torch.Tensor, ks=(1, 5, 10, 20)) -> dict[str, torch.Tensor]:
    """Per-row NDCG@k, Recall@k and MRR from target ranks [B, T] (-1 = no target).

    Recall@k = hits / min(k, #targets); NDCG@k = DCG / ideal DCG; MRR = 1 / (best rank + 1).
    """
    valid = ranks >= 0
    n_targets = valid.sum(1).clamp(min=1).float()
    discount = 1.0 / torch.log2(ranks.clamp(min=0).float() + 2.0)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = valid & (ranks < k)
        ideal_count = n_targets.clamp(max=float(k))
        positions = torch.arange(k, dtype=torch.float32, device=ranks.device)
        ideal_weights = 1.0 / torch.log2(positions + 2.0)
        ideal = (ideal_weights.unsqueeze(0) * (positions.unsqueeze(0) < ideal_count.unsqueeze(1))).sum(1)
        out[f"NDCG@{k}"] = (discount * hit).sum(1) / ideal
        out[f"Recall@{k}"] = hit.sum(1).float() / ideal_count
    best = torch.where(valid, ranks, torch.full_like(ranks, torch.iinfo(ranks.dtype).max)).min(1).values
    out["MRR"] = 1.0 / (best.float() + 1.0)
    return out


def ranking_metrics(
    scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None, ks=(1, 5, 10, 20)
) -> dict[str, torch.Tensor]:
    """Per-row metrics of full ranking: ``scores`` [B, N + 1] (column 0 = padding), targets [B, T] or [B]."""
    if targets.dim() == 1:
        targets = targets.unsqueeze(1)
    scores = scores.float().clone()
    if history is not None:
        mask_history(scores, history)
    else:
        scores[:, 0] = NEG_INF
    return metrics_from_ranks(target_ranks(scores, targets), ks)


def mean_metrics(per_row: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(values.float().mean()) for name, values in per_row.items()}
