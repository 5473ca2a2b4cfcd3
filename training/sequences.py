"""Sequences for LRURec: item vocabulary, training windows, left-padded batches, evaluation sets, negatives.

Item ids are 1..N (0 = padding). Training examples are (tokens, labels) pairs of equal length,
left padded; a label 0 means "no loss here", so next-item pretraining (labels = tokens shifted by one)
and conversation fine-tuning (one label at the last position) share one batching and one loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ItemVocab:
    """movie_id <-> item index (1..N, in the given order; 0 is padding)."""

    def __init__(self, movie_ids: Sequence[str]):
        self.movie_ids = list(movie_ids)
        self.index = {movie_id: i + 1 for i, movie_id in enumerate(self.movie_ids)}
        if len(self.index) != len(self.movie_ids):
            raise ValueError("item vocabulary has duplicate movie_ids")

    def __len__(self) -> int:
        return len(self.movie_ids)

    def encode(self, movie_ids: Iterable[str]) -> list[int]:
        """Indices of the known movie_ids, in order (unknown ids are dropped)."""
        return [self.index[m] for m in movie_ids if m in self.index]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.movie_ids[i - 1] for i in indices]


def left_pad(rows: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """[len(rows), length] int64, each row's last ``length`` ids right-aligned, zeros in front."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        tail = list(row)[-length:] if length else []
        if tail:
            out[i, length - len(tail) :] = tail
    return out


def next_item_windows(sequences: Iterable[Sequence[int]], max_len: int, sliding_step: int | None = None) -> list[list[int]]:
    """The paper's training windows: a sequence of max_len + step items or more is cut, from its end,
    into windows of max_len items every ``sliding_step`` (default max_len); shorter ones stay whole."""
    step = sliding_step or max_len
    windows: list[list[int]] = []
    for seq in sequences:
        seq = list(seq)
        if len(seq) < 2:
            continue
        if len(seq) < max_len + step:
            windows.append(seq)
        else:
            windows.extend(seq[i : i + max_len] for i in range(len(seq) - max_len, -1, -step))
    return windows


@dataclass
class Examples:
    """Training examples: tokens and labels [n, max_len], left padded."""

    tokens: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def next_item_examples(sequences: Iterable[Sequence[int]], max_len: int) -> Examples:
    """Pretraining: tokens = seq[:-1], labels = seq[1:] (loss at every real position)."""
    windows = next_item_windows(sequences, max_len)
    return Examples(left_pad([w[:-1] for w in windows], max_len), left_pad([w[1:] for w in windows], max_len))


def last_item_examples(histories: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], max_len: int) -> Examples:
    """Fine-tuning: one example per (history, target), loss only at the last position.

    A target already in its history is left out: inference never proposes a mentioned film, so such a
    pair would only teach the model to repeat what the user just said."""
    tokens, labels = [], []
    for history, turn_targets in zip(histories, targets, strict=True):
        if not history:
            continue
        seen = set(history)
        for target in dict.fromkeys(t for t in turn_targets if t not in seen):
            tokens.append(history)
            labels.append([0] * (min(len(history), max_len) - 1) + [target])
    return Examples(left_pad(tokens, max_len), left_pad(labels, max_len))


@dataclass
class EvalSet:
    """Full-ranking evaluation: input histories [n, max_len] (left padded) and targets [n, T] (0-padded)."""

    tokens: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def eval_set(histories: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], max_len: int) -> EvalSet:
    keep = [i for i, (h, t) in enumerate(zip(histories, targets, strict=True)) if h and t]
    width = max((len(targets[i]) for i in keep), default=1)
    target_rows = np.zeros((len(keep), width), dtype=np.int64)
    for row, i in enumerate(keep):
        target_rows[row, : len(targets[i])] = targets[i]
    return EvalSet(left_pad([histories[i] for i in keep], max_len), target_rows)


def trim_left_padding(tokens, *others):
    """Drop leading columns that are padding in every row (exactly the same results, less work)."""
    nonzero = (tokens != 0).any(0)
    first = int(nonzero.float().argmax()) if bool(nonzero.any()) else tokens.shape[1] - 1
    return (tokens[:, first:], *(o[:, first:] for o in others))


def batches(examples: Examples, batch_size: int, rng: np.random.Generator, shuffle: bool = True) -> Iterator[tuple]:
    """(tokens, labels) LongTensor batches, shuffled, left padding trimmed to the batch's longest row."""
    import torch

    order = rng.permutation(len(examples)) if shuffle else np.arange(len(examples))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        tokens = torch.from_numpy(examples.tokens[idx])
        labels = torch.from_numpy(examples.labels[idx])
        yield trim_left_padding(tokens, labels)


class NegativeSampler:
    """Negatives from the whole item table: uniform, or by popularity (counts ** alpha, +1 smoothing).

    ``log_q`` is the log sampling probability per item, for the sampled-softmax correction.
    """

    def __init__(self, num_items: int, mode: str = "uniform", counts: np.ndarray | None = None, alpha: float = 0.75):
        import torch

        if mode not in ("uniform", "popularity"):
            raise ValueError(f"negative sampling mode must be 'uniform' or 'popularity', got {mode!r}")
        self.num_items = num_items
        self.mode = mode
        if mode == "popularity":
            if counts is None or len(counts) != num_items + 1:
                raise ValueError("popularity sampling needs counts of length num_items + 1")
            weights = torch.as_tensor(counts, dtype=torch.float64)[1:].clamp(min=0) + 1.0
            weights = weights**alpha
        else:
            weights = torch.ones(num_items, dtype=torch.float64)
        probs = weights / weights.sum()
        self.probs = probs.float()
        self.log_q = torch.cat([torch.zeros(1), torch.log(probs).float()])  # index 0 unused

    def sample(self, count: int, generator=None):
        import torch

        if self.mode == "uniform":
            return torch.randint(1, self.num_items + 1, (count,), generator=generator)
        return torch.multinomial(self.probs, count, replacement=True, generator=generator) + 1


def item_counts(examples: Examples, num_items: int) -> np.ndarray:
    return np.bincount(examples.labels.ravel(), minlength=num_items + 1)


def load_leave_one_out(folder: str | Path):
    """The ML-1M leave-one-out split (sequences.parquet, items.parquet) as plain lists.

    Returns (train sequences, val items, test items, num_items); rows are ordered by user_index.
    """
    import pyarrow.parquet as pq

    folder = Path(folder)
    seq_path, items_path = folder / "sequences.parquet", folder / "items.parquet"
    for path in (seq_path, items_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected the ML-1M leave-one-out split)")
    table = pq.read_table(seq_path, columns=["user_index", "train_items", "val_item", "test_item"]).to_pydict()
    order = sorted(range(len(table["user_index"])), key=table["user_index"].__getitem__)
    num_items = max(pq.read_table(items_path, columns=["item_index"]).column("item_index").to_pylist())
    return (
        [list(table["train_items"][i]) for i in order],
        [table["val_item"][i] for i in order],
        [table["test_item"][i] for i in order],
        int(num_items),
    )
