"""The UniCRS turn-list format: one dialogue per line, a JSON list of turns.

UniCRS (Wang et al., KDD 2022) and the code built on it pass INSPIRED around this way
(``data/inspired/{train,valid,test}_data_dbpedia.jsonl``): each turn is
``{"role": "SEEKER" | "RECOMMENDER", "text", "movie": ["Title (Year)", ...], "entity_link",
"entity_name", "movie_link", "movie_name"}`` with consecutive utterances of a speaker already joined.
Only ``role``, ``text`` and ``movie`` are used; the ``*_link`` / ``*_name`` fields are DBpedia
annotations. ``USER`` / ``SYSTEM`` are read as seeker / recommender.

The format has no dialogue id, so a dialogue's id is ``unicrs-`` + a hash of its text
(:func:`corpus_build.interactions.turns.dialog_fingerprint`): stable across copies and line orders,
and the same dialogue in two files gets the same id.

Recommendation rule, as for the INSPIRED TSV: every film in ``movie`` of a recommender turn is a
target of that turn. ``movie`` comes from UniCRS's entity linking, not from INSPIRED's annotators: in
the INSPIRED train file ~17% of its titles are not written as such in their turn's text, mostly
spelling variants ("Frozen 2", "Forest Gump") and some wrong links ("I Am Michael (2015)" for "I am the
misses"); they are kept as the format states them.
"""

from __future__ import annotations

from pathlib import Path

from corpus_build.interactions.turns import (
    RECOMMENDER,
    SEEKER,
    Utterance,
    dialog_fingerprint,
    dialog_rows,
    merge_consecutive,
    read_jsonl,
    titled_utterance,
)
from corpus_build.linking import Linker, LinkLog
from corpus_build.movie_text import nfc

ROLES = {"SEEKER": SEEKER, "USER": SEEKER, "RECOMMENDER": RECOMMENDER, "SYSTEM": RECOMMENDER}
ID_PREFIX = "unicrs-"


def read_unicrs(
    path: str | Path, split: str, linker: Linker, log: LinkLog, dataset: str = "inspired"
) -> tuple[list[dict], list[dict]]:
    """Turn rows and quarantine rows of one UniCRS jsonl file; ``split`` names the file's split."""
    rows: list[dict] = []

    def one_dialog(turns) -> None:
        if isinstance(turns, dict):
            hint = " (an object with 'messages' is the ReDial format: redial.read_redial)" if "messages" in turns else ""
            raise ValueError(f"a JSON object, not a list of turns{hint}")
        if not isinstance(turns, list) or not turns:
            raise ValueError("not a non-empty JSON list of turns")
        utterances = merge_consecutive([_utterance(number, turn, linker, log, dataset)
                                        for number, turn in enumerate(turns)])
        rows.extend(dialog_rows(dataset, split, ID_PREFIX + dialog_fingerprint(utterances), utterances))

    quarantine = read_jsonl(path, dataset, one_dialog, errors=(ValueError, TypeError))
    return rows, quarantine


def _utterance(number: int, turn, linker: Linker, log: LinkLog, dataset: str) -> Utterance:
    if not isinstance(turn, dict):
        raise ValueError(f"turn {number} is not an object")
    role = ROLES.get(str(turn.get("role", "")).strip().upper())
    if role is None:
        raise ValueError(f"turn {number} has role {turn.get('role')!r}, expected SEEKER or RECOMMENDER")
    movies = turn.get("movie") or []
    if not isinstance(movies, list):
        raise ValueError(f"turn {number}: 'movie' is not a list")
    return titled_utterance(role, nfc(str(turn.get("text") or "")), (str(m) for m in movies), linker, log, dataset)
