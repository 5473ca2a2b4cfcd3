"""The preference backend (a black-box taste for proofs) and what an alignment round learns from it."""

import pytest
import torch

from training.generator.base import Generator, RankRequest, RankResult, fallback
from training.generator.preference_backend import PreferenceGenerator, trait_predicate

MOVIES = {
    "old1": {"title": "Old One", "year": 1962, "genres": ["Western"]},
    "new1": {"title": "New One", "year": 2011, "genres": ["Horror", "Comedy"]},
    "old2": {"title": "Old Two", "year": 1979, "genres": ["Drama"]},
    "new2": {"title": "New Two", "year": 1980, "genres": ["Drama"]},
    "unknown": {"title": "No Year"},
}


def test_trait_predicates():
    before_1980 = trait_predicate("year<1980")
    assert [before_1980(m) for m in MOVIES.values()] == [True, False, True, False, False]
    assert [trait_predicate("year >= 1980")(m) for m in MOVIES.values()] == [False, True, False, True, False]
    assert [trait_predicate("genre=horror")(m) for m in MOVIES.values()] == [False, True, False, False, False]
    with pytest.raises(ValueError, match="unknown trait"):
        trait_predicate("rating>7")


def test_films_with_the_trait_come_first_in_the_shown_order_targets_included():
    generator = PreferenceGenerator("year<1980")
    request = RankRequest.from_text("anything", ["new1", "old2", "unknown", "old1", "new2"], MOVIES)
    [result] = generator.rank_scored([request], [{"new1"}])
    assert result.ranking == ("old2", "old1", "new1", "unknown", "new2") and result.source == "model"
    assert generator.stats.calls == 1


class Reverse(Generator):
    name = "reverse"

    def _rank_batch(self, requests):
        return [RankResult(tuple(reversed(r.candidate_ids)), "model") if r.context[0]["text"] != "fail"
                else fallback(r, "down") for r in requests]


def test_an_inner_generator_orders_each_group_and_its_failures_pass_through():
    generator = PreferenceGenerator("genre=drama", inner=Reverse())
    ok = RankRequest.from_text("hi", ["new1", "old2", "old1", "new2"], MOVIES)
    bad = RankRequest.from_text("fail", ["new1", "old2"], MOVIES)
    first, second = generator.rank_batch([ok, bad])
    assert first.ranking == ("new2", "old2", "old1", "new1")
    assert second.source == "fallback" and second.ranking == ("new1", "old2")


@pytest.mark.slow
def test_rl_learns_to_leave_out_the_films_the_generator_pushes_ahead_and_nll_does_not(tmp_path):
    """30 films, the first 10 'old' (the generator ranks them first); targets are drawn from every film,
    so the supervised term has no reason to move old films. GRPO, DPO and the nll control get the same
    turns and steps; only the RL objectives see that old films push the targets down the generator's
    list. Measured: old films in the top 10 0.37 before; GRPO 0.22, DPO 0.19, nll 0.31."""
    from training.alignment_round import RoundConfig, run_round
    from training.alignment_turns import AlignmentTurn, retrieve_top_k
    from training.lrurec import LRURec, LRURecConfig

    torch.set_num_threads(1)
    n_items, old = 30, set(range(1, 11))
    item_ids = ["<pad>"] + [f"m{i}" for i in range(1, n_items + 1)]
    movies = {m: {"title": m, "year": 1970 if i in old else 2005} for i, m in enumerate(item_ids) if i}
    draws = torch.Generator().manual_seed(0)
    turns = []
    for t in range(200):
        history = [int(i) for i in torch.randint(1, n_items + 1, (3,), generator=draws)]
        target = int(torch.randint(1, n_items + 1, (1,), generator=draws))
        if target not in history:
            turns.append(AlignmentTurn(f"d/{t}/1", ({"role": "user", "text": "hi"},), history, [target]))

    def old_share(model):
        top = retrieve_top_k(model, turns, item_ids, 10)
        return sum(item_ids.index(m) in old for row in top for m in row) / (10 * len(top))

    shares = {}
    for objective in ("grpo", "dpo", "nll"):
        torch.manual_seed(0)
        model = LRURec(LRURecConfig(num_items=n_items, hidden=16, blocks=1))
        before = old_share(model)
        config = RoundConfig(objective=objective, num_sets=8, set_size=10, lr=1e-2, epochs=6, batch_size=16,
                             rollout_batch=32, nll_weight=1.0 if objective == "nll" else 0.0, temperature=1.0,
                             dpo_beta=1.0)
        run_round(model, item_ids, turns[:150], turns[150:], PreferenceGenerator("year<1980"),
                  lambda ids: {m: movies[m] for m in ids}, config, tmp_path / objective, log=lambda m: None)
        shares[objective] = old_share(model)
    for objective in ("grpo", "dpo"):
        assert shares[objective] < before - 0.1 and shares[objective] < shares["nll"] - 0.05, (before, shares)
