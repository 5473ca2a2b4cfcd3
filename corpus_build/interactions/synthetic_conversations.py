"""Conversations synthesised from MovieLens histories, for the offline ``sample`` profile.

Each user with enough history gives one dialogue built from the last films of its *train* part (the
sequence's validation and test films are never shown, so the two tables do not leak into each other):
the seeker names films it liked, the recommender answers with the next film of the history (the
target), the seeker acknowledges it and names another, the recommender recommends the next one.
Templates are chosen by a seeded generator. The dialogue's split is a stable hash of its id.
"""

from __future__ import annotations

import random

import polars as pl

from corpus_build.interactions.splits import hash_split
from corpus_build.interactions.turns import RECOMMENDER, SEEKER, Utterance, dialog_rows
from corpus_build.linking import Linker

DATASET = "movielens_synthetic"
FILMS_PER_DIALOG = 6

_OPENERS = [
    "Hi! I really enjoyed {a} and {b}. What should I watch next?",
    "Hello, I'm in the mood for something like {a} or {b}. Any ideas?",
    "I loved {a}, and {b} was great too. Can you recommend a movie?",
]
_RECOMMENDS = ["You might like {t}.", "Have you seen {t}? I think you'd enjoy it.", "I'd recommend {t}."]
_FOLLOW_UPS = [
    "I've seen {t} already, it was good. I also liked {c}. Anything else?",
    "Thanks, {t} sounds good. I'm also a fan of {c}. What else would you suggest?",
]
_SECOND = ["Then try {t}.", "In that case, {t} is a good pick.", "You should watch {t} next."]


def synthesise(sequences: pl.DataFrame, linker: Linker, seed: int = 1234, max_dialogs: int | None = None) -> list[dict]:
    """CONVERSATION_TURNS rows, two recommender turns per user with >= 6 train films."""
    rng = random.Random(seed)
    rows = []
    for dataset, user_id, train in sequences.select("dataset", "user_id", "train_movie_ids").iter_rows():
        films = [f for f in (train or []) if f in linker][-FILMS_PER_DIALOG:]
        if len(films) < FILMS_PER_DIALOG:
            continue
        dialog_id = f"{dataset}:{user_id}"
        rows += dialog_rows(DATASET, hash_split(dialog_id, seed), dialog_id, _dialog(films, linker, rng))
        if max_dialogs is not None and len({r["dialog_id"] for r in rows}) >= max_dialogs:
            break
    return rows


def _dialog(films: list[str], linker: Linker, rng: random.Random) -> list[Utterance]:
    a, b, t1, c, _, t2 = films
    name = linker.label
    return [
        Utterance(SEEKER, rng.choice(_OPENERS).format(a=name(a), b=name(b)), [a, b]),
        Utterance(RECOMMENDER, rng.choice(_RECOMMENDS).format(t=name(t1)), [t1], [t1]),
        Utterance(SEEKER, rng.choice(_FOLLOW_UPS).format(t=name(t1), c=name(c)), [t1, c]),
        Utterance(RECOMMENDER, rng.choice(_SECOND).format(t=name(t2)), [t2], [t2]),
    ]
