"""Reddit-Movie (He et al. 2023, "LLMs as zero-shot conversational recommenders").

ASSUMED FORMAT (the public release's test files could not be read here: they live on the HF hub;
the repository holds ``entity2id.json`` and the same row format for ReDial/INSPIRED): one JSON object
per line, one row per response turn::

    {"context": ["", "utterance 1", ...], "resp": "...", "rec": [<item>...], "dialog_id": "...",
     "turn_id": ..., "is_user": 0}

``is_user`` = 0 marks a recommender (responder) turn; ``context`` alternates speakers and ends with
the seeker's utterance (empty strings are padding). ``rec`` items are IMDb ids ("tt0133093"), or
integers that ``entity2id.json`` ({"Title (Year)": id}) maps back to a name; for Reddit-Movie that map
holds IMDb ids as values, so both read the same way. Each row already is a turn, so the dialogue's
earlier turns are not rebuilt: ``history_movie_ids`` holds the films of ``prev_entity`` (or, when absent,
the rec items of earlier rows of the same dialogue).
"""

from __future__ import annotations

import json
from pathlib import Path

from corpus_build.linking import Linker, LinkLog
from corpus_build.movie_text import nfc, normalise_imdb_id
from corpus_build.interactions.turns import RECOMMENDER, SEEKER, quarantine_row


def load_entity_names(path: str | Path | None) -> dict[str, str]:
    """entity2id.json inverted: str(id) -> name."""
    if path is None or not Path(path).exists():
        return {}
    with open(path, encoding="utf-8") as handle:
        mapping = json.load(handle)
    return {str(value): name for name, value in mapping.items()}


def read_reddit(
    path: str | Path, split: str, linker: Linker, log: LinkLog, entity_names: dict[str, str] | None = None,
    dataset: str = "reddit",
) -> tuple[list[dict], list[dict]]:
    path, names = Path(path), entity_names or {}
    rows, quarantine, earlier = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("context"), list):
                    raise ValueError("no context list")
                if "dialog_id" not in record or "rec" not in record:
                    raise ValueError("missing dialog_id or rec")
            except ValueError as error:
                quarantine.append(quarantine_row(dataset, str(path), line_no, f"{type(error).__name__}: {error}", line))
                continue
            if record.get("is_user", 0):
                continue
            dialog_id = str(record["dialog_id"])
            targets = _link_items(record["rec"], names, linker, log, dataset)
            if record.get("prev_entity") is not None:
                history = _link_items(record["prev_entity"], names, linker, log, f"{dataset}_context")
            else:
                history = earlier.get(dialog_id, [])
            history = list(dict.fromkeys(history))
            earlier[dialog_id] = list(dict.fromkeys(history + targets))
            targets = list(dict.fromkeys(targets))
            if not targets:
                continue
            seen = set(history)
            rows.append({
                "dataset": dataset, "split": split, "dialog_id": dialog_id,
                "turn_index": len(record["context"]) - 1,
                "context": _context(record["context"]),
                "history_movie_ids": history,
                "target_movie_ids": targets,
                "target_mentioned_before": [t in seen for t in targets],
            })
    return rows, quarantine


def _context(utterances: list) -> list[dict]:
    """Roles alternate backwards from the last utterance, which is the seeker's; padding dropped."""
    n = len(utterances)
    turns = []
    for i, text in enumerate(utterances):
        role = SEEKER if (n - 1 - i) % 2 == 0 else RECOMMENDER
        if isinstance(text, str) and text.strip():
            turns.append({"role": role, "text": nfc(text)})
    return turns


def _link_items(items, names: dict[str, str], linker: Linker, log: LinkLog, dataset: str) -> list[str]:
    linked = []
    for item in items or []:
        text = str(item)
        imdb_id = normalise_imdb_id(text) if text.startswith("tt") else None
        name = names.get(text)
        link = linker.link(name, imdb_id=imdb_id) if (name or imdb_id) else linker.link(None)
        log.record(dataset, name or text, link, imdb_id)
        if link.movie_id:
            linked.append(link.movie_id)
    return linked
