"""Split assignment and the disjointness rule: a dialogue belongs to exactly one split."""

from __future__ import annotations

import hashlib

import polars as pl

SPLITS = ("train", "validation", "test")


def hash_split(key: str, seed: int = 0, validation: float = 0.1, test: float = 0.1) -> str:
    """A stable split for ``key`` (same key, same seed -> same split on every run and machine)."""
    digest = hashlib.sha1(f"{seed}|{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < test else "validation" if u < test + validation else "train"


def carve(rows: list[dict], split_from: str, split_to: str, fraction: float, seed: int = 0) -> list[dict]:
    """Move a stable ``fraction`` of the dialogues of ``split_from`` to ``split_to`` (e.g. validation)."""
    for row in rows:
        if row["split"] == split_from and hash_split(row["dialog_id"], seed, validation=fraction, test=0) == "validation":
            row["split"] = split_to
    return rows


def drop_overlap(rows: list[dict], keep: str, drop_from: str) -> tuple[list[dict], int]:
    """Remove from ``drop_from`` the dialogues that ``keep`` also holds (KGSF's validation is carved
    from ReDial's train file); return the kept rows and how many rows were removed."""
    kept_ids = {r["dialog_id"] for r in rows if r["split"] == keep}
    out = [r for r in rows if not (r["split"] == drop_from and r["dialog_id"] in kept_ids)]
    return out, len(rows) - len(out)


def overlapping_dialogs(turns: pl.DataFrame) -> pl.DataFrame:
    """(dataset, dialog_id) pairs that appear in more than one split: must be empty."""
    return (turns.group_by("dataset", "dialog_id").agg(splits=pl.col("split").unique().sort())
            .filter(pl.col("splits").list.len() > 1))
