"""Which conversation turns each stage uses: supervised fine-tuning, alignment rounds, the promotion gate, evaluation.

Each dataset has one held-out split (:func:`held_out_split`: its test split, else its validation split)
that evaluation reads and nothing learns from; the learning pool (:func:`learning_pool`) is the other
train/validation turns. So INSPIRED, which offline has only its train and dev splits, is learned from
its train split and evaluated on dev, whatever ``datasets`` a stage is given.

The learning pool is divided into disjoint folds by a stable hash of ``dialog_id``, so a dialogue never
straddles two folds and the folds do not move between runs or library versions (:class:`Folds`):

- ``gate``: the promotion gate's own slice (never learned from by SFT or the rounds);
- ``rl``: the turns the alignment rounds learn from (``rl_share`` of the rest);
- ``sft_validation`` and ``sft_train``: the supervised retriever's validation and training turns.

SFT and RL learn from different dialogues, so the rounds' candidate sets are drawn on turns the
supervised retriever has not fitted (on the same turns most sets already held a target, and the reward
mostly restated what the NLL term had learned).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from corpus_build.storage import read_parquet

LEARNING_SPLITS = ("train", "validation")
BUCKETS = 10_000
FOLDS = ("gate", "sft_validation", "sft_train", "rl")


def dialog_bucket(dialog_id: str, buckets: int = BUCKETS) -> int:
    """A stable bucket in [0, buckets) for a dialogue id."""
    return int(hashlib.md5(dialog_id.encode()).hexdigest()[:8], 16) % buckets


def in_gate_slice(dialog_id: str, fraction: float) -> bool:
    return dialog_bucket(dialog_id) < fraction * BUCKETS


@dataclass(frozen=True)
class Folds:
    """Shares of the learning pool's dialogues: ``gate_fraction`` of all for the gate; of the rest,
    ``rl_share`` for the rounds and the remainder for SFT, ``sft_validation_fraction`` of which validates it.

    The hash orders the dialogues once: gate first, then SFT validation, SFT training and RL, so changing
    one share moves only the dialogues at a boundary.
    """

    gate_fraction: float = 0.2
    rl_share: float = 0.5
    sft_validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.gate_fraction < 1:
            raise ValueError(f"gate_fraction must be in (0, 1), got {self.gate_fraction}")
        if not 0 < self.rl_share <= 1:
            raise ValueError(f"rl_share must be in (0, 1], got {self.rl_share}")
        if not 0 <= self.sft_validation_fraction < 1:
            raise ValueError(f"sft_validation_fraction must be in [0, 1), got {self.sft_validation_fraction}")

    def fold_of(self, dialog_id: str) -> str:
        position = dialog_bucket(dialog_id) / BUCKETS
        if position < self.gate_fraction:
            return "gate"
        rest = (position - self.gate_fraction) / (1 - self.gate_fraction)  # [0, 1) over the other dialogues
        sft_share = 1 - self.rl_share
        if rest >= sft_share:
            return "rl"
        return "sft_validation" if rest < sft_share * self.sft_validation_fraction else "sft_train"

    def split(self, turns: pl.DataFrame, datasets: Sequence[str]) -> dict[str, pl.DataFrame]:
        """Every fold of the learning pool of ``datasets`` (a frame per name in ``FOLDS``)."""
        pool = learning_pool(turns, datasets)
        fold = pool["dialog_id"].map_elements(self.fold_of, return_dtype=pl.String)
        return {name: pool.filter(fold == name) for name in FOLDS}


def held_out_split(splits: Collection[str]) -> str | None:
    """The split a dataset with ``splits`` is evaluated on and never learns from: ``test`` when it has
    one, else ``validation`` (INSPIRED's dev split offline), else none."""
    return "test" if "test" in splits else "validation" if "validation" in splits else None


def learning_pool(turns: pl.DataFrame, datasets: Sequence[str]) -> pl.DataFrame:
    """The train/validation turns of ``datasets`` except each dataset's held-out split; a clear error
    when there are none."""
    held_out = {dataset: held_out_split(splits) or "" for dataset, splits in
                turns.group_by("dataset").agg(pl.col("split").unique()).iter_rows()}
    pool = turns.filter(pl.col("dataset").is_in(list(datasets)) & pl.col("split").is_in(LEARNING_SPLITS)
                        & (pl.col("split") != pl.col("dataset").replace_strict(held_out, return_dtype=pl.String)))
    if pool.is_empty():
        found = turns.select("dataset", "split").unique().sort("dataset", "split").rows()
        raise ValueError(f"no {'/'.join(LEARNING_SPLITS)} turns outside the held-out split of datasets "
                         f"{list(datasets)}; have {found}")
    return pool


def alignment_pools(
    turns: pl.DataFrame, datasets: Sequence[str], folds: Folds, max_turns: int, seed: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training turns, gate turns) of the rounds: a seeded sample of at most ``max_turns`` of the RL
    fold, and of the gate slice (capped at a quarter of that)."""
    split = folds.split(turns, datasets)
    return _sample(split["rl"], max_turns, seed), _sample(split["gate"], max(1, max_turns // 4), seed + 1)


def sft_pools(turns: pl.DataFrame, datasets: Sequence[str], folds: Folds) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training turns, validation turns) of the supervised retriever: the SFT fold, disjoint from the
    rounds' turns and from the gate."""
    split = folds.split(turns, datasets)
    return split["sft_train"], split["sft_validation"]


def _sample(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    return frame if frame.height <= limit else frame.sample(limit, seed=seed, shuffle=False)


class CorpusLookup:
    """Corpus rows by movie_id, fetched on demand (a prompt needs a handful of films at a time)."""

    def __init__(self, corpus: pl.DataFrame):
        self.corpus = corpus
        self._row_of = {movie_id: i for i, movie_id in enumerate(corpus["movie_id"].to_list())}

    @classmethod
    def from_parquet(cls, path) -> CorpusLookup:
        return cls(read_parquet(path))

    def __call__(self, movie_ids: Sequence[str]) -> Mapping[str, Mapping]:
        return {m: self.corpus.row(self._row_of[m], named=True) for m in movie_ids if m in self._row_of}

    def __contains__(self, movie_id: str) -> bool:
        return movie_id in self._row_of
