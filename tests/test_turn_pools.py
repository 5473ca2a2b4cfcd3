"""Which turns are learned from and which are held out: a dataset's held-out split never reaches training;
the learning pool's folds are disjoint by dialogue, stable, and sized by their shares."""

from __future__ import annotations

import polars as pl
import pytest

from corpus_build.interactions.turns import turns_frame
from training.evaluation_report import evaluation_sets
from training.turn_pools import FOLDS, Folds, alignment_pools, held_out_split, in_gate_slice, learning_pool, sft_pools


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
    train, gate = alignment_pools(turns, ["inspired"], Folds(gate_fraction=0.2, rl_share=1.0), max_turns=1000, seed=0)
    assert set(pl.concat([train, gate])["split"]) == {"train"} and train.height + gate.height == 15
    with pytest.raises(ValueError, match="held-out split"):
        learning_pool(turns.filter(pl.col("split") != "train"), ["inspired"])


def test_evaluation_reads_each_held_out_split(turns):
    sets = {s.name: s.turns.height for s in evaluation_sets(turns, None, max_turns=100, seed=0)}
    assert sets == {"inspired/validation": 5, "redial/test": 10}


def _many_turns(dialogues: int = 2000) -> pl.DataFrame:
    rows = [{"dataset": "redial", "split": ["train", "validation", "test"][i % 3], "dialog_id": f"c{i}",
             "turn_index": t} for i in range(dialogues) for t in range(2)]
    return pl.DataFrame(rows)


def test_folds_are_disjoint_by_dialogue_and_cover_the_learning_pool():
    turns = _many_turns()
    split = Folds(gate_fraction=0.2, rl_share=0.5, sft_validation_fraction=0.1).split(turns, ["redial"])
    dialogues = {name: set(frame["dialog_id"]) for name, frame in split.items()}
    for i, a in enumerate(FOLDS):
        for b in FOLDS[i + 1:]:
            assert not dialogues[a] & dialogues[b], (a, b)
    learning = turns.filter(pl.col("split") != "test")
    assert sum(frame.height for frame in split.values()) == learning.height
    share = {name: len(d) / learning["dialog_id"].n_unique() for name, d in dialogues.items()}
    assert share["gate"] == pytest.approx(0.2, abs=0.03) and share["rl"] == pytest.approx(0.4, abs=0.03)
    assert share["sft_validation"] == pytest.approx(0.04, abs=0.015)
    assert share["sft_train"] == pytest.approx(0.36, abs=0.03)


def test_the_gate_slice_does_not_move_and_the_rl_share_only_moves_the_boundary():
    turns = _many_turns()
    half, more = Folds(rl_share=0.5), Folds(rl_share=0.7)
    assert all((half.fold_of(d) == "gate") == in_gate_slice(d, 0.2) for d in turns["dialog_id"])
    rl_half = set(half.split(turns, ["redial"])["rl"]["dialog_id"])
    rl_more = set(more.split(turns, ["redial"])["rl"]["dialog_id"])
    assert rl_half < rl_more  # growing the RL share only takes dialogues from SFT
    assert set(Folds(rl_share=1.0).split(turns, ["redial"])["sft_train"]["dialog_id"]) == set()


def test_rounds_and_sft_read_their_own_folds():
    turns = _many_turns()
    folds = Folds()
    train, gate = alignment_pools(turns, ["redial"], folds, max_turns=10_000, seed=1)
    sft_train, sft_val = sft_pools(turns, ["redial"], folds)
    assert {folds.fold_of(d) for d in train["dialog_id"]} == {"rl"}
    assert {folds.fold_of(d) for d in gate["dialog_id"]} == {"gate"}
    assert {folds.fold_of(d) for d in sft_train["dialog_id"]} == {"sft_train"}
    assert {folds.fold_of(d) for d in sft_val["dialog_id"]} == {"sft_validation"}
    capped, small_gate = alignment_pools(turns, ["redial"], folds, max_turns=100, seed=1)
    assert capped.height == 100 and small_gate.height == 25


@pytest.mark.parametrize("bad", [{"gate_fraction": 0.0}, {"rl_share": 0.0}, {"rl_share": 1.5},
                                 {"sft_validation_fraction": 1.0}])
def test_folds_reject_impossible_shares(bad):
    with pytest.raises(ValueError):
        Folds(**bad)


def test_an_empty_learning_pool_says_what_there_is():
    with pytest.raises(ValueError, match="outside the held-out split of datasets \\['inspired'\\]"):
        Folds().split(_many_turns(10), ["inspired"])
