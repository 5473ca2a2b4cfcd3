"""Which turns are learned from and which are held out: a dataset's held-out split never reaches training."""

from __future__ import annotations

import polars as pl
import pytest

from corpus_build.interactions.turns import turns_frame
from training.report import evaluation_sets
from training.turn_pools import alignment_pools, held_out_split, learning_pool


def _turns(dataset: str, split: str, dialogs: int) -> list[dict]:
    return [{"dataset": dataset, "split": split, "dialog_id": f"{dataset}-{split}-{i}", "turn_index": 1,
             "context": [], "history_movie_ids": ["a"], "target_movie_ids": ["b"], "target_mentioned_before": [False]}
            for i in range(dialogs)]


@pytest.fixture
def turns() -> pl.DataFrame:
    # the offline mirror's shape: ReDial train + validation + test, INSPIRED train + dev only
    return turns_frame(_turns("redial", "train", 30) + _turns("redial", "validation", 20) + _turns("redial", "test", 10)
                       + _turns("inspired", "train", 15) + _turns("inspired", "validation", 5))


def test_held_out_split_is_test_else_validation():
    assert held_out_split({"train", "validation", "test"}) == "test"
    assert held_out_split({"train", "validation"}) == "validation"
    assert held_out_split({"train"}) is None


def test_learning_pool_never_holds_a_held_out_split(turns):
    pool = learning_pool(turns, ["redial", "inspired"])
    assert dict(pool.group_by("dataset", "split").len().select(pl.concat_str("dataset", "split", separator="/"), "len")
                .iter_rows()) == {"redial/train": 30, "redial/validation": 20, "inspired/train": 15}
    train, gate = alignment_pools(turns, ["inspired"], gate_fraction=0.2, max_turns=1000, seed=0)
    assert set(pl.concat([train, gate])["split"]) == {"train"} and train.height + gate.height == 15
    with pytest.raises(ValueError, match="held-out split"):
        learning_pool(turns.filter(pl.col("split") != "train"), ["inspired"])


def test_evaluation_reads_each_held_out_split(turns):
    sets = {s.name: s.turns.height for s in evaluation_sets(turns, None, max_turns=100, seed=0)}
    assert sets == {"inspired/validation": 5, "redial/test": 10}
