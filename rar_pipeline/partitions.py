"""Partitions: one dynamic partition per RL alignment round (added by the nightly schedule or `rar align`)."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

ALIGNMENT_ROUNDS = dg.DynamicPartitionsDefinition(name="alignment_rounds")


def new_round_key(now: datetime | None = None) -> str:
    """A round name that sorts by time: ``round-YYYYmmdd-HHMMSS`` (UTC) for a given time (a schedule's
    tick: one round per tick), ``round-YYYYmmdd-HHMMSS-ffffff`` for now (commands started in the same
    second get different rounds)."""
    if now is not None:
        return now.strftime("round-%Y%m%d-%H%M%S")
    return datetime.now(timezone.utc).strftime("round-%Y%m%d-%H%M%S-%f")
