"""ReDial (Li et al. 2018): one JSON dialogue per line.

Each dialogue has ``movieMentions`` ({"111776": "Super Troopers (2001)"}), ``messages`` (text with
``@111776`` placeholders, ``senderWorkerId``), the two workers (``initiatorWorkerId`` = seeker,
``respondentWorkerId`` = recommender) and both workers' questionnaires
(``respondentQuestions`` / ``initiatorQuestions``: per mentioned film ``suggested``, ``seen``, ``liked``).

Two shapes of ``messages`` are read the same way:

- the published files (``train_data.jsonl``, ``test_data.jsonl``, KGSF's ``valid_data.jsonl``): one
  entry per chat message, ``{"timeOffset", "text", "senderWorkerId", "messageId"}``;
- CFCRS / UniCRS preprocessed copies (``data/redial/*_data.jsonl`` of wxl1999/CFCRS): one entry per
  turn, consecutive messages of a speaker already joined, ``{"senderWorkerId", "text", "turn_id",
  "entity", "item", "thread", "masked_text", "word"}``. Only ``senderWorkerId`` and ``text`` are used
  (``item`` is derived from the same ``@id`` placeholders and ``movieMentions``), so both shapes give
  the same turns. HTML entities of the crowd-sourced text (``&quot;``) are decoded.

Recommendation rule (default ``rule="mentioned"``): every film the recommender mentions in a turn is
a target of that turn. That is the reading of the zero-shot CRS evaluation (He et al., CIKM 2023),
whose published figures are the bar in ../shared/ANCHORS.md, so our numbers are comparable with
theirs; against their prepared ReDial test turns our targets agree on 96.4% (the "suggested" rule:
92.5%). ``rule="suggested"``: only films the questionnaire marks ``suggested`` = 1 (the
recommender's own answer, the seeker's when the recommender did not answer for that film);
``rule="suggested_any"``: either worker's 1 counts.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from corpus_build.interactions.turns import RECOMMENDER, SEEKER, Utterance, dialog_rows, merge_consecutive, read_jsonl
from corpus_build.linking import Linker, LinkLog
from corpus_build.movie_text import nfc

_PLACEHOLDER = re.compile(r"@(\d+)")
RULES = ("suggested", "suggested_any", "mentioned")
DEFAULT_RULE = "mentioned"
_REQUIRED = ("messages", "initiatorWorkerId", "respondentWorkerId", "conversationId")


def read_redial(
    path: str | Path, split: str, linker: Linker, log: LinkLog, dataset: str = "redial", rule: str = DEFAULT_RULE
) -> tuple[list[dict], list[dict]]:
    """Turn rows and quarantine rows of one ReDial jsonl file; ``split`` names the file's split."""
    if rule not in RULES:
        raise ValueError(f"unknown ReDial recommendation rule {rule!r}")
    rows: list[dict] = []

    def one_dialog(dialog) -> None:
        if isinstance(dialog, list):
            raise ValueError("a JSON list, not a ReDial dialogue object (a list of turns is the UniCRS format: "
                             "corpus_build.interactions.unicrs.read_unicrs)")
        missing = [k for k in _REQUIRED if k not in dialog] if isinstance(dialog, dict) else ["object"]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        rows.extend(_dialog(dialog, split, linker, log, dataset, rule))

    quarantine = read_jsonl(path, dataset, one_dialog, errors=(ValueError, TypeError, AttributeError, KeyError))
    return rows, quarantine


def _mentions(dialog: dict, linker: Linker, log: LinkLog, dataset: str) -> dict[str, tuple[str | None, str]]:
    """ReDial movie id -> (corpus movie_id or None, text to show); every entry is logged once."""
    raw = dialog.get("movieMentions") or {}
    if not isinstance(raw, dict):  # the published files write an empty mapping as []
        raw = {}
    resolved = {}
    for redial_id, name in raw.items():
        link = linker.link(name) if name else linker.link(None)
        log.record(dataset, name or f"@{redial_id}", link)
        shown = linker.label(link.movie_id) if link.movie_id else (nfc(name) if name else f"@{redial_id}")
        resolved[str(redial_id)] = (link.movie_id, shown)
    return resolved


def _suggested(dialog: dict, either: bool = False) -> set[str]:
    """ReDial ids marked suggested: the recommender's answer wins (``either``: any worker's 1)."""
    answers, anyone = {}, set()
    for key in ("initiatorQuestions", "respondentQuestions"):
        questions = dialog.get(key) or {}
        if isinstance(questions, dict):
            for redial_id, answer in questions.items():
                if isinstance(answer, dict) and "suggested" in answer:
                    answers[str(redial_id)] = answer["suggested"]
                    if answer["suggested"] == 1:
                        anyone.add(str(redial_id))
    return anyone if either else {redial_id for redial_id, value in answers.items() if value == 1}


def _dialog(dialog: dict, split: str, linker: Linker, log: LinkLog, dataset: str, rule: str) -> list[dict]:
    mentions = _mentions(dialog, linker, log, dataset)
    suggested = _suggested(dialog, either=rule == "suggested_any")
    roles = {dialog["initiatorWorkerId"]: SEEKER, dialog["respondentWorkerId"]: RECOMMENDER}
    utterances = []
    for number, message in enumerate(dialog["messages"]):
        role = roles.get(message.get("senderWorkerId"))
        if role is None:
            name = message.get("messageId", message.get("turn_id", number))
            raise ValueError(f"message {name} from unknown worker {message.get('senderWorkerId')}")
        text = html.unescape(str(message.get("text") or ""))
        ids = [m for m in _PLACEHOLDER.findall(text) if m in mentions]
        linked = [mentions[m][0] for m in ids if mentions[m][0]]
        targets = []
        if role == RECOMMENDER:
            targets = [mentions[m][0] for m in ids if mentions[m][0] and (rule == "mentioned" or m in suggested)]
        shown = _PLACEHOLDER.sub(lambda m: mentions[m.group(1)][1] if m.group(1) in mentions else m.group(0), text)
        utterances.append(Utterance(role, nfc(shown), linked, targets))
    return dialog_rows(dataset, split, str(dialog["conversationId"]), merge_consecutive(utterances))
