"""Reddit-Movie (He et al. 2023, "LLMs as zero-shot conversational recommenders"): two formats.

1. The public release (HF hub ``ZhankuiHe/reddit_movie_{small,large}_v1``; not reachable from here,
   so read from the dataset card and its viewer): ``id2name.json`` ({"tt0053779": "La Dolce Vita
   (1960)"}) and ``{train,valid,test}.csv``, one row per Reddit turn with ``conv_id``, ``turn_id``,
   ``turn_order``, ``is_seeker``, ``processed`` (the text with films replaced by IMDb ids), ``raw``,
   ``context_processed``, ``context_raw``. A turn with ``is_seeker`` false that names films is a
   recommendation; its targets are the IMDb ids in ``processed``; the history is the ids in
   ``context_processed``. ASSUMED, where the card is silent: the context columns hold a Python/JSON
   list, either of texts (alternating speakers, the last one the seeker's) or of ``[role, text]``
   pairs / role markers ("USER"/"SYSTEM"); ``processed`` may be the plain text or such a pair.
   :func:`read_reddit_movie_csv`.
2. The CRS harness's test file (the LLMs-as-Zero-Shot-CRS repository's ``data/<dataset>/test.jsonl``
   row format, the same as the harness's ReDial file in ../shared/data/crs_turns): one JSON object per
   recommender turn, ``{"context": [...], "resp": ..., "rec": [items], "dialog_id", "turn_id",
   "is_user"}``; items are IMDb ids, or ids that ``entity2id.json`` ({"Title (Year)": id}) maps back to
   a name (for Reddit-Movie that map's values are IMDb ids). :func:`read_reddit`.

Both are proven on fixture rows the tests write; no Reddit-Movie dialogue file is in ../shared/data.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import sys
from pathlib import Path

from corpus_build.interactions.turns import RECOMMENDER, SEEKER, quarantine_row, read_jsonl
from corpus_build.linking import Linker, LinkLog
from corpus_build.movie_text import nfc, normalise_imdb_id


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
    names = entity_names or {}
    rows: list[dict] = []
    earlier: dict[str, list[str]] = {}  # dialog_id -> films mentioned so far

    def one_turn(record) -> None:
        if not isinstance(record, dict) or not isinstance(record.get("context"), list):
            raise ValueError("no context list")
        if "dialog_id" not in record or "rec" not in record:
            raise ValueError("missing dialog_id or rec")
        if record.get("is_user", 0):
            return
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
            return
        seen = set(history)
        rows.append({
            "dataset": dataset, "split": split, "dialog_id": dialog_id,
            "turn_index": len(record["context"]) - 1,
            "context": _context(record["context"]),
            "history_movie_ids": history,
            "target_movie_ids": targets,
            "target_mentioned_before": [t in seen for t in targets],
        })

    quarantine = read_jsonl(path, dataset, one_turn)
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


_IMDB_ID = re.compile(r"\btt\d{7,8}\b")
_ROLE_MARKERS = {"USER": SEEKER, "SEEKER": SEEKER, "SYSTEM": RECOMMENDER, "RECOMMENDER": RECOMMENDER}
SPLIT_OF_CSV = {"train": "train", "valid": "validation", "validation": "validation", "dev": "validation",
                "test": "test"}


def read_reddit_movie_csv(
    path: str | Path, linker: Linker, log: LinkLog, id2name: dict[str, str] | None = None,
    split: str | None = None, dataset: str = "reddit",
) -> tuple[list[dict], list[dict]]:
    """Turn rows and quarantine rows of one Reddit-Movie V1 csv; the split comes from the file name."""
    path, names = Path(path), id2name or {}
    split = split or SPLIT_OF_CSV.get(path.stem)
    if split is None:
        raise ValueError(f"{path}: cannot tell the split from the file name (expected train/valid/test.csv)")
    csv.field_size_limit(sys.maxsize)
    rows, quarantine = [], []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("conv_id", "is_seeker", "processed") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a Reddit-Movie csv, header lacks {', '.join(missing)}")
        for line_no, record in enumerate(reader, start=2):
            try:
                row = _csv_turn(record, split, linker, log, names, dataset)
            except (ValueError, SyntaxError, TypeError) as error:
                quarantine.append(quarantine_row(dataset, str(path), line_no, f"{type(error).__name__}: {error}",
                                                 json.dumps(record)[:500]))
                continue
            if row is not None:
                rows.append(row)
    return rows, quarantine


def _csv_turn(record: dict, split: str, linker: Linker, log: LinkLog, names: dict[str, str], dataset: str):
    seeker = str(record.get("is_seeker", "")).strip().lower()
    if seeker not in ("true", "false", "1", "0"):
        raise ValueError(f"is_seeker is {record.get('is_seeker')!r}")
    if seeker in ("true", "1") or not record.get("conv_id"):
        return None
    targets = _link_ids(_IMDB_ID.findall(record.get("processed") or ""), names, linker, log, dataset)
    if not targets:
        return None
    history = _link_ids(_IMDB_ID.findall(record.get("context_processed") or ""), names, linker, log,
                        f"{dataset}_context")
    context = _parse_context(record.get("context_raw") or record.get("context_processed") or "")
    order = record.get("turn_order")
    seen = set(history)
    return {
        "dataset": dataset, "split": split, "dialog_id": record["conv_id"],
        "turn_index": int(order) if order not in (None, "") else len(context),
        "context": context, "history_movie_ids": history, "target_movie_ids": targets,
        "target_mentioned_before": [t in seen for t in targets],
    }


def _link_ids(ids: list[str], names: dict[str, str], linker: Linker, log: LinkLog, dataset: str) -> list[str]:
    """IMDb ids -> movie_ids (the id, else the id2name title); in order, without repeats."""
    linked = []
    for imdb_id in dict.fromkeys(ids):
        link = linker.link(names.get(imdb_id), imdb_id=imdb_id)
        log.record(dataset, names.get(imdb_id) or imdb_id, link, imdb_id)
        if link.movie_id and link.movie_id not in linked:
            linked.append(link.movie_id)
    return linked


def _parse_context(text: str) -> list[dict]:
    """A context column -> [{"role", "text"}]: a list of texts, of [role, text] pairs, or role-marked."""
    text = text.strip()
    if not text:
        return []
    try:
        items = ast.literal_eval(text) if text[0] in "[(" else [text]
    except (ValueError, SyntaxError):
        items = [text]
    if isinstance(items, str):
        items = [items]
    turns, pending_role = [], None
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) == 2 and str(item[0]).upper() in _ROLE_MARKERS:
            turns.append({"role": _ROLE_MARKERS[str(item[0]).upper()], "text": nfc(str(item[1]))})
        elif isinstance(item, str) and item.strip().upper() in _ROLE_MARKERS:
            pending_role = _ROLE_MARKERS[item.strip().upper()]
        elif pending_role is not None:
            turns.append({"role": pending_role, "text": nfc(str(item))})
            pending_role = None
        else:
            turns.append({"role": None, "text": str(item)})
    unmarked = [t for t in turns if t["role"] is None]
    if unmarked:  # plain texts: alternate backwards from the last, the seeker's
        return _context([t["text"] for t in turns])
    return [t for t in turns if t["text"].strip()]
