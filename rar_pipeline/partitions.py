"""Partitions: one dynamic partition per RL alignment round (added by the nightly schedule or `rar align`)."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

ALIGNMENT_ROUNDS = dg.DynamicPartitionsDefinition(name="alignment_rounds")


def new_round_key(now: datetime | None = None) -> str:
    """A sortable round name: ``round-YYYYmmdd-HHMMSS`` (UTC)."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("round-%Y%m%d-%H%M%S")
