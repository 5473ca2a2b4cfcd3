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

The parts: :mod:`training.alignment_turns` (turns and the retriever's scores), :mod:`training.rollouts`
(draws, the generator's rankings, rewards, the gate's pipeline NDCG), :mod:`training.round_optimisation`
(the loss and the epochs); this module runs them in order and records the round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from corpus_build.atomic import write_json_atomic
from corpus_build.storage import read_parquet, remove_tree
from training.alignment_turns import AlignmentTurn, build_turns
from training.layout import exported_checkpoint, finished_round, rollouts_dir, round_epochs_dir, round_record_path
from training.rollouts import MoviesLookup, pipeline_ndcg, sampled_rewards, stored_rollouts
from training.round_optimisation import train_round


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
