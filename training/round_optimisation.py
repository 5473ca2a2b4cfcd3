"""A round's optimisation: ``L = L_rl + lambda * L_nll`` per batch of turns (DPO, GRPO or the nll control,
see :mod:`training.alignment`), epochs on rollouts drawn by the current retriever, resumable by epoch."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from corpus_build.atomic import torch_save_atomic
from corpus_build.storage import local_copy
from training.alignment_turns import AlignmentTurn, turn_logits
from training.layout import last_checkpoint, rollouts_dir, round_epochs_dir
from training.rollouts import MoviesLookup, collect_rollouts

if TYPE_CHECKING:
    from training.alignment_round import RoundConfig


def _rollout_tensors(rollouts: pl.DataFrame, turns: Sequence[AlignmentTurn], config: RoundConfig):
    """Sets [T, G, K], sampler per-draw log-probs [T, G, K] and learning rewards [T, G], aligned with ``turns``.

    The learning reward is the reward, minus the retriever-order reward when the baseline is on.
    """
    import torch

    by_turn = (rollouts.sort(["turn_key", "set_index"]).group_by("turn_key", maintain_order=True)
               .agg("items", "old_log_probs", "reward", "retriever_order_reward"))
    lookup = {row["turn_key"]: row for row in by_turn.iter_rows(named=True)}
    rows = [lookup[t.key] for t in turns]
    sets = torch.tensor([r["items"] for r in rows], dtype=torch.long)
    old = torch.tensor([r["old_log_probs"] for r in rows], dtype=torch.float32)
    rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float32)
    if config.reward_baseline == "retriever":
        rewards = rewards - torch.tensor([r["retriever_order_reward"] for r in rows], dtype=torch.float32)
    if sets.shape[1] != config.num_sets:
        raise ValueError(f"rollouts hold {sets.shape[1]} sets per turn, config asks for {config.num_sets}")
    return sets, old, rewards


def _target_tensors(turns: Sequence[AlignmentTurn]):
    import torch

    width = max(len(t.targets) for t in turns)
    targets = torch.zeros(len(turns), width, dtype=torch.long)
    mask = torch.zeros(len(turns), width, dtype=torch.bool)
    for row, turn in enumerate(turns):
        targets[row, : len(turn.targets)] = torch.tensor(turn.targets)
        mask[row, : len(turn.targets)] = True
    return targets, mask


def batch_loss(model, reference, turns, sets, old_draws, rewards, config: RoundConfig):
    """(L = L_rl + lambda * L_nll, statistics) for one batch of turns with their rollouts.

    Statistics (floats): ``rl``, ``nll``; ``kl``, the mean KL of the turns' item distributions at the
    draw temperature to the reference's (:func:`training.alignment.turn_kl`, also GRPO's penalty);
    ``clip_fraction``, the share of draws whose ratio to the sampler is outside ``1 +- grpo_clip``, and
    ``max_ratio_deviation``, ``max |ratio - 1|``, over the sets in the loss (GRPO: all; DPO: each turn's
    pairs' sets; the nll control: the first set of each turn); for DPO ``dpo_margin`` (mean) and
    ``max_abs_dpo_margin``. Only the sets the loss needs are scored against the whole item table (it is
    the costly part of a step).
    """
    import torch

    from training.alignment import (
        dpo_loss,
        dpo_pairs,
        draw_log_probs,
        group_advantages,
        grpo_loss,
        likeliest_order,
        nll_loss,
        turn_kl,
    )

    logits = turn_logits(model, turns, config.max_len)
    targets, mask = _target_tensors(turns)
    nll = nll_loss(logits, targets.to(logits.device), mask.to(logits.device))
    with torch.no_grad():
        ref_scaled = turn_logits(reference, turns, config.max_len) / config.temperature
    scaled = logits / config.temperature
    kl = turn_kl(scaled, ref_scaled)
    stats = {"kl": float(kl.detach().mean())}
    if config.objective == "nll":  # the control run: no RL term; its drift measured on one set per turn
        with torch.no_grad():
            stats |= _drift(draw_log_probs(scaled, sets[:, :1]), old_draws[:, :1], config.grpo_clip)
        rl = logits.new_zeros(())
    elif config.objective == "dpo":
        rows, columns, prefer = dpo_pairs(rewards, config.dpo_pairs)
        if len(rows):
            scored = sets[rows.unsqueeze(1), columns]  # [P, C, K], as drawn
            policy_sets, ref_sets = scored, scored
            if config.dpo_order == "likeliest":
                policy_sets, ref_sets = likeliest_order(scaled[rows], scored), likeliest_order(ref_scaled[rows], scored)
            policy = draw_log_probs(scaled[rows], policy_sets).sum(-1)
            with torch.no_grad():
                ref = draw_log_probs(ref_scaled[rows], ref_sets).sum(-1)
                stats |= _drift(draw_log_probs(scaled[rows], scored), old_draws[rows.unsqueeze(1), columns],
                                config.grpo_clip)
            rl, margin = dpo_loss(policy, ref, prefer, config.dpo_beta)
            margin = margin.detach()
            stats |= {"dpo_margin": float(margin.mean()), "max_abs_dpo_margin": float(margin.abs().max())}
        else:
            rl = logits.new_zeros(())
    else:
        policy_draws = draw_log_probs(scaled, sets)
        stats |= _drift(policy_draws.detach(), old_draws, config.grpo_clip)
        # the per-turn KL is the penalty, so the reference's per-draw log-probabilities are not needed
        rl = grpo_loss(policy_draws, old_draws, policy_draws.detach(), group_advantages(rewards),
                       config.grpo_clip, config.grpo_kl, kl=kl)
    stats |= {"rl": float(rl.detach()), "nll": float(nll.detach())}
    return rl + config.nll_weight * nll, stats


def _drift(policy_draws, old_draws, clip: float) -> dict[str, float]:
    """How far the policy has moved from the sampler of the rollouts: clipped share and largest ratio."""
    import torch

    ratio = torch.exp(policy_draws - old_draws)
    return {
        "clip_fraction": float(((ratio - 1).abs() > clip).float().mean()),
        "max_ratio_deviation": float((ratio - 1).abs().max()),
    }


class EpochStats:
    """The per-step statistics of an epoch: means, maxima, and the first step's maxima (which show whether
    a round starts on-policy: ratio 1, DPO margin 0)."""

    MEAN = ("loss", "rl", "nll", "kl", "clip_fraction", "dpo_margin")
    MAX = ("max_ratio_deviation", "max_abs_dpo_margin")

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.maxima: dict[str, float] = {}
        self.first: dict[str, float] = {}

    def add(self, stats: Mapping[str, float]) -> None:
        if not self.first:
            self.first = {f"first_step_{k}": stats[k] for k in self.MAX if k in stats}
        for key, value in stats.items():
            if key in self.MAX:
                self.maxima[key] = max(self.maxima.get(key, 0.0), value)
            else:
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1

    def summary(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.MEAN if k in self.sums}
        return {**means, **self.maxima, **self.first}


def optimise_steps(
    model, reference, turns, sets, old_draws, rewards, optimizer, config: RoundConfig, order, stats: EpochStats,
) -> None:
    """One optimisation step per ``batch_size`` turns, visiting ``turns`` (with their rollouts) in ``order``."""
    import torch

    model.eval()  # no dropout: the policy is the same function as the sampler and the reference
    for start in range(0, len(order), config.batch_size):
        idx = order[start:start + config.batch_size]
        batch = [turns[i] for i in idx]
        loss, step = batch_loss(model, reference, batch, sets[idx], old_draws[idx], rewards[idx], config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        stats.add(step | {"loss": float(loss.detach())})


def epoch_order(config: RoundConfig, epoch: int, count: int) -> np.ndarray:
    """The seeded order an epoch visits the training turns in."""
    return np.random.default_rng([config.seed, epoch]).permutation(count)


def optimise_epoch(
    model, reference, turns, sets, old_draws, rewards, optimizer, config: RoundConfig, epoch: int,
) -> dict:
    """One pass over ``turns`` in a seeded order; returns the epoch's mean (and max) statistics."""
    stats = EpochStats()
    optimise_steps(model, reference, turns, sets, old_draws, rewards, optimizer, config,
                   epoch_order(config, epoch, len(turns)), stats)
    return stats.summary()


def _save_epoch(round_dir: Path, model, optimizer, curve: list[dict]) -> None:
    torch_save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "curve": curve},
                      last_checkpoint(round_epochs_dir(round_dir)))


def _resume_epoch(round_dir: Path, model, optimizer) -> list[dict]:
    """The loss curve of the epochs already done (their weights and optimiser state loaded), else []."""
    import torch

    path = last_checkpoint(round_epochs_dir(round_dir))
    if not path.is_file():
        return []
    state = torch.load(local_copy(path), map_location=next(model.parameters()).device, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["curve"]


def _epoch_rollouts(model, turns, item_ids, generator, movies_for, config: RoundConfig, round_dir: Path,
                    log, epoch: int, kept: dict):
    """The rollouts an epoch learns from, as (rollout frame, its turns, their tensors, visiting order) one after
    another: drawn lazily, so with ``rollout_steps`` each chunk is drawn by the policy the previous chunk's
    steps left. Every ``rollout_every`` epochs instead, one rollout of every turn, ``kept`` for the next epochs."""
    device = next(model.parameters()).device
    order = epoch_order(config, epoch, len(turns))

    def tensors(frame, chunk_turns):
        return [t.to(device) for t in _rollout_tensors(frame, chunk_turns, config)]

    if config.rollout_steps is None:
        phase = epoch // config.rollout_every
        if phase not in kept:
            kept.clear()
            frame = collect_rollouts(model, turns, item_ids, generator, movies_for, config, rollouts_dir(round_dir),
                                     log, phase)
            kept[phase] = (frame, tensors(frame, turns))
        frame, epoch_tensors = kept[phase]
        yield frame, turns, epoch_tensors, order
        return
    span = config.rollout_steps * config.batch_size
    for chunk in range(math.ceil(len(order) / span)):
        chunk_turns = [turns[i] for i in order[chunk * span:(chunk + 1) * span]]
        frame = collect_rollouts(model, chunk_turns, item_ids, generator, movies_for, config, rollouts_dir(round_dir),
                                 lambda _message: None, epoch, chunk)
        yield frame, chunk_turns, tensors(frame, chunk_turns), np.arange(len(chunk_turns))


def train_round(
    model, reference, turns: Sequence[AlignmentTurn], item_ids: Sequence[str], generator, movies_for: MoviesLookup,
    config: RoundConfig, round_dir: Path, log: Callable[[str], None] = print,
) -> list[dict]:
    """Phase 2: optimisation epochs on rollouts drawn by the current retriever (every ``rollout_steps`` steps
    or every ``rollout_every`` epochs); resumes from the last finished epoch. Returns the curve (one row per
    epoch)."""
    import torch

    from training.lrurec import parameter_groups

    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
    curve = _resume_epoch(round_dir, model, optimizer)
    if curve:
        log(f"resuming after epoch {len(curve)} of {config.epochs}")
    kept: dict = {}
    for epoch in range(len(curve), config.epochs):
        stats, frames = EpochStats(), []
        # Nothing in an epoch draws from torch's global generator today; fork it anyway so a rerun gives
        # the same retriever whatever a layer does, without touching the caller's random state.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed + epoch)
            for frame, chunk_turns, tensors, order in _epoch_rollouts(
                    model, turns, item_ids, generator, movies_for, config, round_dir, log, epoch, kept):
                optimise_steps(model, reference, chunk_turns, *tensors, optimizer, config, order, stats)
                frames.append(frame)
        drawn = pl.concat(frames)
        row = {"epoch": epoch + 1, "rollout": int(drawn["rollout"][0]), "rollout_reward": float(drawn["reward"].mean()),
               "rollout_sent": float(drawn["generator_asked"].mean()), **stats.summary()}
        curve.append(row)
        _save_epoch(round_dir, model, optimizer, curve)
        log(f"epoch {epoch + 1}: " + " ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float)))
    model.eval()
    return curve
