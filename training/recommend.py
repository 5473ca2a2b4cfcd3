"""``rar recommend``'s library half: link the titles a message mentions, retrieve candidates, rank them.

Usable from a notebook: pass the corpus path, a retrieve function and a generator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from training.fusion import fuse_rankings
from training.generator.base import Generator, RankRequest

# Capitalised one-word spans that are everyday words, not film mentions, in a chat message.
_COMMON_WORDS = {"i", "im", "hi", "hello", "what", "any", "something", "anything", "please", "thanks", "and",
                 "the", "a", "an", "my", "me", "we", "you", "it", "its", "but", "so", "also", "movie", "movies",
                 "film", "films", "next", "yes", "no", "ok", "okay", "maybe", "love", "like", "loved", "liked"}
_WORD = re.compile(r"[\w'’:&.-]+")
_EXACT_METHODS = ("title_year", "title_year_pm1", "title_only", "title_loose", "imdb_id")
Retrieve = Callable[[Sequence[str], str, int], list[tuple[str, float]]]  # (history ids, text, k) -> (id, score)


def _spans(text: str, max_words: int) -> list[tuple[int, int, str]]:
    """(first word, end word, text) of every run of up to ``max_words`` words starting with a capital
    or a digit, longest first; a trailing "(1999)" year is kept with the title."""
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
    spans = []
    for i, (start, _, first) in enumerate(words):
        if not (first[0].isupper() or first[0].isdigit()):
            continue
        for j in range(min(len(words), i + max_words), i, -1):
            end = words[j - 1][1]
            year = re.match(r"\s*\((\d{4})\)", text[end:])
            piece = text[start:end].rstrip(".:,-") + (f" ({year.group(1)})" if year else "")
            if j - i == 1 and (len(first) < 3 or first.lower().strip(".") in _COMMON_WORDS):
                continue
            spans.append((i, j, piece))
    return sorted(spans, key=lambda s: (-(s[1] - s[0]), s[0]))


def find_mentions(text: str, linker, max_words: int = 8) -> list[str]:
    """movie_ids of the titles ``text`` names (exact or loose title matches only), in order of appearance."""
    taken: set[int] = set()
    found: list[tuple[int, str]] = []
    for first, end, piece in _spans(text, max_words):
        if taken & set(range(first, end)):
            continue
        link = linker.link(piece)
        if link.movie_id and link.method in _EXACT_METHODS:
            taken |= set(range(first, end))
            found.append((first, link.movie_id))
    return list(dict.fromkeys(movie_id for _, movie_id in sorted(found)))


class Recommender:
    """Everything ``rar recommend`` needs, loaded once and reused across messages: the title linker, the
    corpus rows, a retrieve function and the generator (the recommend service keeps one alive)."""

    def __init__(self, corpus_path: str | Path, retrieve: Retrieve, generator: Generator, candidates: int = 20,
                 linker=None, generator_weight: float = 1.0):
        from corpus_build.linking import Linker
        from training.turn_pools import CorpusLookup

        self.retrieve, self.generator, self.candidates = retrieve, generator, candidates
        self.generator_weight = generator_weight
        self.corpus = CorpusLookup.from_parquet(corpus_path)
        self.linker = linker or Linker(self.corpus.corpus, fuzzy_threshold=101.0)  # no fuzzy links in free text

    def recommend(self, text: str, k: int) -> tuple[list[dict], list[str]]:
        """(top-``k`` recommended corpus rows with their rank, the movie_ids the message mentioned).

        The generator ranks the retriever's top ``max(k, candidates)`` films (mentioned films excluded); its
        order is fused with the retriever's at ``generator_weight`` (:func:`training.fusion.fuse_rankings`)."""
        mentioned = find_mentions(text, self.linker)
        retrieved = [movie_id for movie_id, _ in self.retrieve(mentioned, text, max(k, self.candidates))]
        retrieved = [m for m in dict.fromkeys(retrieved) if m not in mentioned]
        movies = self.corpus(retrieved + mentioned)
        result = self.generator.rank(RankRequest.from_text(text, retrieved, movies))
        ranking = fuse_rankings(retrieved, result.ranking, self.generator_weight)
        return [{"rank": i + 1, **movies.get(m, {"movie_id": m})} for i, m in enumerate(ranking[:k])], mentioned


def recommend(text: str, k: int, corpus_path: str | Path, retrieve: Retrieve, generator: Generator,
              linker=None, candidates: int = 20, generator_weight: float = 1.0) -> tuple[list[dict], list[str]]:
    """(top-``k`` recommended corpus rows with their rank, the movie_ids the message mentioned)."""
    return Recommender(corpus_path, retrieve, generator, candidates, linker, generator_weight).recommend(text, k)
