"""Alignment maths on hand-computed tiny cases: Plackett-Luce set log-probs, sampling, DPO, GRPO, NLL."""

import math

import pytest
import torch

from training.alignment import (
    dpo_loss,
    dpo_pairs,
    draw_log_probs,
    group_advantages,
    grpo_loss,
    gumbel_topk_sets,
    likeliest_order,
    ndcg_of_ranking,
    nll_loss,
    set_log_probs,
)


def test_set_log_prob_matches_plackett_luce_by_hand():
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0]]))  # p = 1/6, 2/6, 3/6
    sets = torch.tensor([[[2, 1], [0, 2]]])
    expected = torch.tensor([[math.log(3 / 6) + math.log(2 / 3), math.log(1 / 6) + math.log(3 / 5)]])
    assert torch.allclose(set_log_probs(logits, sets), expected, atol=1e-6)
    draws = draw_log_probs(logits, sets)
    assert draws.shape == (1, 2, 2)
    assert math.isclose(draws[0, 0, 1].item(), math.log(2 / 3), abs_tol=1e-6)


def test_all_orderings_of_all_sets_sum_to_one():
    logits = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    import itertools

    perms = torch.tensor([list(p) for p in itertools.permutations(range(4), 2)]).unsqueeze(0)
    total = set_log_probs(logits, perms).exp().sum().item()
    assert math.isclose(total, 1.0, rel_tol=1e-5)


def test_likeliest_order_scores_a_set_whatever_order_it_was_drawn_in():
    """The films sorted by score are the set's most probable order: its log-probability is the max over
    every order of the set, the same for any permutation, and a lower bound on the set's total probability."""
    import itertools

    logits = torch.tensor([[0.0, 3.0, -1.0, 1.5, 0.5, 2.0]]) / 0.2  # peaked, as at T = 0.2
    films = [4, 1, 3]
    orders = torch.tensor([list(p) for p in itertools.permutations(films)]).unsqueeze(0)  # [1, 6, 3]
    every_order = set_log_probs(logits, orders)
    likeliest = set_log_probs(logits, likeliest_order(logits, orders))
    assert torch.allclose(likeliest, every_order.max().expand_as(likeliest), atol=1e-6)
    assert likeliest_order(logits, orders)[0, 0].tolist() == [1, 3, 4]
    assert likeliest[0, 0] <= torch.logsumexp(every_order[0], 0) + 1e-6
    assert likeliest[0, 0] >= torch.logsumexp(every_order[0], 0) - math.log(6)  # the max of 3! orders


def test_gumbel_topk_has_no_repeats_skips_masked_and_follows_softmax():
    gen = torch.Generator().manual_seed(7)
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0]]))  # last item masked (-inf)
    sets = gumbel_topk_sets(logits, set_size=3, num_sets=20000, generator=gen)
    assert sets.shape == (1, 20000, 3)
    assert (sets != 4).all()
    sorted_sets = sets.sort(dim=-1).values
    assert (sorted_sets[..., 1:] != sorted_sets[..., :-1]).all()
    first = torch.bincount(sets[0, :, 0], minlength=5).float() / 20000
    assert torch.allclose(first[:4], torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015)


def test_ndcg_of_ranking_by_hand():
    assert ndcg_of_ranking(["a", "b", "c"], {"b"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_of_ranking(["a", "b", "c"], {"a"}) == 1.0
    assert ndcg_of_ranking(["a", "b", "c"], {"z"}) == 0.0
    # two targets, one found at rank 3: DCG 1/log2(4) over IDCG 1 + 1/log2(3)
    assert ndcg_of_ranking(["a", "b", "c"], {"c", "z"}) == pytest.approx(0.5 / (1 + 1 / math.log2(3)))


def test_dpo_loss_by_hand():
    # one pair: margin (-1 - -2) - (-3 - -2.5) = 1.5, loss log(1 + exp(-beta * margin))
    prefer = torch.tensor([[[False, True], [False, False]]])
    loss, margin = dpo_loss(torch.tensor([[-1.0, -3.0]]), torch.tensor([[-2.0, -2.5]]), prefer, beta=0.5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.75)), rel=1e-6)
    assert margin.tolist() == pytest.approx([1.5])


def test_dpo_loss_averages_each_turns_pairs_then_the_turns():
    policy, ref = torch.randn(2, 3), torch.randn(2, 3)
    rewards = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.2, 0.7]])
    rows, columns, prefer = dpo_pairs(rewards, "all")
    loss, margins = dpo_loss(policy[rows.unsqueeze(1), columns], ref[rows.unsqueeze(1), columns], prefer, beta=0.3)
    per_turn = []
    for b in range(2):  # brute force over ordered pairs with a strictly higher reward
        pair_losses = [-torch.nn.functional.logsigmoid(0.3 * ((policy[b, i] - ref[b, i]) - (policy[b, j] - ref[b, j])))
                       for i in range(3) for j in range(3) if rewards[b, i] > rewards[b, j]]
        per_turn.append(torch.stack(pair_losses).mean())
    assert loss.item() == pytest.approx(torch.stack(per_turn).mean().item(), rel=1e-6)
    assert len(margins) == 3 + 2  # turn 0: 3 pairs; turn 1: 0.7 over each 0.2


def test_dpo_pairs_skip_ties():
    rewards = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.3, 0.3], [0.4, 0.4, 0.0]])
    rows, columns, prefer = dpo_pairs(rewards)
    assert rows.tolist() == [0, 2]
    assert columns[0].tolist() == [1, 0] and columns[1, 1].item() == 2
    assert prefer.tolist() == [[[False, True], [False, False]]] * 2
    rows, columns, prefer = dpo_pairs(rewards, "all")
    assert rows.tolist() == [0, 2] and columns.tolist() == [[0, 1, 2]] * 2
    assert prefer[1].tolist() == [[False, False, True], [False, False, True], [False, False, False]]  # 0.4 = 0.4: no pair
    with pytest.raises(ValueError, match="extremes"):
        dpo_pairs(rewards, "some")


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    assert torch.allclose(adv, torch.tensor([[1.0, -1.0], [0.0, 0.0]]), atol=1e-4)


def test_grpo_loss_clips_and_penalises_kl_by_hand():
    old = torch.zeros(1, 2, 1)
    policy = torch.tensor([[[math.log(1.5)], [math.log(0.5)]]])  # ratios 1.5 and 0.5
    adv = torch.tensor([[1.0, -1.0]])
    # no KL: set 1: min(1.5, 1.2) * 1 = 1.2 ; set 2: min(-0.5, -0.8) = -0.8 ; loss = -(1.2 - 0.8)/2
    assert grpo_loss(policy, old, policy, adv, clip_eps=0.2, kl_beta=0.0).item() == pytest.approx(-0.2, abs=1e-6)
    # KL to a reference at 0: q = -log 1.5 and -log 0.5; exp(q) - q - 1
    q = torch.tensor([-math.log(1.5), -math.log(0.5)])
    kl = (torch.exp(q) - q - 1).mean().item()
    got = grpo_loss(policy, old, old, adv, clip_eps=0.2, kl_beta=0.1).item()
    assert got == pytest.approx(-0.2 + 0.1 * kl, abs=1e-6)


def test_nll_loss_ignores_padding_targets():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    loss = nll_loss(logits, torch.tensor([[0, 2]]), torch.tensor([[True, False]]))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)


def test_nll_loss_is_finite_when_padding_points_at_a_masked_logit():
    # turn_logits masks the padding id 0 with -inf; a turn with fewer targets pads with 0
    logits = torch.log(torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.25, 0.75]])).requires_grad_()
    targets, mask = torch.tensor([[1, 2], [2, 0]]), torch.tensor([[True, True], [True, False]])
    loss = nll_loss(logits, targets, mask)
    assert loss.item() == pytest.approx((2 * math.log(2) - math.log(0.75)) / 3, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def _draw_log_probs_by_brute_force(logits: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """One masked float64 log-softmax per draw: slow and obviously right."""
    out = torch.empty(sets.shape, dtype=torch.float64)
    for b in range(sets.shape[0]):
        for g in range(sets.shape[1]):
            drawn = torch.zeros(logits.shape[1], dtype=torch.bool)
            for j, item in enumerate(sets[b, g].tolist()):
                out[b, g, j] = torch.log_softmax(logits[b].double().masked_fill(drawn, -math.inf), -1)[item]
                drawn[item] = True
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.2, 0.05])
def test_draw_log_probs_match_brute_force_on_peaked_logits(temperature):
    # A peaked retriever at low temperature: the set holds nearly all the mass, so the later draws'
    # denominators are tiny differences of large numbers unless computed without subtraction.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 500, generator=gen) * 3
    logits[:, 0] = -math.inf  # padding, as turn_logits masks it
    scaled = (logits / temperature).requires_grad_()
    sets = gumbel_topk_sets(logits, 20, 4, temperature, torch.Generator().manual_seed(1))
    got = draw_log_probs(scaled, sets)
    expected = _draw_log_probs_by_brute_force(scaled.detach(), sets)
    assert torch.allclose(got.double(), expected, atol=1e-4, rtol=1e-5), (got.double() - expected).abs().max()
    got.sum().backward()
    assert torch.isfinite(scaled.grad[:, 1:]).all() and (scaled.grad[:, 0] == 0).all()


def test_draw_log_probs_of_a_set_holding_every_drawable_film_have_finite_gradients():
    logits = torch.tensor([[-math.inf, 0.5, 2.0, -1.0]], requires_grad=True)
    sets = torch.tensor([[[2, 1, 3]]])
    expected = _draw_log_probs_by_brute_force(logits.detach(), sets)
    got = draw_log_probs(logits, sets)
    assert torch.allclose(got.double(), expected, atol=1e-6) and got[0, 0, -1].item() == 0.0
    got.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_turn_kl_is_exact_and_finite_with_masked_items():
    from training.alignment import turn_kl

    logits = torch.tensor([[-math.inf, 0.0, 1.0, 2.0]], requires_grad=True)
    ref = torch.tensor([[-math.inf, 1.0, 1.0, 0.0]])
    p, q = torch.softmax(logits.detach()[0, 1:], -1), torch.softmax(ref[0, 1:], -1)
    kl = turn_kl(logits, ref)
    assert kl.item() == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-6)
    kl.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0] == 0
    assert turn_kl(ref, ref).item() == pytest.approx(0.0, abs=1e-7)


def test_grpo_loss_can_penalise_a_per_turn_kl_instead_of_the_per_draw_estimator():
    old = torch.zeros(1, 2, 1)
    policy = torch.tensor([[[math.log(1.5)], [math.log(0.5)]]])
    adv = torch.tensor([[1.0, -1.0]])
    got = grpo_loss(policy, old, old, adv, clip_eps=0.2, kl_beta=0.1, kl=torch.tensor([0.3]))
    assert got.item() == pytest.approx(-0.2 + 0.1 * 0.3, abs=1e-6)
