"""RL alignment of the retriever to a frozen generator: candidate-set sampling, rewards, DPO, GRPO.

Notation. For one conversation turn the retriever gives logits ``z`` over the item table (items that
must not be proposed, e.g. padding, are ``-inf``). A candidate set is an ordered draw of ``K``
distinct items ``S = (s_1, ..., s_K)`` without replacement, sampled with the Gumbel top-k trick from
``softmax(z / tau)``: the top-k of ``z / tau + Gumbel noise`` is an exact Plackett-Luce sample.

Set log-probability (Plackett-Luce, the order of the draw)::

    log pi(S) = sum_j [ z_{s_j} - log( sum_{i not in {s_1..s_{j-1}}} exp z_i ) ]

computed exactly: the films not yet drawn at position ``j`` are the films outside the set (one masked
log-sum-exp per set) plus ``s_j..s_K``, so no probability mass is ever subtracted (which loses every
digit at low temperature, where a set holds nearly all the mass).

Reward: the generator ranks the items of ``S``; ``r(S) = NDCG@K`` of that ranking against the turn's
targets (0 when no target is in the set).

DPO (best ``S_w`` vs worst ``S_l`` of a turn, or every pair of its sets with different rewards, each
turn's pairs averaged; ties skipped; ``pi_ref`` = retriever at round start)::

    L_dpo = -log sigmoid( beta * [ (log pi(S_w) - log pi_ref(S_w)) - (log pi(S_l) - log pi_ref(S_l)) ] )

The reward belongs to the set, not to the order it was drawn in (the generator sees its own shuffle), so
each model scores a set through its likeliest order (:func:`likeliest_order`, the films sorted by that
model's scores): a lower bound on log P(set) that is tight when the distribution is peaked, and free of
the draw order's noise, which the drawn order's log-probability adds to every pair.

GRPO (``G`` sets per turn; group-relative advantage; PPO-style clipping per draw position, since a
set's log-probability is a sum over its ``K`` draws; ``pi_old`` = the policy that sampled)::

    A_g   = (r_g - mean(r)) / (std(r) + eps)
    rho_gj = exp(log pi(s_gj | s_g<j) - log pi_old(s_gj | s_g<j))
    L_grpo = -mean_gj min(rho_gj A_g, clip(rho_gj, 1 - eps_clip, 1 + eps_clip) A_g) + beta_kl * KL

with ``KL`` either the non-negative per-draw estimator ``exp(q) - q - 1``, ``q = log pi_ref - log pi``,
or (what a round uses, :func:`turn_kl`) the exact KL between the policy's and the reference's item
distributions ``softmax(z / tau)`` of the turn, i.e. of the first draw: the estimator is unbounded when
a draw the reference liked becomes unlikely (``exp(q)`` of tens of nats), and then outweighs the rest.

Both are combined with the supervised term on the turn's targets: ``L = L_rl + lambda * L_nll``,
``L_nll = -mean_t log softmax(z)[t]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def gumbel_topk_sets(
    logits: torch.Tensor, set_size: int, num_sets: int, temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample ``num_sets`` ordered sets of ``set_size`` distinct items per row of ``logits``.

    ``logits``: [B, N] (``-inf`` for items that must never be drawn). Returns item indices
    [B, num_sets, set_size]. Each set is an exact Plackett-Luce draw from softmax(logits / T).
    """
    batch, n_items = logits.shape
    if set_size > n_items:
        raise ValueError(f"set_size {set_size} exceeds the item table ({n_items})")
    scaled = (logits / temperature).unsqueeze(1).expand(batch, num_sets, n_items)
    uniform = torch.rand(scaled.shape, generator=generator, device=logits.device)
    gumbel = -torch.log(-torch.log(uniform.clamp_(1e-20, 1.0 - 1e-7)))
    return torch.topk(scaled + gumbel, set_size, dim=-1).indices


def draw_log_probs(logits: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Per-draw Plackett-Luce log-probabilities of ordered sets, exact at any temperature.

    ``logits``: [B, N]; ``sets``: [B, G, K] item indices. Returns [B, G, K] with
    ``log pi(s_j | s_<j) = z_{s_j} - log(sum_{i not drawn yet} exp z_i)``.

    The films not drawn before position ``j`` are the films outside the set plus ``s_j..s_K``, so the
    denominator is ``logaddexp(rest, logsumexp(z_{s_j..s_K}))`` with ``rest`` a masked log-sum-exp over
    the films outside the set: no subtraction of masses, so nothing cancels when the set holds almost
    all the probability (low temperature, a peaked retriever). Costs O(G * N) per row.
    """
    batch, groups, k = sets.shape
    chosen = torch.gather(logits, 1, sets.reshape(batch, groups * k)).view(batch, groups, k)
    # Masked films (-inf) and the set's own films sit at the lowest finite value instead of -inf: they add
    # nothing to the sum, and a set holding every drawable film leaves a finite log-sum-exp (no nan gradient).
    floor = torch.finfo(logits.dtype).min
    outside = logits.clamp(min=floor).unsqueeze(1).expand(batch, groups, logits.shape[1]).scatter(-1, sets, floor)
    rest = torch.logsumexp(outside, dim=-1)
    # log-sum-exp of s_j..s_K for every j (a reversed cumulative log-sum-exp)
    still_in_set = torch.logcumsumexp(chosen.flip(-1), dim=-1).flip(-1)
    return chosen - torch.logaddexp(rest.unsqueeze(-1), still_in_set)


def set_log_probs(logits: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """log pi(S) for every set: [B, G] (sum of :func:`draw_log_probs` over the K draws)."""
    return draw_log_probs(logits, sets).sum(-1)


def likeliest_order(logits: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Each set's films sorted by ``logits`` (descending, no gradient): the order in which Plackett-Luce
    draws that set most likely. ``logits``: [B, N]; ``sets``: [B, G, K] -> [B, G, K]."""
    scores = torch.gather(logits.detach(), 1, sets.flatten(1)).view(sets.shape)
    return torch.gather(sets, 2, scores.argsort(-1, descending=True))


def ndcg_of_ranking(ranking: Sequence[str], targets: Sequence[str] | set[str], k: int | None = None) -> float:
    """NDCG@k of one ranked list against a set of relevant items (binary relevance)."""
    targets = set(targets)
    if not targets:
        return 0.0
    ranked = list(ranking)[: k or len(ranking)]
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked) if item in targets)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(targets), len(ranked))))
    return dcg / ideal if ideal > 0 else 0.0


def dpo_loss(
    policy: torch.Tensor, ref: torch.Tensor, prefer: torch.Tensor, beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO over every preferred pair of each turn's scored sets, and the pairs' margins.

    ``policy``, ``ref``: [P, C] set log-probabilities; ``prefer``: [P, C, C], True where set ``i`` is
    preferred to set ``j``; every turn holds at least one pair. Each turn's pairs are averaged, then the
    turns, so a turn weighs the same whatever its number of pairs (one pair per turn: the plain mean).
    """
    log_ratio = policy - ref
    margin = log_ratio.unsqueeze(2) - log_ratio.unsqueeze(1)  # [P, C, C]: set i over set j
    per_pair = -F.logsigmoid(beta * margin) * prefer
    per_turn = per_pair.sum(dim=(1, 2)) / prefer.sum(dim=(1, 2))
    return per_turn.mean(), margin[prefer]


def dpo_pairs(rewards: torch.Tensor, pairs: str = "extremes") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which turns and sets DPO scores, and which of those sets it prefers to which.

    ``rewards``: [B, G] -> ``rows`` [P] (the turns with a strict preference: turns whose rewards all tie
    carry none), ``columns`` [P, C] (the set indices to score) and ``prefer`` [P, C, C] (set ``i`` of the
    row is preferred to set ``j``). ``pairs="extremes"``: the best set against the worst (C = 2);
    ``"all"``: every pair of sets with different rewards, the higher preferred (C = G).
    """
    rows = torch.nonzero(rewards.max(dim=1).values > rewards.min(dim=1).values).squeeze(1)
    kept = rewards[rows]
    if pairs == "extremes":
        columns = torch.stack([kept.argmax(dim=1), kept.argmin(dim=1)], dim=1)
        prefer = torch.tensor([[False, True], [False, False]]).expand(len(rows), 2, 2)
    elif pairs == "all":
        columns = torch.arange(rewards.shape[1]).expand(len(rows), -1)
        prefer = kept.unsqueeze(2) > kept.unsqueeze(1)
    else:
        raise ValueError(f"pairs must be 'extremes' or 'all', not {pairs!r}")
    return rows, columns, prefer


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages: reward minus the group mean over the group std ([B, G] -> [B, G]).

    Groups whose rewards are all equal get zero advantage (no signal).
    """
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    policy_draws: torch.Tensor, old_draws: torch.Tensor, ref_draws: torch.Tensor,
    advantages: torch.Tensor, clip_eps: float = 0.2, kl_beta: float = 0.04, kl: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clipped GRPO objective with a KL penalty, per draw position.

    ``*_draws``: [B, G, K] per-draw log-probabilities (policy, sampling policy, frozen reference);
    ``advantages``: [B, G]; ``kl``: [B] per-turn KL to the reference (:func:`turn_kl`) to penalise
    instead of the per-draw estimator.
    """
    ratio = torch.exp(policy_draws - old_draws)
    adv = advantages.unsqueeze(-1)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    if kl is not None:
        return -surrogate.mean() + kl_beta * kl.mean()
    q = ref_draws - policy_draws
    return (-surrogate + kl_beta * (torch.exp(q) - q - 1)).mean()


def turn_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || softmax(ref_logits)) per row, exact over the item table ([B, N] -> [B]).

    Items masked (``-inf``) in both carry no mass and no gradient.
    """
    log_p, log_q = torch.log_softmax(logits, dim=-1), torch.log_softmax(ref_logits, dim=-1)
    p = log_p.exp()
    # where() before the product: a masked item's (-inf) - (-inf) = nan must not reach the gradient
    gap = torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))
    return (p * gap).sum(-1)


def nll_loss(logits: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the turns' targets.

    ``logits``: [B, N]; ``targets``: [B, T] item indices (padded); ``target_mask``: [B, T] bool.
    """
    log_probs = torch.log_softmax(logits, dim=-1)
    # Padded slots may point at a -inf logit (padding id 0 is masked): zero them, never multiply (-inf * 0 = nan).
    picked = torch.gather(log_probs, 1, targets).masked_fill(~target_mask, 0.0)
    mask = target_mask.to(picked.dtype)
    return -picked.sum() / mask.sum().clamp(min=1.0)
