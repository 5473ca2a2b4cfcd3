"""INSPIRED (Hayati et al. 2020): one utterance per TSV row, dialogues in row order.

Columns used (see the dataset's README): ``dialog_id``, ``utt_id``, ``speaker`` (RECOMMENDER /
SEEKER), ``text``, ``movies`` ("Title (Year); Title (Year)": the films detected in the utterance).
The text writes double quotes as ``QUOTATION_MARK``; it is restored.

Recommendation rule: every film detected in a recommender turn is a target of that turn (INSPIRED
has no questionnaire; this is CRSLab's and the CRS harness's reading).
"""

from __future__ import annotations

import csv
import sys
from itertools import groupby
from pathlib import Path

from corpus_build.interactions.turns import (
    RECOMMENDER,
    SEEKER,
    Utterance,
    dialog_rows,
    merge_consecutive,
    quarantine_row,
    titled_utterance,
)
from corpus_build.linking import Linker, LinkLog
from corpus_build.movie_text import nfc

_REQUIRED = ("dialog_id", "utt_id", "speaker", "text", "movies")
_ROLES = {"RECOMMENDER": RECOMMENDER, "SEEKER": SEEKER}


def read_inspired(
    path: str | Path, split: str, linker: Linker, log: LinkLog, dataset: str = "inspired"
) -> tuple[list[dict], list[dict]]:
    path = Path(path)
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not an INSPIRED dialogue TSV, header lacks {', '.join(missing)}")
        good, quarantine = [], []
        for line_no, row in enumerate(reader, start=2):
            role = _ROLES.get((row.get("speaker") or "").strip().upper())
            if role is None or not row.get("dialog_id") or None in row:
                reason = "extra fields" if None in row else f"bad speaker {row.get('speaker')!r}" if row.get(
                    "dialog_id") else "no dialog_id"
                quarantine.append(quarantine_row(dataset, str(path), line_no, reason, "\t".join(
                    str(v) for v in row.values())))
                continue
            good.append((row["dialog_id"], role, row))
    rows = []
    for dialog_id, items in groupby(good, key=lambda item: item[0]):
        utterances = [_utterance(role, row, linker, log, dataset) for _, role, row in items]
        rows += dialog_rows(dataset, split, dialog_id, merge_consecutive(utterances))
    return rows, quarantine


def _utterance(role: str, row: dict, linker: Linker, log: LinkLog, dataset: str) -> Utterance:
    text = nfc((row.get("text") or "").replace("QUOTATION_MARK", '"'))
    return titled_utterance(role, text, (row.get("movies") or "").split(";"), linker, log, dataset)
