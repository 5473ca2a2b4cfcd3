"""The promotion gate (rule and verdict), which alignment round is promoted, the parent of the next
round, and the current retriever.

Paths come from :mod:`training.layout`; writes are atomic (checkpoint first, then the pointer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from corpus_build.atomic import copy_file_atomic, write_json_atomic
from training.layout import (
    FINE_TUNED,
    SYSTEMS,
    checkpoint_path,
    exported_checkpoint,
    promoted_pointer,
    promoted_record,
    round_dir,
    round_record_path,
    round_records,
    rounds_dir,
)


@dataclass(frozen=True)
class GateRule:
    """When a round is promoted: on at least ``min_turns`` gate turns, the one-sided ``confidence`` lower
    bound of the mean per-turn gain (round - parent pipeline NDCG@10 on the same turns, a paired
    percentile bootstrap of ``n_boot`` resamples) is at least ``min_delta``."""

    min_delta: float = 0.0
    min_turns: int = 100
    confidence: float = 0.95
    n_boot: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_turns < 1 or self.n_boot < 1:
            raise ValueError("min_turns and n_boot must be >= 1")


def paired_lower_bound(before: np.ndarray, after: np.ndarray, confidence: float, n_boot: int, seed: int) -> float:
    """One-sided lower confidence bound of mean(after - before), resampling turns jointly."""
    gains = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    rng = np.random.default_rng(seed)
    means = gains[rng.integers(0, len(gains), size=(n_boot, len(gains)))].mean(axis=1)
    return float(np.quantile(means, 1 - confidence))


def gate_verdict(before: Sequence[float], after: Sequence[float], rule: GateRule, weights_finite: bool = True) -> dict:
    """The promotion decision for per-turn gate NDCG@10 of the parent (``before``) and the round
    (``after``) on the same turns: ``gate_passed``, ``gate_reason`` (a sentence for the operator),
    ``gate_gain`` (mean), ``gate_gain_lower`` (the bound; None when not computed), ``gate_min_delta``."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.shape != after.shape:
        raise ValueError(f"gate turns differ: {before.shape} before, {after.shape} after")
    gain = float((after - before).mean()) if len(before) else 0.0
    verdict = {"gate_passed": False, "gate_gain": gain, "gate_gain_lower": None, "gate_min_delta": rule.min_delta}
    if not weights_finite:  # a retriever with non-finite weights ranks arbitrarily: never promote it
        return verdict | {"gate_reason": "not promoted: the round's retriever has non-finite weights"}
    if len(before) < rule.min_turns:
        return verdict | {"gate_reason": f"not promoted: the gate slice has {len(before)} turns, fewer than the "
                          f"{rule.min_turns} needed to decide (RAR_ALIGNMENT_GATE_MIN_TURNS); use more dialogues "
                          "or a larger RAR_ALIGNMENT_GATE_FRACTION"}
    lower = paired_lower_bound(before, after, rule.confidence, rule.n_boot, rule.seed)
    passed = lower >= rule.min_delta
    figures = (f"gate NDCG@10 gain {gain:+.4f} on {len(before)} turns, {rule.confidence:.0%} lower bound "
               f"{lower:+.4f} {'>=' if passed else '<'} the required {rule.min_delta:+.4f}")
    return verdict | {"gate_passed": passed, "gate_gain_lower": lower,
                      "gate_reason": ("promoted: " if passed else "not promoted: ") + figures}




def round_parent(home: Path, kind: str = "dialogue") -> tuple[Path, str]:
    """The checkpoint a new round starts from: the promoted round, else the fine-tuned retriever of
    ``kind`` (``dialogue``: dialogue_retriever; ``lrurec``: lrurec_sft)."""
    record = promoted_record(home)
    if record is not None:
        return checkpoint_path(home, "aligned"), record["round"]
    system, asset = FINE_TUNED[kind]
    path = checkpoint_path(home, system)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: materialise {asset} before an alignment round")
    return path, system


def preference(kind: str) -> list[str]:
    """Systems from most to least trained, the fine-tuned retriever of ``kind`` before the other kind's."""
    mine = FINE_TUNED[kind][0]
    return ["aligned", mine] + [s for s in SYSTEMS if s not in ("aligned", mine)]


def latest_passed_round(home: Path) -> str | None:
    """The newest finished round whose gate passed (round names sort by time)."""
    for name, record in reversed(list(round_records(rounds_dir(home)))):
        if record.get("gate_passed"):
            return name
    return None


def promote(home: Path, round_name: str) -> dict:
    """Make ``round_name`` the aligned retriever (checkpoint copied atomically, then the pointer)."""
    folder = round_dir(home, round_name)
    record = json.loads(round_record_path(folder).read_text())
    if not record.get("gate_passed"):
        raise ValueError(f"{round_name} did not pass the promotion gate; it cannot be promoted")
    copy_file_atomic(exported_checkpoint(folder), checkpoint_path(home, "aligned"))
    pointer = {
        "round": round_name, "parent_round": record["parent_round"], "promoted_at": datetime.now(timezone.utc).isoformat(),
        "gate_ndcg_before": record["gate_ndcg_before"], "gate_ndcg_after": record["gate_ndcg_after"],
    }
    write_json_atomic(pointer, promoted_pointer(home))
    return pointer


def load_current_retriever(home: Path, kind: str = "dialogue", device: str = "cpu", text_cache_dir: Path | None = None):
    """The most trained retriever that exists under ``home`` (aligned > the fine-tuned one of ``kind`` >
    the other kind's > pretrained), named, or None. ``text_cache_dir``: where a dialogue-aware retriever
    keeps the vectors of the texts it embeds."""
    from training.retriever import Retriever

    for system in preference(kind):
        path = checkpoint_path(home, system)
        if path.is_file():
            retriever = Retriever.from_checkpoint(path, device=device, text_cache_dir=text_cache_dir)
            retriever.name = f"{'dialogue-aware' if retriever.reads_dialogue else 'LRURec'} ({system})"
            return retriever
    return None
