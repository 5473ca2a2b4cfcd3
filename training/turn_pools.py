"""Which conversation turns each stage uses: alignment training, the promotion gate, evaluation.

Each dataset has one held-out split (:func:`held_out_split`: its test split, else its validation split)
that evaluation reads and nothing learns from; the learning pool (:func:`learning_pool`) is the other
train/validation turns. So INSPIRED, which offline has only its train and dev splits, is learned from
its train split and evaluated on dev, whatever ``datasets`` a stage is given. Slices of the pool are
decided by a stable hash of ``dialog_id``, so a dialogue never straddles two slices and the slices do
not move between runs or library versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence

import polars as pl

LEARNING_SPLITS = ("train", "validation")


def dialog_bucket(dialog_id: str, buckets: int = 10_000) -> int:
    """A stable bucket in [0, buckets) for a dialogue id."""
    return int(hashlib.md5(dialog_id.encode()).hexdigest()[:8], 16) % buckets


def in_gate_slice(dialog_id: str, fraction: float) -> bool:
    return dialog_bucket(dialog_id) < fraction * 10_000


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
    turns: pl.DataFrame, datasets: Sequence[str], gate_fraction: float, max_turns: int, seed: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training turns, gate turns) from the learning pool of ``datasets`` (:func:`learning_pool`).

    The gate turns are the dialogues in the hash slice; the training turns are the others, a seeded
    sample of at most ``max_turns``. Gate turns are capped at a quarter of that.
    """
    pool = learning_pool(turns, datasets)
    gate_mask = pool["dialog_id"].map_elements(lambda d: in_gate_slice(d, gate_fraction), return_dtype=pl.Boolean)
    gate, train = pool.filter(gate_mask), pool.filter(~gate_mask)
    return _sample(train, max_turns, seed), _sample(gate, max(1, max_turns // 4), seed + 1)


def _sample(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    return frame if frame.height <= limit else frame.sample(limit, seed=seed, shuffle=False)


class CorpusLookup:
    """Corpus rows by movie_id, fetched on demand (a prompt needs a handful of films at a time)."""

    def __init__(self, corpus: pl.DataFrame):
        self.corpus = corpus
        self._row_of = {movie_id: i for i, movie_id in enumerate(corpus["movie_id"].to_list())}

    @classmethod
    def from_parquet(cls, path) -> CorpusLookup:
        return cls(pl.read_parquet(path))

    def __call__(self, movie_ids: Sequence[str]) -> Mapping[str, Mapping]:
        return {m: self.corpus.row(self._row_of[m], named=True) for m in movie_ids if m in self._row_of}

    def __contains__(self, movie_id: str) -> bool:
        return movie_id in self._row_of
