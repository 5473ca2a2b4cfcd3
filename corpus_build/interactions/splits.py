"""Split assignment and the disjointness rule: a dialogue belongs to exactly one split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

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


def deduplicate(sources: Sequence[tuple[str, list[dict]]]) -> tuple[list[dict], dict[str, int]]:
    """The rows of several sources of one dataset, each dialogue once.

    ``sources`` are (name, rows) in priority order: evaluation splits first, so a dialogue that a test
    or validation file holds never reaches training, then the fullest copy of a split. A dialogue that
    an earlier source (or an earlier line of the same source) holds is dropped: the same ``dialog_id``,
    or the same text (``dialog_fingerprint``, set by :func:`~corpus_build.interactions.turns.dialog_rows`)
    under another id or format. Returns the kept rows and, per source, how many dialogues were dropped.
    """
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    kept: list[dict] = []
    removed: dict[str, int] = {}
    for name, rows in sources:
        removed[name] = 0
        for dialog in _dialogs(rows):
            dialog_id, text = dialog[0]["dialog_id"], dialog[0].get("dialog_fingerprint")
            if dialog_id in seen_ids or (text is not None and text in seen_texts):
                removed[name] += 1
                continue
            seen_ids.add(dialog_id)
            if text is not None:
                seen_texts.add(text)
            kept += dialog
    return kept, removed


def _dialogs(rows: list[dict]) -> Iterator[list[dict]]:
    """Runs of rows of one dialogue as a reader wrote them (a repeated dialogue starts a new run)."""
    run: list[dict] = []
    for row in rows:
        if run and (row["dialog_id"] != run[-1]["dialog_id"] or row["turn_index"] <= run[-1]["turn_index"]):
            yield run
            run = []
        run.append(row)
    if run:
        yield run


def overlapping_dialogs(turns: pl.DataFrame) -> pl.DataFrame:
    """(dataset, dialog_id) pairs that appear in more than one split: must be empty."""
    return (turns.group_by("dataset", "dialog_id").agg(splits=pl.col("split").unique().sort())
            .filter(pl.col("splits").list.len() > 1))
