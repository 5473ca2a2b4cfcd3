"""From a dialogue (utterances with roles, linked mentions and recommendations) to CONVERSATION_TURNS rows."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from corpus_build.linking import Linker, LinkLog
from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, QUARANTINE_SCHEMA

SEEKER, RECOMMENDER = "seeker", "recommender"


@dataclass
class Utterance:
    """One turn of one speaker (consecutive messages of a speaker are merged into one turn)."""

    role: str  # SEEKER or RECOMMENDER
    text: str  # mentions already rendered as "Title (Year)"
    movie_ids: list[str] = field(default_factory=list)  # linked films mentioned, in order
    target_ids: list[str] = field(default_factory=list)  # films this turn recommends (recommender only)


def titled_utterance(role: str, text: str, titles: Iterable[str], linker: Linker, log: LinkLog,
                     dataset: str) -> Utterance:
    """An utterance whose films are named by title: each non-empty title is linked and logged; a
    recommender's linked films are also its targets."""
    linked = []
    for title in (t.strip() for t in titles):
        if not title:
            continue
        link = linker.link(title)
        log.record(dataset, title, link)
        if link.movie_id:
            linked.append(link.movie_id)
    return Utterance(role, text, linked, linked if role == RECOMMENDER else [])


def merge_consecutive(utterances: list[Utterance]) -> list[Utterance]:
    """Join consecutive utterances of the same role (CRSLab and the CRS harness do the same)."""
    merged: list[Utterance] = []
    for utt in utterances:
        if merged and merged[-1].role == utt.role:
            last = merged[-1]
            last.text = f"{last.text} {utt.text}".strip()
            last.movie_ids += utt.movie_ids
            last.target_ids += utt.target_ids
        else:
            merged.append(Utterance(utt.role, utt.text, list(utt.movie_ids), list(utt.target_ids)))
    return merged


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def dialog_fingerprint(utterances: list[Utterance]) -> str:
    """A hash of the dialogue's text (roles, lower-cased letters and digits only): the same dialogue
    read from two formats or copies (whitespace, HTML entities, merged messages) gets the same one."""
    digest = hashlib.sha1()
    for utt in utterances:
        digest.update(f"{utt.role[0]}:{_NOT_ALNUM.sub('', utt.text.lower())}|".encode())
    return digest.hexdigest()[:16]


def dialog_rows(dataset: str, split: str, dialog_id: str, utterances: list[Utterance]) -> list[dict]:
    """One row per recommender turn with at least one target; context = the turns before it.

    Each row also carries ``dialog_fingerprint`` (:func:`dialog_fingerprint`; not a table column), so
    that :func:`corpus_build.interactions.splits.deduplicate` finds a dialogue that two sources hold
    under different ids."""
    fingerprint = dialog_fingerprint(utterances)
    rows, history = [], []
    for index, utt in enumerate(utterances):
        targets = list(dict.fromkeys(utt.target_ids))
        if utt.role == RECOMMENDER and targets:
            seen = set(history)
            rows.append({
                "dataset": dataset,
                "split": split,
                "dialog_id": dialog_id,
                "turn_index": index,
                "context": [{"role": u.role, "text": u.text} for u in utterances[:index]],
                "history_movie_ids": list(history),
                "target_movie_ids": targets,
                "target_mentioned_before": [t in seen for t in targets],
                "dialog_fingerprint": fingerprint,
            })
        for movie_id in utt.movie_ids + targets:
            if movie_id not in history:
                history.append(movie_id)
    return rows


def turns_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CONVERSATION_TURNS_SCHEMA)


def quarantine_row(source: str, file: str, line: int | None, reason: str, raw: str) -> dict:
    return {"source": source, "file": file, "line": line, "reason": reason, "raw": raw[:500]}


def quarantine_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=QUARANTINE_SCHEMA)


class JsonlFormatError(ValueError):
    """A jsonl file none of whose lines is a record of the expected format."""


def read_jsonl(
    path: str | Path, dataset: str, handle: Callable[[object], None], errors: tuple[type[Exception], ...] = (ValueError,)
) -> list[dict]:
    """Calls ``handle(record)`` for each non-blank line of a jsonl file, in order; returns quarantine rows.

    A line that is not JSON, or whose ``handle`` raises one of ``errors`` (a validation saying what is
    wrong), is quarantined with its file, line number and reason, and reading goes on. A file in which
    no line is good is the wrong file or the wrong format: :class:`JsonlFormatError` names it and
    quotes the first line's reason.
    """
    quarantine, good = [], 0
    with open(path, encoding="utf-8") as lines:
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                handle(json.loads(line))
                good += 1
            except (json.JSONDecodeError, *errors) as error:
                quarantine.append(quarantine_row(dataset, str(path), line_no, f"{type(error).__name__}: {error}", line))
    if quarantine and not good:
        first = quarantine[0]
        raise JsonlFormatError(f"{path}: no line could be read as {dataset} ({len(quarantine)} bad lines); "
                               f"line {first['line']}: {first['reason']}")
    return quarantine

