"""The promotion gate: a paired-bootstrap lower bound of the round's gain over its parent on the gate
slice, a minimum gate size, and a reason the operator can read."""

import numpy as np
import pytest

from training.promotion import GateRule, gate_verdict, paired_lower_bound


def _gate(turns: int, gain: float, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    before = rng.uniform(0, 1, turns)
    return before, before + gain + rng.normal(0, noise, turns)


def test_a_clear_gain_on_enough_turns_is_promoted():
    before, after = _gate(400, 0.05, 0.1)
    verdict = gate_verdict(before, after, GateRule(min_delta=0.0, min_turns=100))
    assert verdict["gate_passed"] and verdict["gate_reason"].startswith("promoted: ")
    assert 0 < verdict["gate_gain_lower"] < verdict["gate_gain"] == pytest.approx(np.mean(after - before))


def test_a_mean_gain_inside_the_noise_is_not_promoted():
    # the mean rises (the old rule, after >= before, promoted this) but the paired CI reaches below zero
    before, after = _gate(400, 0.003, 0.3)
    assert after.mean() > before.mean()
    verdict = gate_verdict(before, after, GateRule(min_delta=0.0, min_turns=100))
    assert not verdict["gate_passed"] and verdict["gate_gain_lower"] < 0 < verdict["gate_gain"]
    assert verdict["gate_reason"].startswith("not promoted: ") and "lower bound" in verdict["gate_reason"]


def test_min_delta_applies_to_the_lower_bound():
    before, after = _gate(400, 0.05, 0.1)
    lower = gate_verdict(before, after, GateRule())["gate_gain_lower"]
    assert gate_verdict(before, after, GateRule(min_delta=lower - 1e-6))["gate_passed"]
    assert not gate_verdict(before, after, GateRule(min_delta=lower + 1e-6))["gate_passed"]


def test_a_gate_below_the_minimum_size_is_never_promoted_and_says_why():
    before, after = _gate(40, 0.5, 0.01)  # a huge, clean gain, but on 40 turns
    verdict = gate_verdict(before, after, GateRule(min_turns=100))
    assert not verdict["gate_passed"] and verdict["gate_gain_lower"] is None
    assert verdict["gate_reason"] == (
        "not promoted: the gate slice has 40 turns, fewer than the 100 needed to decide "
        "(RAR_ALIGNMENT_GATE_MIN_TURNS); use more dialogues or a larger RAR_ALIGNMENT_GATE_FRACTION")
    assert gate_verdict(before, after, GateRule(min_turns=40))["gate_passed"]


def test_non_finite_weights_are_never_promoted():
    before, after = _gate(400, 0.5, 0.01)
    verdict = gate_verdict(before, after, GateRule(), weights_finite=False)
    assert not verdict["gate_passed"] and verdict["gate_gain_lower"] is None
    assert verdict["gate_reason"] == "not promoted: the round's retriever has non-finite weights"


def test_paired_lower_bound_uses_the_pairing():
    # Large differences between turns, a constant gain per turn: the paired bound is the gain itself,
    # where comparing two independent means would be lost in the spread between turns.
    before = np.linspace(0, 1, 200)
    assert paired_lower_bound(before, before + 0.01, 0.95, 500, 0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="gate turns differ"):
        gate_verdict(before, before[:10], GateRule())


def test_a_round_on_a_tiny_gate_slice_is_recorded_as_not_promoted(tmp_path):
    """Through align_from_tables with the default rule: 12 gate turns are too few, whatever the gain."""
    import torch
    from test_alignment_round import FAVOURITE, PreferOneFilm, round_tables

    from training.alignment_round import RoundConfig, align_from_tables
    from training.turn_pools import Folds

    torch.set_num_threads(1)
    item_ids, parent, turns_path, corpus_path = round_tables(tmp_path)
    config = RoundConfig(num_sets=4, set_size=5, epochs=3, lr=1e-2, nll_weight=0.0, rollout_batch=16)
    record = align_from_tables(tmp_path / "round", parent, "sft", turns_path, corpus_path,
                               PreferOneFilm(item_ids[FAVOURITE]), config, ["redial"],
                               Folds(gate_fraction=0.25, rl_share=1.0), 100, log=lambda m: None)
    assert record["gate_ndcg_after"] > record["gate_ndcg_before"]  # the round did improve the gate
    assert record["gate_passed"] is False and "fewer than the 100 needed" in record["gate_reason"]
    assert not (tmp_path / "round" / "epochs").exists()  # resume state is dropped once the round is recorded


def test_a_round_whose_weights_diverge_is_recorded_as_not_promoted(tmp_path):
    """Through align_from_tables: an infinite learning rate leaves non-finite weights after the first
    step; a rule that would pass any gain (min_delta -1, one turn) still refuses to promote the round."""
    import torch
    from test_alignment_round import FAVOURITE, PreferOneFilm, round_tables

    from training.alignment_round import RoundConfig, align_from_tables
    from training.retriever import Retriever
    from training.turn_pools import Folds

    torch.set_num_threads(1)
    item_ids, parent, turns_path, corpus_path = round_tables(tmp_path)
    config = RoundConfig(num_sets=2, set_size=4, epochs=1, lr=float("inf"), rollout_batch=16)
    record = align_from_tables(tmp_path / "round", parent, "sft", turns_path, corpus_path,
                               PreferOneFilm(item_ids[FAVOURITE]), config, ["redial"],
                               Folds(gate_fraction=0.25, rl_share=1.0), 100,
                               GateRule(min_delta=-1.0, min_turns=1), log=lambda m: None)
    exported = Retriever.from_checkpoint(tmp_path / "round" / "retriever.pt").model
    assert not all(bool(torch.isfinite(p).all()) for p in exported.parameters())
    assert record["gate_passed"] is False and "non-finite weights" in record["gate_reason"]


def test_weights_finite_finds_one_bad_value():
    import torch

    from training.alignment_round import weights_finite

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    assert weights_finite(model)
    for bad in (float("nan"), float("inf"), float("-inf")):
        with torch.no_grad():
            model[1].bias[0] = bad
        assert not weights_finite(model)


def test_gate_rule_refuses_meaningless_settings():
    GateRule(confidence=0.5, min_turns=1, n_boot=1)  # the limits themselves are fine
    for bad, message in (({"confidence": 0.49}, r"^confidence must be in \[0.5, 1\), got 0.49$"),
                         ({"confidence": 1.0}, r"^confidence must be in \[0.5, 1\), got 1.0$"),
                         ({"min_turns": 0}, r"^min_turns and n_boot must be >= 1$"),
                         ({"n_boot": 0}, r"^min_turns and n_boot must be >= 1$")):
        with pytest.raises(ValueError, match=message):
            GateRule(**bad)


def test_verdict_fields_and_reason_by_hand():
    before, after = np.zeros(4), np.array([0.1, 0.1, 0.1, 0.1])  # every turn gains exactly 0.1
    verdict = gate_verdict(before, after, GateRule(min_delta=0.05, min_turns=4, n_boot=50))
    assert verdict == {"gate_passed": True, "gate_gain": pytest.approx(0.1), "gate_gain_lower": pytest.approx(0.1),
                       "gate_min_delta": 0.05, "gate_reason": "promoted: gate NDCG@10 gain +0.1000 on 4 turns, 95% "
                       "lower bound +0.1000 >= the required +0.0500"}
    empty = gate_verdict([], [], GateRule(min_turns=1))
    assert empty["gate_gain"] == 0.0 and not empty["gate_passed"] and "0 turns" in empty["gate_reason"]
    worse = gate_verdict(before, -after, GateRule(min_delta=0.0, min_turns=4, n_boot=50, confidence=0.9))
    assert worse["gate_reason"] == ("not promoted: gate NDCG@10 gain -0.1000 on 4 turns, 90% lower bound -0.1000 "
                                    "< the required +0.0000")


def test_paired_lower_bound_by_hand():
    # gains 0 and 1 on two turns: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    before, after = np.array([0.0, 0.0]), np.array([0.0, 1.0])
    assert paired_lower_bound(before, after, 0.95, 4000, 0) == 0.0  # the 5% quantile
    assert paired_lower_bound(before, after, 0.6, 4000, 0) == 0.5  # the 40% quantile
    assert paired_lower_bound(before, after, 0.6, 4000, 0) == paired_lower_bound(before, after, 0.6, 4000, 0)


def test_a_lower_bound_equal_to_min_delta_is_promoted():
    before, after = np.zeros(8), np.full(8, 0.25)  # every resample's mean gain is exactly 0.25
    assert gate_verdict(before, after, GateRule(min_delta=0.25, min_turns=8, n_boot=20))["gate_passed"]
    assert not gate_verdict(before, after, GateRule(min_delta=0.2500001, min_turns=8, n_boot=20))["gate_passed"]
