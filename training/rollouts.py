"""What a round asks the generator: candidate sets drawn by the retriever, shown in a seeded order, ranked,
rewarded by NDCG@K against the turn's targets and stored batch by batch, so a rerun asks nothing twice;
and the same ranking of the retriever's own top K (the gate's pipeline NDCG) or of fresh draws (the
probe's rewards)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from corpus_build.atomic import write_parquet_atomic
from corpus_build.storage import ensure_folder, read_parquet
from training.alignment_turns import AlignmentTurn, retrieve_top_k, turn_logits

if TYPE_CHECKING:
    from training.alignment_round import RoundConfig

MoviesLookup = Callable[[Sequence[str]], Mapping[str, Mapping]]
GATE_SHUFFLE_SEED = 0  # every round shows a retriever's gate candidates the same way (cache hits across rounds)


class GeneratorUnavailable(RuntimeError):
    """The generator failed during a rollout batch; finished batches are kept and the round resumes."""


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


def _shuffle_seed(config: RoundConfig) -> int | None:
    """The seed of the order the generator sees drawn sets in (None: as drawn); rollouts and probes share it,
    so the same set of the same turn is the same prompt."""
    return config.seed if config.shuffle_candidates else None


def _draw_sets(logits, item_ids: Sequence[str], config: RoundConfig, seed: int):
    """G sets of K films per turn by seeded Gumbel top-k at the round's temperature: as item indices (on the
    logits' device) and as movie ids."""
    import torch

    from training.alignment import gumbel_topk_sets

    draws = torch.Generator(device=logits.device).manual_seed(seed)
    sets = gumbel_topk_sets(logits, config.set_size, config.num_sets, config.temperature, draws)
    return sets, [[[item_ids[i] for i in s] for s in turn_sets] for turn_sets in sets.cpu().tolist()]


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

    from training.alignment import draw_log_probs, likeliest_order, ndcg_of_ranking

    ensure_folder(rollout_dir)
    model.eval()
    batch_count = math.ceil(len(turns) / config.rollout_batch)
    for batch_index in range(batch_count):
        part = _part_path(rollout_dir, phase, batch_index, chunk)
        if part.is_file():
            continue
        batch = turns[batch_index * config.rollout_batch:(batch_index + 1) * config.rollout_batch]
        with torch.no_grad():
            logits = turn_logits(model, batch, config.max_len)
            sets, sets_ids = _draw_sets(logits, item_ids, config,
                                        config.seed * 100_003 + phase * 10_007 + (chunk or 0) * 65_537 + batch_index)
            old = draw_log_probs(logits / config.temperature, sets).cpu().tolist()
            retriever_order = likeliest_order(logits, sets).cpu().tolist()
        sets = sets.cpu()
        answers = _rank_sets(generator, batch, sets_ids, movies_for, item_ids, _shuffle_seed(config))
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

    from training.alignment import ndcg_of_ranking

    model.eval()
    with torch.no_grad():
        logits = turn_logits(model, turns, config.max_len)
    _, sets_ids = _draw_sets(logits, item_ids, config, seed)
    answers = _rank_sets(generator, turns, sets_ids, movies_for, item_ids, _shuffle_seed(config))
    return np.array([
        ndcg_of_ranking(ranking, _target_ids(turn, item_ids), config.set_size)
        for turn, turn_answers in zip(turns, answers) for ranking, _, _ in turn_answers
    ])
