"""The ``preference`` backend: a black-box generator with a fixed taste, for proofs where the answer is known.

It ranks every candidate with a trait first (films from before 1980, or of one genre: see
:func:`trait_predicate`), targets included, then the others; within each group it keeps the order of
an inner generator, or the order it was shown when there is none. Nothing in the dialogue or in the
targets tells the retriever's supervised (NLL) term about this taste: only the rewards of candidate
sets do, so an alignment round that works must teach the retriever to leave such films out of its
top K (they push the targets down the generator's list), and an ``nll`` control round cannot.

Not offered by :func:`training.generator.make_generator`: it is a measuring instrument for
``benchmarks/alignment_proof.py`` and the tests, not a recommender.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence

from training.generator.base import Generator, RankRequest, RankResult

Trait = Callable[[Mapping], bool]
_YEAR = re.compile(r"^year\s*(<=|<|>=|>)\s*(\d{4})$")
_GENRE = re.compile(r"^genre\s*=\s*(.+)$")
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def trait_predicate(spec: str) -> Trait:
    """A test on a corpus row from ``"year<1980"`` (also <=, >, >=) or ``"genre=Horror"``; a film with
    no year or no genres never has the trait."""
    spec = spec.strip()
    if match := _YEAR.match(spec):
        compare, bound = _COMPARE[match.group(1)], int(match.group(2))
        return lambda movie: movie.get("year") is not None and compare(int(movie["year"]), bound)
    if match := _GENRE.match(spec):
        genre = match.group(1).strip().lower()
        return lambda movie: any(str(g).lower() == genre for g in movie.get("genres") or ())
    raise ValueError(f"unknown trait {spec!r}: expected e.g. 'year<1980' or 'genre=Horror'")


class PreferenceGenerator(Generator):
    """Candidates with the trait first, then the rest; each group in the inner generator's order (or as shown).

    Candidates need their corpus rows in ``RankRequest.movies`` (a film without one never has the trait).
    """

    name = "preference"

    def __init__(self, trait: str, inner: Generator | None = None) -> None:
        super().__init__()
        self.trait, self.has_trait, self.inner = trait, trait_predicate(trait), inner

    def preferred(self, movie_ids: Sequence[str], movies: Mapping[str, Mapping]) -> list[bool]:
        return [m in movies and self.has_trait(movies[m]) for m in movie_ids]

    def _rank_batch(self, requests: Sequence[RankRequest]) -> list[RankResult]:
        base = self.inner.rank_batch(requests) if self.inner is not None else [
            RankResult(r.candidate_ids, "model") for r in requests]
        results = []
        for request, inner in zip(requests, base, strict=True):
            if inner.source == "fallback":  # the inner generator failed: so does this one
                results.append(inner)
                continue
            flags = dict(zip(inner.ranking, self.preferred(inner.ranking, request.movies)))
            ranking = sorted(inner.ranking, key=lambda m: not flags[m])  # stable: inner order within groups
            results.append(RankResult(tuple(ranking), "model"))
        self.stats.add(calls=len(requests))
        return results

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
