"""One RL alignment round: roll out candidate sets, let the frozen generator rank them, update the retriever.

A round has three phases, so that a generator outage never loses work and re-running a finished round
costs no LLM calls:

1. **Rollout** (with the retriever as it was at the round's start, which is also the DPO/GRPO
   reference): for each training turn, ``G`` candidate sets of ``K`` films are drawn by Gumbel top-k
   from the retriever's scores (films already mentioned are never proposed); the generator ranks each
   set; the reward is NDCG@K of its ranking against the turn's targets. Rollouts are written batch by
   batch (``rollouts/part-NNNNN.parquet``); a rerun skips finished batches. Draws are seeded per batch,
   so a rerun asks the generator the same prompts (answered from its response cache).
2. **Optimisation** on the stored rollouts: DPO or GRPO (see :mod:`training.alignment`) plus the NLL
   of the targets, ``L = L_rl + lambda * L_nll``. Only the retriever changes.
3. **Gate measurement**: pipeline NDCG@10 (retriever top-K -> generator ranking) on held-out turns,
   before and after, so the promotion gate can compare the round with its parent.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from corpus_build.atomic import write_parquet_atomic

MoviesLookup = Callable[[Sequence[str]], Mapping[str, Mapping]]


class GeneratorUnavailable(RuntimeError):
    """The generator failed during a rollout batch; finished batches are kept and the round resumes."""


@dataclass
class RoundConfig:
    # "nll": no RL term, only lambda * L_nll on the same turns: the control run that shows what DPO/GRPO add
    # beyond continued supervised training.
    objective: Literal["dpo", "grpo", "nll"] = "grpo"
    num_sets: int = 4  # G: candidate sets per turn
    set_size: int = 20  # K: films per set (the generator's candidate list)
    temperature: float = 1.0  # sampling temperature of the Gumbel top-k draws
    dpo_beta: float = 0.1
    grpo_clip: float = 0.2
    grpo_kl: float = 0.04
    nll_weight: float = 1.0  # lambda in L = L_rl + lambda * L_nll
    lr: float = 1e-4
    weight_decay: float = 0.01
    epochs: int = 2
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
    rollouts: int
    rollout_reward_mean: float  # mean reward of the stored rollouts (round-start retriever, train turns)
    reward_mean_before: float
    reward_std_before: float
    reward_mean_after: float
    reward_std_after: float
    gate_ndcg_before: float
    gate_ndcg_after: float
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


def _rank_sets(generator, turns, sets_ids, movies_for: MoviesLookup, item_ids: Sequence[str]):
    """The generator's ranking of every (turn, set) as [turn][set] of (ranking, asked); raises on failure.

    Sets holding none of the turn's targets are not sent (``asked`` False, retriever order): their
    reward is 0 in any order, so asking would only spend LLM calls (see ``Generator.rank_scored``).
    """
    from training.generator.base import RankRequest

    requests, targets = [], []
    for turn, sets in zip(turns, sets_ids):
        for ids in sets:
            requests.append(RankRequest(turn.context, tuple(ids), movies_for(ids)))
            targets.append(_target_ids(turn, item_ids))
    results = generator.rank_scored(requests, targets)
    failed = [r for r in results if r.source == "fallback"]
    if failed:
        raise GeneratorUnavailable(f"{len(failed)} of {len(results)} rankings failed: {failed[0].error}")
    per_turn = len(sets_ids[0]) if sets_ids else 0
    answers = [(list(r.ranking), r.source != "skipped") for r in results]
    return [answers[i * per_turn:(i + 1) * per_turn] for i in range(len(turns))]


def collect_rollouts(
    model, turns: Sequence[AlignmentTurn], item_ids: Sequence[str], generator, movies_for: MoviesLookup,
    config: RoundConfig, rollout_dir: Path, log: Callable[[str], None] = print,
) -> pl.DataFrame:
    """Phase 1. Sample G sets per turn, rank them, store rewards; resumable batch by batch."""
    import torch

    from training.alignment import gumbel_topk_sets, ndcg_of_ranking

    rollout_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    batch_count = math.ceil(len(turns) / config.rollout_batch)
    for batch_index in range(batch_count):
        part = rollout_dir / f"part-{batch_index:05d}.parquet"
        if part.is_file():
            continue
        batch = turns[batch_index * config.rollout_batch:(batch_index + 1) * config.rollout_batch]
        with torch.no_grad():
            logits = turn_logits(model, batch, config.max_len)
        draws = torch.Generator(device=logits.device).manual_seed(config.seed * 100_003 + batch_index)
        sets = gumbel_topk_sets(logits, config.set_size, config.num_sets, config.temperature, draws).cpu()
        sets_ids = [[[item_ids[i] for i in s] for s in turn_sets.tolist()] for turn_sets in sets]
        answers = _rank_sets(generator, batch, sets_ids, movies_for, item_ids)
        rows = []
        for turn, turn_sets, turn_ids, turn_answers in zip(batch, sets.tolist(), sets_ids, answers):
            target_ids = _target_ids(turn, item_ids)
            for set_index, (items, ids, (ranking, asked)) in enumerate(zip(turn_sets, turn_ids, turn_answers)):
                rows.append({
                    "turn_key": turn.key, "set_index": set_index, "items": items, "item_ids": ids,
                    "ranking": ranking, "generator_asked": asked,
                    "reward": ndcg_of_ranking(ranking, target_ids, config.set_size),
                })
        write_parquet_atomic(pl.DataFrame(rows), part)
        log(f"rollout batch {batch_index + 1}/{batch_count} done")
    return pl.concat([pl.read_parquet(p) for p in sorted(rollout_dir.glob("part-*.parquet"))])


# ----------------------------------------------------------------------------------- optimisation


def _rollout_tensors(rollouts: pl.DataFrame, turns: Sequence[AlignmentTurn], num_sets: int):
    """Sets [T, G, K] and rewards [T, G] aligned with ``turns``."""
    import torch

    by_turn = rollouts.sort(["turn_key", "set_index"]).group_by("turn_key", maintain_order=True).agg("items", "reward")
    lookup = {row["turn_key"]: row for row in by_turn.iter_rows(named=True)}
    sets = torch.tensor([lookup[t.key]["items"] for t in turns], dtype=torch.long)
    rewards = torch.tensor([lookup[t.key]["reward"] for t in turns], dtype=torch.float32)
    if sets.shape[1] != num_sets:
        raise ValueError(f"rollouts hold {sets.shape[1]} sets per turn, config asks for {num_sets}")
    return sets, rewards


def _target_tensors(turns: Sequence[AlignmentTurn]):
    import torch

    width = max(len(t.targets) for t in turns)
    targets = torch.zeros(len(turns), width, dtype=torch.long)
    mask = torch.zeros(len(turns), width, dtype=torch.bool)
    for row, turn in enumerate(turns):
        targets[row, : len(turn.targets)] = torch.tensor(turn.targets)
        mask[row, : len(turn.targets)] = True
    return targets, mask


def batch_loss(model, reference, turns, sets, rewards, config: RoundConfig):
    """L = L_rl + lambda * L_nll for one batch of turns with their stored rollouts."""
    import torch

    from training.alignment import (
        dpo_loss, dpo_pairs, draw_log_probs, grpo_loss, group_advantages, nll_loss,
    )

    logits = turn_logits(model, turns, config.max_len)
    targets, mask = _target_tensors(turns)
    nll = nll_loss(logits, targets.to(logits.device), mask.to(logits.device))
    if config.objective == "nll":  # the control run: no RL term, so no reference pass either
        return config.nll_weight * nll, 0.0, float(nll.detach())
    with torch.no_grad():
        ref_logits = turn_logits(reference, turns, config.max_len)
    scaled, ref_scaled = logits / config.temperature, ref_logits / config.temperature
    if config.objective == "dpo":
        best, worst, keep = dpo_pairs(rewards)
        if keep.any():
            rows = torch.nonzero(keep).squeeze(1)
            pair_sets = torch.stack([sets[rows, best[rows]], sets[rows, worst[rows]]], dim=1)  # [P, 2, K]
            policy = draw_log_probs(scaled[rows], pair_sets).sum(-1)
            ref = draw_log_probs(ref_scaled[rows], pair_sets).sum(-1)
            rl = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], config.dpo_beta)
        else:
            rl = logits.new_zeros(())
    else:
        policy_draws = draw_log_probs(scaled, sets)
        ref_draws = draw_log_probs(ref_scaled, sets)
        # Rollouts were sampled by the round-start retriever, which is also the reference.
        rl = grpo_loss(policy_draws, ref_draws, ref_draws, group_advantages(rewards), config.grpo_clip, config.grpo_kl)
    return rl + config.nll_weight * nll, float(rl.detach()), float(nll.detach())


def optimise(model, reference, turns, rollouts: pl.DataFrame, config: RoundConfig, log=print) -> list[dict]:
    """Phase 2. Update the retriever on the stored rollouts; returns the loss curve (one row per epoch)."""
    import torch

    from training.lrurec import parameter_groups

    sets, rewards = _rollout_tensors(rollouts, turns, config.num_sets)
    device = next(model.parameters()).device
    sets, rewards = sets.to(device), rewards.to(device)
    reference.eval()
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    # Dropout draws from torch's global generator: seed a forked copy so a rerun of the round gives the
    # same retriever, without touching the caller's random state.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        return _optimise_epochs(model, reference, turns, sets, rewards, optimizer, rng, config, log)


def _optimise_epochs(model, reference, turns, sets, rewards, optimizer, rng, config: RoundConfig, log) -> list[dict]:
    import torch

    curve = []
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(turns))
        totals = {"loss": 0.0, "rl": 0.0, "nll": 0.0}
        steps = 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss, rl, nll = batch_loss(model, reference, [turns[i] for i in idx], sets[idx], rewards[idx], config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            totals["loss"] += float(loss.detach())
            totals["rl"] += rl
            totals["nll"] += nll
            steps += 1
        row = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in totals.items()}}
        curve.append(row)
        log(f"epoch {epoch + 1}: loss={row['loss']:.4f} rl={row['rl']:.4f} nll={row['nll']:.4f}")
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


def pipeline_ndcg(model, turns, item_ids, generator, movies_for: MoviesLookup, set_size: int, k: int = 10) -> np.ndarray:
    """Per-turn NDCG@k of retriever top-``set_size`` candidates re-ranked by the generator."""
    from training.alignment import ndcg_of_ranking

    candidates = retrieve_top_k(model, turns, item_ids, set_size)
    answers = _rank_sets(generator, turns, [[c] for c in candidates], movies_for, item_ids)
    return np.array([ndcg_of_ranking(a[0][0], _target_ids(turn, item_ids), k) for turn, a in zip(turns, answers)])


def sampled_rewards(model, turns, item_ids, generator, movies_for, config: RoundConfig, seed: int) -> np.ndarray:
    """Rewards of freshly drawn sets (G per turn) under ``model``: the round's 'after' statistics."""
    import torch

    from training.alignment import gumbel_topk_sets, ndcg_of_ranking

    with torch.no_grad():
        logits = turn_logits(model, turns, config.max_len)
    draws = torch.Generator(device=logits.device).manual_seed(seed)
    sets = gumbel_topk_sets(logits, config.set_size, config.num_sets, config.temperature, draws).cpu().tolist()
    sets_ids = [[[item_ids[i] for i in s] for s in turn_sets] for turn_sets in sets]
    answers = _rank_sets(generator, turns, sets_ids, movies_for, item_ids)
    return np.array([
        ndcg_of_ranking(ranking, _target_ids(turn, item_ids), config.set_size)
        for turn, turn_answers in zip(turns, answers) for ranking, _ in turn_answers
    ])


# ----------------------------------------------------------------------------------- the round


def run_round(
    model, item_ids: Sequence[str], train_turns: Sequence[AlignmentTurn], gate_turns: Sequence[AlignmentTurn],
    generator, movies_for: MoviesLookup, config: RoundConfig, round_dir: Path,
    log: Callable[[str], None] = print,
) -> RoundResult:
    """Run (or resume) one round on ``model`` in place; rollouts are kept under ``round_dir``."""
    import copy

    if not train_turns:
        raise ValueError("no training turn has a target in the retriever's item table")
    started = time.monotonic()
    reference = copy.deepcopy(model).eval()
    for param in reference.parameters():
        param.requires_grad_(False)
    log(f"gate before: ranking the top {config.set_size} of {len(gate_turns)} gate turns")
    gate_before = pipeline_ndcg(reference, gate_turns, item_ids, generator, movies_for, config.set_size, config.eval_k)
    log(f"gate NDCG@{config.eval_k} before: {gate_before.mean() if len(gate_before) else 0.0:.4f}")
    rollouts = collect_rollouts(reference, train_turns, item_ids, generator, movies_for, config, round_dir / "rollouts", log)
    curve = optimise(model, reference, train_turns, rollouts, config, log)
    # Reward before/after: fresh draws on the same held-out turns with the same noise.
    probe_turns = (list(gate_turns) or list(train_turns[: config.rollout_batch]))[: config.probe_turns]
    probe = (probe_turns, item_ids, generator, movies_for, config, config.seed + 1)
    log(f"rewards before/after on {len(probe_turns)} held-out turns, then the gate after")
    rewards_before, rewards_after = sampled_rewards(reference, *probe), sampled_rewards(model, *probe)
    gate_after = pipeline_ndcg(model, gate_turns, item_ids, generator, movies_for, config.set_size, config.eval_k)
    log(f"gate NDCG@{config.eval_k} after: {gate_after.mean() if len(gate_after) else 0.0:.4f}")
    return RoundResult(
        rollouts=rollouts.height, rollout_reward_mean=float(rollouts["reward"].mean()),
        reward_mean_before=float(rewards_before.mean()), reward_std_before=float(rewards_before.std()),
        reward_mean_after=float(rewards_after.mean()), reward_std_after=float(rewards_after.std()),
        gate_ndcg_before=float(gate_before.mean()) if len(gate_before) else 0.0,
        gate_ndcg_after=float(gate_after.mean()) if len(gate_after) else 0.0,
        loss_curve=curve, seconds=time.monotonic() - started,
    )


# ----------------------------------------------------------------------------------- from the tables

ROUND_FILE = "round.json"
CHECKPOINT_FILE = "retriever.pt"


def weights_finite(model) -> bool:
    """True when every parameter of ``model`` is finite (no nan/inf from a diverged update)."""
    import torch

    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def finished_round(round_dir: Path) -> dict | None:
    """The record of a finished round (its checkpoint and ``round.json`` exist), else None."""
    record = round_dir / ROUND_FILE
    if record.is_file() and (round_dir / CHECKPOINT_FILE).is_file():
        return json.loads(record.read_text())
    return None


def align_from_tables(
    round_dir: Path, parent_checkpoint: Path, parent_round: str, turns_path: Path, corpus_path: Path, generator,
    config: RoundConfig, datasets: Sequence[str], gate_fraction: float, max_turns: int,
    gate_min_delta: float = 0.0, device: str = "cpu", log: Callable[[str], None] = print,
) -> dict:
    """One round from the pipeline's tables: parent retriever -> aligned retriever in ``round_dir``.

    A finished round is returned as recorded, without a single generator call. Otherwise the round
    runs (resuming its rollouts), writes ``retriever.pt``, then ``round.json`` (the finished marker)
    with its parent, statistics and the gate verdict: pipeline NDCG@10 on the gate turns must not drop
    (must rise by at least ``gate_min_delta`` when that is positive).
    """
    from training.retriever import Retriever, export_retriever
    from training.turn_pools import CorpusLookup, alignment_pools

    if (record := finished_round(round_dir)) is not None:
        log(f"{round_dir.name} already finished: reusing its record (no generator calls)")
        return record
    retriever = Retriever.from_checkpoint(parent_checkpoint, device=device)
    item_ids = ["<pad>", *retriever.movie_ids]
    turns = pl.read_parquet(turns_path)
    train_frame, gate_frame = alignment_pools(turns, datasets, gate_fraction, max_turns, config.seed)
    context_vectors = retriever.context_vectors if retriever.reads_dialogue else None
    train_turns = build_turns(train_frame, retriever.vocab.index, context_vectors)
    gate_turns = build_turns(gate_frame, retriever.vocab.index, context_vectors)
    log(f"{len(train_turns)} training turns, {len(gate_turns)} gate turns; parent {parent_round}")
    lookup = CorpusLookup.from_parquet(corpus_path)
    result = run_round(retriever.model, item_ids, train_turns, gate_turns, generator, lookup, config, round_dir, log)
    # A retriever with non-finite weights ranks arbitrarily; never let a flat gate promote it.
    passed = weights_finite(retriever.model) and result.gate_ndcg_after - result.gate_ndcg_before >= gate_min_delta
    export_retriever(retriever.model, retriever.movie_ids, round_dir / CHECKPOINT_FILE, retriever.max_len,
                     {"gate_ndcg@10": result.gate_ndcg_after})
    record = {
        "round": round_dir.name, "parent_round": parent_round, "parent_checkpoint": str(parent_checkpoint),
        "gate_passed": passed, "train_turns": len(train_turns), "gate_turns": len(gate_turns),
        "config": config.to_dict(), **asdict(result),
    }
    tmp = round_dir / f".{ROUND_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(round_dir / ROUND_FILE)
    return record
