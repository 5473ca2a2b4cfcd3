"""Real retriever checkpoints whose rankings are known by hand: an LRURec with a zero item table scores
every film by its item bias alone, so it ranks the films in a fixed order, whatever the history (minus
the history, which retrieval masks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def fixed_order_checkpoint(path: Path, movie_ids: Sequence[str], order: Sequence[str], max_len: int = 20) -> Path:
    """Export an LRURec over ``movie_ids`` that ranks them as ``order`` (best first) to ``path``."""
    import torch

    from training.lrurec import LRURec, LRURecConfig
    from training.retriever import export_retriever

    if sorted(order) != sorted(movie_ids):
        raise ValueError("order must be a permutation of movie_ids")
    torch.manual_seed(0)
    model = LRURec(LRURecConfig(num_items=len(movie_ids), hidden=8, blocks=1))
    with torch.no_grad():
        model.items.token.weight.zero_()  # logits = hidden @ 0 + bias = bias
        model.bias.zero_()
        for position, movie_id in enumerate(order):
            model.bias[1 + list(movie_ids).index(movie_id)] = float(len(order) - position)
    return export_retriever(model, list(movie_ids), path, max_len=max_len)
