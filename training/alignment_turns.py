"""A conversation turn as the alignment rounds see it: the mentioned films and the targets as item indices,
the conversation's vector for a dialogue-aware retriever, and the retriever's masked scores and top K."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass
class AlignmentTurn:
    key: str  # dataset/dialog_id/turn_index
    context: tuple  # ({"role", "text"}, ...)
    history: list[int]  # item indices of films mentioned before, in order
    targets: list[int]  # item indices of the films recommended in this turn
    text: np.ndarray | None = None  # the conversation's vector (dialogue-aware retrievers only)


def build_turns(
    turns: pl.DataFrame, item_index: Mapping[str, int],
    context_vectors: Callable[[Sequence], np.ndarray] | None = None,
) -> list[AlignmentTurn]:
    """Turns (CONVERSATION_TURNS_SCHEMA) as item indices; turns with no known target are dropped.

    ``context_vectors`` (contexts -> [n, dim], e.g. ``Retriever.context_vectors``) fills each turn's
    ``text`` for a retriever that reads the conversation."""
    out = []
    for row in turns.iter_rows(named=True):
        history = [item_index[m] for m in row["history_movie_ids"] if m in item_index]
        targets = [item_index[m] for m in row["target_movie_ids"] if m in item_index]
        targets = [t for t in dict.fromkeys(targets) if t not in set(history)]
        if targets:
            key = f"{row['dataset']}/{row['dialog_id']}/{row['turn_index']}"
            out.append(AlignmentTurn(key, tuple(row["context"]), history, targets))
    if context_vectors is not None and out:
        for turn, vector in zip(out, context_vectors([t.context for t in out]), strict=True):
            turn.text = vector
    return out


def history_tokens(turns: Sequence[AlignmentTurn], max_len: int):
    """Left-padded item-index histories [B, L] (0 = padding; at least one column)."""
    import torch

    from training.sequences import left_pad

    length = max(1, min(max_len, max((len(t.history) for t in turns), default=1)))
    return torch.from_numpy(left_pad([t.history for t in turns], length))


def turn_logits(model, turns: Sequence[AlignmentTurn], max_len: int):
    """Retriever logits [B, N+1] for each turn's next film; padding and mentioned films are -inf."""
    import torch

    device = next(model.parameters()).device
    tokens = history_tokens(turns, max_len).to(device)
    text = None
    if getattr(model, "reads_dialogue", False):
        if any(t.text is None for t in turns):
            raise ValueError("a dialogue-aware retriever needs each turn's text vector (build_turns context_vectors)")
        text = torch.from_numpy(np.stack([t.text for t in turns])).to(device)
    logits = model.score_items(tokens, text).float()
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[:, 0] = True
    for row, turn in enumerate(turns):
        if turn.history:
            mask[row, turn.history] = True
    return logits.masked_fill(mask, -math.inf)


def retrieve_top_k(model, turns: Sequence[AlignmentTurn], item_ids: Sequence[str], k: int, batch: int = 256):
    """The retriever's top-k films (movie ids) per turn, mentioned films excluded."""
    import torch

    model.eval()
    out: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, len(turns), batch):
            chunk = turns[start:start + batch]
            top = torch.topk(turn_logits(model, chunk, 10_000), k, dim=-1).indices.cpu().tolist()
            out.extend([[item_ids[i] for i in row] for row in top])
    return out
