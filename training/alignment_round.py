"""One RL alignment round: roll out candidate sets, let the frozen generator rank them, update the retriever.

A round runs these phases, so that a generator outage never loses work and re-running a finished round
costs no LLM calls:

1. **Gate before**: pipeline NDCG@10 (retriever top-K -> generator ranking) of the round-start
   retriever on the gate turns.
2. **Rollout and optimisation, on-policy**: the *current* retriever draws ``G`` candidate sets of ``K``
   films per training turn by Gumbel top-k from its scores (films already mentioned are never proposed),
   either every ``rollout_steps`` optimisation steps for the turns of those steps, or every
   ``rollout_every`` epochs for every turn; the generator ranks each set; the reward is NDCG@K of its
   ranking against the turn's targets. Each set is stored with the sampler's per-draw log-probabilities
   (``pi_old`` of GRPO) and the NDCG@K of the same set in the retriever's own order (the optional
   baseline: what the generator adds). Then DPO or GRPO (see :mod:`training.alignment`) plus the NLL of
   the targets, ``L = L_rl + lambda * L_nll``, on those turns; the round-start retriever is the reference
   (KL of GRPO, DPO's ``pi_ref``). Only the retriever changes.
3. **Gate after**: the same measurement with the updated retriever, so the promotion gate
   (:mod:`training.promotion`) can compare the round with its parent turn by turn, plus the reward of
   fresh draws before and after on held-out turns.

Resume: rollouts are written batch by batch (``rollouts/part-pNNN[-cNNNN]-NNNNN.parquet``: the draw
``p``, the chunk of steps ``c`` when drawing every few steps, the batch) and the retriever and optimiser
after each epoch (``epochs/last.pt``); a rerun loads the last epoch, replays it from the stored rollouts
where they exist, and draws are seeded per (draw, chunk, batch), so it asks the generator the same prompts
(answered from its response cache).

The generator sees each set in a seeded shuffled order that depends on the turn and on which films the
set holds, not on the order they were drawn in: a generator with a position bias cannot reward the
retriever's own order, and the same set for the same turn is always the same prompt (cache hits).

The policy runs without dropout throughout the round (as the sampler and the reference do): with
dropout the policy would be another, noisy function, so GRPO ratios would not start at 1 nor DPO
margins at 0, and the clipping and the KL would act on noise.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from corpus_build.atomic import torch_save_atomic, write_json_atomic, write_parquet_atomic
from corpus_build.storage import ensure_folder, local_copy, read_parquet, remove_tree
from training.layout import (
    exported_checkpoint,
    finished_round,
    last_checkpoint,
    rollouts_dir,
    round_epochs_dir,
    round_record_path,
)

MoviesLookup = Callable[[Sequence[str]], Mapping[str, Mapping]]
GATE_SHUFFLE_SEED = 0  # every round shows a retriever's gate candidates the same way (cache hits across rounds)


class GeneratorUnavailable(RuntimeError):
    """The generator failed during a rollout batch; finished batches are kept and the round resumes."""


class OverBudget(ValueError):
    """A round would ask the generator for more rankings than ``max_generator_requests`` allows."""


@dataclass
class RoundConfig:
    # "nll": no RL term, only lambda * L_nll on the same turns: the control run that shows what DPO/GRPO add
    # beyond continued supervised training.
    objective: Literal["dpo", "grpo", "nll"] = "grpo"
    num_sets: int = 4  # G: candidate sets per turn
    set_size: int = 20  # K: films per set (the generator's candidate list)
    temperature: float = 1.0  # sampling temperature of the Gumbel top-k draws
    dpo_beta: float = 0.1
    # DPO compares sets (the generator never sees the draw order): "likeliest" scores each set through its
    # likeliest order (its films sorted by the model's own scores); "drawn": the order it was drawn in
    dpo_order: Literal["likeliest", "drawn"] = "likeliest"
    # DPO's pairs per turn: "extremes", its best set against its worst; "all", every pair of its G sets with
    # different rewards (each turn's pairs averaged): more of what the generator's rankings say per turn
    dpo_pairs: Literal["extremes", "all"] = "extremes"
    grpo_clip: float = 0.2
    grpo_kl: float = 0.04
    nll_weight: float = 1.0  # lambda in L = L_rl + lambda * L_nll
    lr: float = 1e-4
    weight_decay: float = 0.01
    epochs: int = 2
    # fresh rollouts with the current retriever every this many epochs (1: on-policy, every epoch; >= epochs:
    # one rollout by the round-start retriever for the whole round). Each rollout costs up to
    # train turns x G generator calls.
    rollout_every: int = 1
    # fresh rollouts every this many optimisation steps instead, each for the turns of those steps only: every
    # turn is still drawn once per epoch (the generator cost of rollout_every=1), and every step learns from
    # sets drawn by the policy it updates (ratios of 1, nothing clipped). None: every rollout_every epochs
    rollout_steps: int | None = None
    # "retriever": the learning signal is the reward minus NDCG@K of the same set in the retriever's order
    # (what the generator's ranking adds); "none": the plain reward
    reward_baseline: Literal["none", "retriever"] = "none"
    shuffle_candidates: bool = True  # show the generator each set in a seeded order, not the retriever's
    # refuse to start a round whose generator requests could exceed this (None: no limit)
    max_generator_requests: int | None = None
    batch_size: int = 32
    rollout_batch: int = 64
    max_len: int = 50
    eval_k: int = 10
    # held-out turns whose fresh draws measure the reward before/after (None: every gate turn); each
    # costs G generator calls per retriever, so an LLM-backed round may want fewer than the gate has
    probe_turns: int | None = None
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.probe_turns is not None and self.probe_turns < 1:
            raise ValueError("probe_turns must be >= 1 (or None for every gate turn)")
        if self.objective == "nll" and self.nll_weight <= 0:
            raise ValueError("objective 'nll' trains on the NLL term alone: nll_weight must be > 0")
        if self.rollout_every < 1:
            raise ValueError("rollout_every must be >= 1 (epochs between fresh rollouts)")
        if self.rollout_steps is not None and (self.rollout_steps < 1 or self.rollout_every != 1):
            raise ValueError("rollout_steps must be >= 1 (optimisation steps between fresh rollouts), with "
                             "rollout_every left at 1: it draws within every epoch")
        if self.dpo_pairs not in ("extremes", "all"):
            raise ValueError(f"dpo_pairs must be 'extremes' or 'all', not {self.dpo_pairs!r}")
        if self.reward_baseline not in ("none", "retriever"):
            raise ValueError(f"reward_baseline must be 'none' or 'retriever', not {self.reward_baseline!r}")

    @property
    def rollout_phases(self) -> int:
        """How many times a round draws fresh sets for each training turn."""
        return self.epochs if self.rollout_steps else math.ceil(self.epochs / self.rollout_every)

    def planned_requests(self, train_turns: int, gate_turns: int, probe_turns: int) -> int:
        """The most generator requests a round can make (sets holding no target are never sent, so
        the real count is lower): every rollout, the gate before and after, the probes before and after."""
        return self.rollout_phases * train_turns * self.num_sets + 2 * gate_turns + 2 * probe_turns * self.num_sets

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AlignmentTurn:
    key: str  # dataset/dialog_id/turn_index
    context: tuple  # ({"role", "text"}, ...)
    history: list[int]  # item indices of films mentioned before, in order
    targets: list[int]  # item indices of the films recommended in this turn
    text: np.ndarray | None = None  # the conversation's vector (dialogue-aware retrievers only)


@dataclass
class RoundResult:
    rollouts: int  # candidate sets drawn over the round (every phase)
    rollouts_sent: int  # of which the generator ranked (the others held no target)
    rollout_phases: int
    rollout_reward_mean: float  # mean reward of the first rollout (train turns; round-start retriever unless
    # drawn every few steps)
    reward_mean_before: float
    reward_std_before: float
    reward_mean_after: float
    reward_std_after: float
    gate_ndcg_before: float
    gate_ndcg_after: float
    gate_per_turn_before: list[float] = field(default_factory=list)
    gate_per_turn_after: list[float] = field(default_factory=list)
    loss_curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------------- turns


def build_turns(
    turns: pl.DataFrame, item_index: Mapping[str, int],
    context_vectors: Callable[[Sequence], np.ndarray] | None = None,
) -> list[AlignmentTurn]:
    """Turns (CONVERSATION_TURNS_SCHEMA) as item indices; turns with no known target are dropped.

    ``context_vectors`` (contexts -> [n, dim], e.g. ``Retriever.context_vectors``) fills each turn's
    ``text`` for a retriever that reads the conversation."""
    out = []
    for row in turns.iter_rows(named=True):
        history = [item_index[m] for m in row["history_movie_ids"] if m in item_index]
        targets = [item_index[m] for m in row["target_movie_ids"] if m in item_index]
        targets = [t for t in dict.fromkeys(targets) if t not in set(history)]
        if targets:
            key = f"{row['dataset']}/{row['dialog_id']}/{row['turn_index']}"
            out.append(AlignmentTurn(key, tuple(row["context"]), history, targets))
    if context_vectors is not None and out:
        for turn, vector in zip(out, context_vectors([t.context for t in out]), strict=True):
            turn.text = vector
    return out


def history_tokens(turns: Sequence[AlignmentTurn], max_len: int):
    """Left-padded item-index histories [B, L] (0 = padding; at least one column)."""
    import torch

    from training.sequences import left_pad

    length = max(1, min(max_len, max((len(t.history) for t in turns), default=1)))
    return torch.from_numpy(left_pad([t.history for t in turns], length))


def turn_logits(model, turns: Sequence[AlignmentTurn], max_len: int):
    """Retriever logits [B, N+1] for each turn's next film; padding and mentioned films are -inf."""
    import torch

    device = next(model.parameters()).device
    tokens = history_tokens(turns, max_len).to(device)
    text = None
    if getattr(model, "reads_dialogue", False):
        if any(t.text is None for t in turns):
            raise ValueError("a dialogue-aware retriever needs each turn's text vector (build_turns context_vectors)")
        text = torch.from_numpy(np.stack([t.text for t in turns])).to(device)
    logits = model.logits(model.query(tokens, text)).float()
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[:, 0] = True
    for row, turn in enumerate(turns):
        if turn.history:
            mask[row, turn.history] = True
    return logits.masked_fill(mask, -math.inf)


# ----------------------------------------------------------------------------------- rollout


def _target_ids(turn: AlignmentTurn, item_ids: Sequence[str]) -> set[str]:
    return {item_ids[t] for t in turn.targets}


def shown_order(ids: Sequence[str], turn_key: str, seed: int) -> list[str]:
    """The order the generator sees a set in: a permutation seeded by ``seed``, the turn and the films
    of the set (not their order), so one set of one turn is always shown the same way."""
    films = sorted(ids)
    digest = hashlib.sha256(json.dumps([seed, turn_key, films]).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return [films[i] for i in rng.permutation(len(films))]


def _rank_sets(generator, turns, sets_ids, movies_for: MoviesLookup, item_ids: Sequence[str], shuffle_seed: int | None):
    """The generator's ranking of every (turn, set) as [turn][set] of (ranking, asked, shown); raises on failure.

    ``shown`` is the order the generator saw (shuffled with ``shuffle_seed``; None: as given). Sets
    holding none of the turn's targets are not sent (``asked`` False, ranking = the set as given): their
    reward is 0 in any order, so asking would only spend LLM calls (see ``Generator.rank_scored``).
    """
    from training.generator.base import RankRequest

    requests, targets, shown = [], [], []
    for turn, sets in zip(turns, sets_ids):
        for ids in sets:
            order = list(ids) if shuffle_seed is None else shown_order(ids, turn.key, shuffle_seed)
            requests.append(RankRequest(turn.context, tuple(order), movies_for(order)))
            targets.append(_target_ids(turn, item_ids))
            shown.append(order)
    results = generator.rank_scored(requests, targets)
    failed = [r for r in results if r.source == "fallback"]
    if failed:
        raise GeneratorUnavailable(f"{len(failed)} of {len(results)} rankings failed: {failed[0].error}")
    per_turn = len(sets_ids[0]) if sets_ids else 0
    given = [list(ids) for sets in sets_ids for ids in sets]
    answers = [
        (list(r.ranking) if r.source != "skipped" else ids, r.source != "skipped", order)
        for r, ids, order in zip(results, given, shown)
    ]
    return [answers[i * per_turn:(i + 1) * per_turn] for i in range(len(turns))]


def _part_path(rollout_dir: Path, phase: int, batch_index: int, chunk: int | None = None) -> Path:
    steps = "" if chunk is None else f"-c{chunk:04d}"
    return rollout_dir / f"part-p{phase:03d}{steps}-{batch_index:05d}.parquet"


def collect_rollouts(
    model, turns: Sequence[AlignmentTurn], item_ids: Sequence[str], generator, movies_for: MoviesLookup,
    config: RoundConfig, rollout_dir: Path, log: Callable[[str], None] = print, phase: int = 0,
    chunk: int | None = None,
) -> pl.DataFrame:
    """Sample G sets per turn with ``model``, rank them, store rewards; resumable batch by batch.

    ``phase``: which draw of the turns this is (the ``rollout`` column, 0-based); ``chunk``: which chunk of
    an epoch's steps, when rollouts are drawn every few steps.

    Each set keeps the sampler's per-draw log-probabilities at the round's temperature (``old_log_probs``,
    GRPO's ``pi_old``) and ``retriever_order_reward``, NDCG@K of the set sorted by the sampler's scores.
    """
    import torch

    from training.alignment import draw_log_probs, gumbel_topk_sets, likeliest_order, ndcg_of_ranking

    ensure_folder(rollout_dir)
    model.eval()
    batch_count = math.ceil(len(turns) / config.rollout_batch)
    shuffle_seed = config.seed if config.shuffle_candidates else None
    for batch_index in range(batch_count):
        part = _part_path(rollout_dir, phase, batch_index, chunk)
        if part.is_file():
            continue
        batch = turns[batch_index * config.rollout_batch:(batch_index + 1) * config.rollout_batch]
        with torch.no_grad():
            logits = turn_logits(model, batch, config.max_len)
            draws = torch.Generator(device=logits.device).manual_seed(
                config.seed * 100_003 + phase * 10_007 + (chunk or 0) * 65_537 + batch_index)
            sets = gumbel_topk_sets(logits, config.set_size, config.num_sets, config.temperature, draws)
            old = draw_log_probs(logits / config.temperature, sets).cpu().tolist()
            retriever_order = likeliest_order(logits, sets).cpu().tolist()
        sets = sets.cpu()
        sets_ids = [[[item_ids[i] for i in s] for s in turn_sets.tolist()] for turn_sets in sets]
        answers = _rank_sets(generator, batch, sets_ids, movies_for, item_ids, shuffle_seed)
        rows = []
        for b, (turn, turn_sets, turn_ids, turn_answers) in enumerate(zip(batch, sets.tolist(), sets_ids, answers)):
            target_ids = _target_ids(turn, item_ids)
            for g, (items, ids, (ranking, asked, shown)) in enumerate(zip(turn_sets, turn_ids, turn_answers)):
                rows.append({
                    "rollout": phase + 1, "turn_key": turn.key, "set_index": g, "items": items, "item_ids": ids,
                    "shown": shown, "ranking": ranking, "generator_asked": asked,
                    "reward": ndcg_of_ranking(ranking, target_ids, config.set_size),
                    "retriever_order_reward": ndcg_of_ranking(
                        [item_ids[i] for i in retriever_order[b][g]], target_ids, config.set_size),
                    "old_log_probs": old[b][g],
                })
        write_parquet_atomic(pl.DataFrame(rows), part)
        log(f"rollout batch {batch_index + 1}/{batch_count} done (rollout {phase + 1}/{config.rollout_phases})")
    return pl.concat([read_parquet(_part_path(rollout_dir, phase, b, chunk)) for b in range(batch_count)])


def stored_rollouts(rollout_dir: Path) -> pl.DataFrame | None:
    """Every rollout written so far (all phases), or None when there is none."""
    parts = sorted(rollout_dir.glob("part-p*.parquet"))
    return pl.concat([read_parquet(p) for p in parts]) if parts else None


# ----------------------------------------------------------------------------------- optimisation


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


# ----------------------------------------------------------------------------------- measurement


def retrieve_top_k(model, turns: Sequence[AlignmentTurn], item_ids: Sequence[str], k: int, batch: int = 256):
    """The retriever's top-k films (movie ids) per turn, mentioned films excluded."""
    import torch

    model.eval()
    out: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, len(turns), batch):
            chunk = turns[start:start + batch]
            top = torch.topk(turn_logits(model, chunk, 10_000), k, dim=-1).indices.cpu().tolist()
            out.extend([[item_ids[i] for i in row] for row in top])
    return out


def pipeline_ndcg(
    model, turns, item_ids, generator, movies_for: MoviesLookup, set_size: int, k: int = 10,
    shuffle_seed: int | None = GATE_SHUFFLE_SEED,
) -> np.ndarray:
    """Per-turn NDCG@k of retriever top-``set_size`` candidates re-ranked by the generator (shown in a
    seeded shuffled order unless ``shuffle_seed`` is None)."""
    from training.alignment import ndcg_of_ranking

    candidates = retrieve_top_k(model, turns, item_ids, set_size)
    answers = _rank_sets(generator, turns, [[c] for c in candidates], movies_for, item_ids, shuffle_seed)
    return np.array([ndcg_of_ranking(a[0][0], _target_ids(turn, item_ids), k) for turn, a in zip(turns, answers)])


def sampled_rewards(model, turns, item_ids, generator, movies_for, config: RoundConfig, seed: int) -> np.ndarray:
    """Rewards of freshly drawn sets (G per turn) under ``model``: the round's 'after' statistics."""
    import torch

    from training.alignment import gumbel_topk_sets, ndcg_of_ranking

    model.eval()
    with torch.no_grad():
        logits = turn_logits(model, turns, config.max_len)
    draws = torch.Generator(device=logits.device).manual_seed(seed)
    sets = gumbel_topk_sets(logits, config.set_size, config.num_sets, config.temperature, draws).cpu().tolist()
    sets_ids = [[[item_ids[i] for i in s] for s in turn_sets] for turn_sets in sets]
    shuffle_seed = config.seed if config.shuffle_candidates else None
    answers = _rank_sets(generator, turns, sets_ids, movies_for, item_ids, shuffle_seed)
    return np.array([
        ndcg_of_ranking(ranking, _target_ids(turn, item_ids), config.set_size)
        for turn, turn_answers in zip(turns, answers) for ranking, _, _ in turn_answers
    ])


# ----------------------------------------------------------------------------------- the round


def run_round(
    model, item_ids: Sequence[str], train_turns: Sequence[AlignmentTurn], gate_turns: Sequence[AlignmentTurn],
    generator, movies_for: MoviesLookup, config: RoundConfig, round_dir: Path,
    log: Callable[[str], None] = print,
) -> RoundResult:
    """Run (or resume) one round on ``model`` in place; rollouts and the last epoch are kept under ``round_dir``."""
    import copy

    if not train_turns:
        raise ValueError("no training turn has a target in the retriever's item table")
    probe_turns = (list(gate_turns) or list(train_turns[: config.rollout_batch]))[: config.probe_turns]
    planned = config.planned_requests(len(train_turns), len(gate_turns), len(probe_turns))
    if config.max_generator_requests is not None and planned > config.max_generator_requests:
        raise OverBudget(
            f"this round could ask the generator for {planned:,} rankings ({config.rollout_phases} rollouts x "
            f"{len(train_turns)} turns x {config.num_sets} sets, gate and probes), over the limit of "
            f"{config.max_generator_requests:,}: lower the training turns, the sets per turn or the epochs "
            "per rollout, or raise the limit")
    log(f"{config.rollout_phases} rollouts of {len(train_turns)} turns x {config.num_sets} sets: "
        f"at most {planned:,} generator requests (sets without a target are not sent)")
    started = time.monotonic()
    reference = copy.deepcopy(model).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    model.eval()
    log(f"gate before: ranking the top {config.set_size} of {len(gate_turns)} gate turns")
    gate_before = pipeline_ndcg(reference, gate_turns, item_ids, generator, movies_for, config.set_size, config.eval_k)
    log(f"gate NDCG@{config.eval_k} before: {gate_before.mean() if len(gate_before) else 0.0:.4f}")
    curve = train_round(model, reference, train_turns, item_ids, generator, movies_for, config, round_dir, log)
    # Reward before/after: fresh draws on the same held-out turns with the same noise.
    probe = (probe_turns, item_ids, generator, movies_for, config, config.seed + 1)
    log(f"rewards before/after on {len(probe_turns)} held-out turns, then the gate after")
    rewards_before, rewards_after = sampled_rewards(reference, *probe), sampled_rewards(model, *probe)
    gate_after = pipeline_ndcg(model, gate_turns, item_ids, generator, movies_for, config.set_size, config.eval_k)
    log(f"gate NDCG@{config.eval_k} after: {gate_after.mean() if len(gate_after) else 0.0:.4f}")
    rollouts = stored_rollouts(rollouts_dir(round_dir))
    return RoundResult(
        rollouts=rollouts.height, rollouts_sent=int(rollouts["generator_asked"].sum()),
        rollout_phases=int(rollouts["rollout"].max()),
        rollout_reward_mean=float(rollouts.filter(pl.col("rollout") == 1)["reward"].mean()),
        reward_mean_before=float(rewards_before.mean()), reward_std_before=float(rewards_before.std()),
        reward_mean_after=float(rewards_after.mean()), reward_std_after=float(rewards_after.std()),
        gate_ndcg_before=float(gate_before.mean()) if len(gate_before) else 0.0,
        gate_ndcg_after=float(gate_after.mean()) if len(gate_after) else 0.0,
        gate_per_turn_before=gate_before.tolist(), gate_per_turn_after=gate_after.tolist(),
        loss_curve=curve, seconds=time.monotonic() - started,
    )


# ----------------------------------------------------------------------------------- from the tables

def weights_finite(model) -> bool:
    """True when every parameter of ``model`` is finite (no nan/inf from a diverged update)."""
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def align_from_tables(
    round_dir: Path, parent_checkpoint: Path, parent_round: str, turns_path: Path, corpus_path: Path, generator,
    config: RoundConfig, datasets: Sequence[str], folds, max_turns: int, gate=None, device: str = "cpu",
    log: Callable[[str], None] = print, text_cache_dir: Path | None = None,
) -> dict:
    """One round from the pipeline's tables: parent retriever -> aligned retriever in ``round_dir``.

    Training turns are the RL fold of ``folds`` (:class:`training.turn_pools.Folds`), the gate turns its
    gate slice. A finished round is returned as recorded, without a single generator call. Otherwise
    the round runs (resuming its rollouts and epochs), writes ``retriever.pt``, then ``round.json`` (the
    finished marker) with its parent, statistics and the verdict of ``gate``
    (:class:`training.promotion.GateRule`; default: its defaults), whose ``gate_reason`` says why.
    A dialogue-aware parent embeds the turns' conversations once (kept under ``text_cache_dir``).
    """
    from training.promotion import GateRule, gate_verdict
    from training.retriever import Retriever, export_retriever
    from training.turn_pools import CorpusLookup, alignment_pools

    if (record := finished_round(round_dir)) is not None:
        log(f"{round_dir.name} already finished: reusing its record (no generator calls)")
        return record
    gate = gate or GateRule()
    retriever = Retriever.from_checkpoint(parent_checkpoint, device=device, text_cache_dir=text_cache_dir)
    item_ids = ["<pad>", *retriever.movie_ids]
    turns = read_parquet(turns_path)
    train_frame, gate_frame = alignment_pools(turns, datasets, folds, max_turns, config.seed)
    context_vectors = retriever.context_vectors if retriever.reads_dialogue else None
    train_turns = build_turns(train_frame, retriever.vocab.index, context_vectors)
    gate_turns = build_turns(gate_frame, retriever.vocab.index, context_vectors)
    log(f"{len(train_turns)} training turns (RL fold), {len(gate_turns)} gate turns; parent {parent_round}")
    lookup = CorpusLookup.from_parquet(corpus_path)
    result = run_round(retriever.model, item_ids, train_turns, gate_turns, generator, lookup, config, round_dir, log)
    finite = weights_finite(retriever.model)
    verdict = gate_verdict(result.gate_per_turn_before, result.gate_per_turn_after, gate, finite)
    log(verdict["gate_reason"])
    export_retriever(retriever.model, retriever.movie_ids, exported_checkpoint(round_dir), retriever.max_len,
                     {"gate_ndcg@10": result.gate_ndcg_after})
    record = {
        "round": round_dir.name, "parent_round": parent_round, "parent_checkpoint": str(parent_checkpoint),
        **verdict, "train_turns": len(train_turns), "gate_turns": len(gate_turns),
        "folds": asdict(folds), "gate_rule": asdict(gate), "config": config.to_dict(), **asdict(result),
    }
    write_json_atomic(record, round_record_path(round_dir))
    remove_tree(round_epochs_dir(round_dir))  # only needed to resume an unfinished round
    return record
