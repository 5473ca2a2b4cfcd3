"""Resolve a film mention (an IMDb id, "Super Troopers (2001)", "Matrix, The (1999)") to a corpus movie_id.

Order of evidence, strongest first:

1. an IMDb id that the corpus holds (confidence 1.0);
2. the normalised title key (:func:`corpus_build.movie_text.title_key`, which also restores a trailing
   article) with the same year (0.98), or year +-1 (0.93); without a year, the key alone (0.90 when
   it names one film, 0.80 when the best known of several); a corpus film without a year matches
   the same title of any year (0.85). Both sides' alternate titles count
   ("Dumb & Dumber (Dumb and Dumber)", "Men in Black (a.k.a. MIB)"); then the loose key, which ignores
   spaces and spells numbers as digits ("Chain Saw" = "Chainsaw", "Chapter Two" = "Chapter 2"; 0.92);
3. a shortened title that starts a longer one of year +-1 ("Jumanji (2017)" -> "Jumanji: Welcome to
   the Jungle"; 0.85; without a year 0.75);
4. a fuzzy match of the key (rapidfuzz ``ratio``, word order kept) among films of year +-1, 0..100;
   below ``fuzzy_threshold`` there is no fuzzy link. Confidence = score / 100 * 0.9;
5. the exact title at most 5 years off, when the dataset's year is wrong ("Click (2010)"; 0.70).

"Best known" = most IMDb votes, then the earliest year (the original rather than a remake).

A :class:`Linker` is built once over the corpus: exact steps are dict look-ups, the fuzzy step only
searches the films of three years, and every answer is cached per distinct mention.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import polars as pl

from corpus_build.movie_text import nfc, normalise_imdb_id, title_key

# Unresolved mentions: one row per distinct (dataset, mention), for inspection.
UNRESOLVED_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String,
    "mention": pl.String,  # the text as the dataset wrote it
    "imdb_id": pl.String,  # the id the dataset gave, when it gave one
    "occurrences": pl.Int64,  # how often the dataset mentions it
    "best_candidate": pl.String,  # closest corpus film below the threshold, "Title (Year)"
    "best_score": pl.Float64,  # its fuzzy score 0..100 (null when no candidate)
}

_TRAILING_YEAR = re.compile(r"^(?P<title>.*?)\s*\(\s*(?P<year>\d{4})(?:[-–]\d{0,4})?\s*\)\s*$")
_PARENTHETICAL = re.compile(r"\s+\((?P<inner>[^()]*)\)\s*$")  # 'Some Girl(s)' keeps its '(s)'
_SUBTITLE = re.compile(r"^(?:the |an? )?[^\s:]+\s*(?::|-\s|–)", re.I)  # 'Jumanji: ...', 'Ray - ...'
_AKA = re.compile(r"^(?:a\.k\.a\.|aka)\s+", re.I)

DEFAULT_FUZZY_THRESHOLD = 88.0
MAX_YEAR_ERROR = 5  # the last step trusts an exact title at most this many years off

# Spelled-out and roman numbers read as digits by the loose key ("Chapter Two" == "Chapter 2").
_NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "ii": "2", "iii": "3", "iv": "4", "vi": "6", "vii": "7",
    "viii": "8", "ix": "9",
}


def loose_key(key: str) -> str:
    """A :func:`title_key` with numbers as digits and no spaces ('chain saw' == 'chainsaw')."""
    return "".join(_NUMBER_WORDS.get(token, token) for token in key.split() if token != "and")


@dataclass(frozen=True)
class Link:
    movie_id: str | None
    confidence: float
    # "imdb_id", "title_year", "title_year_pm1", "title_undated", "title_only", "title_loose",
    # "title_prefix", "fuzzy",
    # "title_other_year", "none"
    method: str
    best_candidate: str | None = None  # for misses: the closest film below the threshold
    best_score: float | None = None


NO_LINK = Link(None, 0.0, "none")


def split_title_year(text: str) -> tuple[str, int | None]:
    """'Super Troopers (2001)' -> ('Super Troopers', 2001); 'American Pie ' -> ('American Pie', None)."""
    text = nfc(unquote(text or ""))
    match = _TRAILING_YEAR.match(text)
    if not match:
        return text, None
    return match.group("title").strip(), int(match.group("year"))


def title_variants(title: str) -> list[str]:
    """The title and its alternates: MovieLens writes 'Main, The (Alternate, La) (a.k.a. Other)'."""
    variants, main = [title], title
    while (match := _PARENTHETICAL.search(main)) and match.start() > 0:
        variants.append(_AKA.sub("", match.group("inner").strip()))
        main = main[: match.start()].strip()
        variants.append(main)
    return [v for v in dict.fromkeys(variants) if v and title_key(v)]


@dataclass
class _Film:
    year: int | None
    votes: int
    label: str  # "Title (Year)"


@dataclass
class Linker:
    """Mention -> movie_id over one corpus frame (CORPUS_SCHEMA; only movie_id, title, year needed)."""

    corpus: pl.DataFrame
    fuzzy_threshold: float = DEFAULT_FUZZY_THRESHOLD
    _ids: set[str] = field(init=False, repr=False)
    _films: dict[str, _Film] = field(init=False, repr=False)
    _by_key: dict[str, list[str]] = field(init=False, repr=False)  # key -> movie_ids
    _by_year: dict[int, tuple[list[str], list[str]]] = field(init=False, repr=False)  # keys, ids
    _cache: dict[tuple, Link] = field(init=False, repr=False)
    _sorted_keys: list[str] = field(init=False, repr=False)  # for prefix look-ups
    _by_loose: dict[str, list[str]] = field(init=False, repr=False)  # loose_key -> movie_ids

    def __post_init__(self) -> None:
        for column in ("movie_id", "title", "year"):
            if column not in self.corpus.columns:
                raise ValueError(f"corpus frame lacks column {column!r} (see CORPUS_SCHEMA)")
        self._films, self._by_key, self._cache = {}, defaultdict(list), {}
        by_year: dict[int, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        has_votes = "imdb_votes" in self.corpus.columns
        has_aliases = "aliases" in self.corpus.columns
        for row in self.corpus.iter_rows(named=True):
            movie_id, year = row["movie_id"], row["year"]
            label = f"{row['title']} ({year})" if year else row["title"]
            self._films[movie_id] = _Film(year, (row["imdb_votes"] or 0) if has_votes else 0, label)
            names = [row["title"], *((row["aliases"] or []) if has_aliases else [])]
            variants = [v for n in names if n for v in title_variants(n)]
            for key in dict.fromkeys(title_key(v) for v in variants):  # title_variants: every key non-empty
                self._by_key[key].append(movie_id)
                if year is not None:
                    by_year[year][0].append(key)
                    by_year[year][1].append(movie_id)
        self._by_year = dict(by_year)
        self._ids = set(self._films)
        self._sorted_keys = sorted(self._by_key)
        self._by_loose = defaultdict(list)
        for key, ids in self._by_key.items():
            self._by_loose[loose_key(key)] += ids

    @classmethod
    def from_parquet(cls, path: str | Path, **kwargs) -> Linker:
        from corpus_build.storage import as_path, parquet_schema, read_parquet

        path = as_path(path)
        if not path.exists():
            raise FileNotFoundError(f"movie corpus not found at {path}: materialise movie_corpus first")
        columns = [c for c in ("movie_id", "title", "year", "aliases", "imdb_votes") if c in parquet_schema(path)]
        return cls(read_parquet(path, columns=columns), **kwargs)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, movie_id: object) -> bool:
        return movie_id in self._ids

    def label(self, movie_id: str) -> str:
        """'Title (Year)' of a corpus film."""
        return self._films[movie_id].label

    def year(self, movie_id: str) -> int | None:
        return self._films[movie_id].year

    # -- public entry points -------------------------------------------------------------------

    def link(self, text: str | None = None, imdb_id: str | int | None = None, year: int | None = None) -> Link:
        """Link a mention: an IMDb id when given, else 'Title (Year)' text (or title plus ``year``)."""
        key = (text, str(imdb_id) if imdb_id is not None else None, year)
        if key not in self._cache:
            self._cache[key] = self._link(text, imdb_id, year)
        return self._cache[key]

    def link_many(self, texts: Iterable[str]) -> list[Link]:
        return [self.link(t) for t in texts]

    # -- steps -----------------------------------------------------------------------------------

    def _link(self, text: str | None, imdb_id, year: int | None) -> Link:
        normalised = normalise_imdb_id(imdb_id)
        if normalised and normalised in self._ids:
            return Link(normalised, 1.0, "imdb_id")
        if not text or not text.strip():
            return NO_LINK
        title, parsed_year = split_title_year(text)
        year = year if year is not None else parsed_year
        keys = [k for k in dict.fromkeys(title_key(v) for v in title_variants(title)) if k]
        for step in (self._exact, self._loose, self._prefix):
            for key in keys:
                if link := step(key, year):
                    return link
        best = NO_LINK
        for key in keys:
            candidate = self._fuzzy(key, year)
            if candidate.movie_id and not best.movie_id or (candidate.best_score or 0) > (best.best_score or 0):
                best = candidate
        if best.movie_id is None and year is not None:
            for key in keys:
                if link := self._other_year(key, year):
                    return link
        return best

    def _most_voted(self, ids: list[str]) -> str:
        """The best known of several films: most IMDb votes, then the earliest (the original)."""
        return min(ids, key=lambda i: (-self._films[i].votes, self._films[i].year or 9999, i))

    def _prefixed(self, key: str) -> list[str]:
        """Films whose key extends ``key`` by whole words ('star wars' -> 'star wars episode iv ...')."""
        start = bisect.bisect_left(self._sorted_keys, key + " ")
        ids = []
        for candidate in self._sorted_keys[start:]:
            if not candidate.startswith(key + " "):
                break
            ids += self._by_key[candidate]
        return ids

    def _exact(self, key: str, year: int | None) -> Link | None:
        ids = self._by_key.get(key)
        if not ids:
            return None
        if year is None:
            if len(set(ids)) == 1:
                return Link(ids[0], 0.90, "title_only")
            return Link(self._most_voted(ids), 0.80, "title_only")
        same = [i for i in ids if self._films[i].year == year]
        if same:
            return Link(self._most_voted(same), 0.98, "title_year")
        near = [i for i in ids if self._films[i].year is not None and abs(self._films[i].year - year) == 1]
        if near:
            return Link(self._most_voted(near), 0.93, "title_year_pm1")
        undated = [i for i in ids if self._films[i].year is None]  # corpus films no source dates
        if undated:
            return Link(self._most_voted(undated), 0.85, "title_undated")
        return None

    def _loose(self, key: str, year: int | None) -> Link | None:
        """Same title up to spacing and number spelling, same year +-1 (or no year given)."""
        ids = self._by_loose.get(loose_key(key), [])
        if year is not None:
            ids = [i for i in ids if self._films[i].year is not None and abs(self._films[i].year - year) <= 1]
        if not ids:
            return None
        return Link(self._most_voted(ids), 0.92 if year is not None else 0.78, "title_loose")

    def _prefix(self, key: str, year: int | None) -> Link | None:
        """A shortened title ('Kill Bill', 'Jumanji (2017)') that starts a longer one of that year.

        A one-word key must be a main title before a subtitle ('Jumanji: Welcome ...'), not the first
        word of another title ('Contact High'), and have four letters or more.
        """
        ids = self._prefixed(key)
        if len(key.split()) < 2:
            if len(key) < 4:
                return None
            ids = [i for i in ids if _SUBTITLE.match(self._films[i].label)]
        if year is not None:
            ids = [i for i in ids if self._films[i].year is not None and abs(self._films[i].year - year) <= 1]
        if not ids:
            return None
        return Link(self._most_voted(ids), 0.85 if year is not None else 0.75, "title_prefix")

    def _other_year(self, key: str, year: int) -> Link | None:
        """Exact title whose only films are 2-5 years away (the dataset's year is wrong): the nearest one."""
        if len(key) < 4:
            return None
        ids = [i for i in self._by_key.get(key, [])
               if self._films[i].year is not None and abs(self._films[i].year - year) <= MAX_YEAR_ERROR]
        if not ids:
            return None
        nearest = min(ids, key=lambda i: (abs(self._films[i].year - year), -self._films[i].votes))
        return Link(nearest, 0.70, "title_other_year")

    def _fuzzy(self, key: str, year: int | None) -> Link:
        from rapidfuzz import fuzz, process

        if year is None or len(key.replace(" ", "")) < 8:
            return NO_LINK  # without a year, or for short titles ('Sing' ~ 'Swing'), too ambiguous
        keys, ids = [], []
        for y in (year - 1, year, year + 1):
            block = self._by_year.get(y)
            if block:
                keys += block[0]
                ids += block[1]
        if not keys:
            return NO_LINK
        match = process.extractOne(key, keys, scorer=fuzz.ratio)  # word order matters
        if match is None:
            return NO_LINK
        _, score, index = match
        movie_id = ids[index]
        if score >= self.fuzzy_threshold:
            return Link(movie_id, round(score / 100 * 0.9, 4), "fuzzy", self.label(movie_id), float(score))
        return Link(None, 0.0, "none", self.label(movie_id), float(score))


@dataclass
class LinkLog:
    """Counts links per dataset and keeps the distinct unresolved mentions."""

    mentions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    linked: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    methods: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _unresolved: dict[tuple[str, str, str | None], list] = field(default_factory=dict)

    def record(self, dataset: str, mention: str | None, link: Link, imdb_id: str | None = None) -> None:
        self.mentions[dataset] += 1
        self.methods[(dataset, link.method)] += 1
        if link.movie_id is not None:
            self.linked[dataset] += 1
            return
        key = (dataset, mention or "", imdb_id)
        entry = self._unresolved.setdefault(key, [0, link.best_candidate, link.best_score])
        entry[0] += 1

    def link_rate(self, dataset: str) -> float:
        total = self.mentions.get(dataset, 0)
        return self.linked.get(dataset, 0) / total if total else 0.0

    def rates(self) -> dict[str, float]:
        return {d: self.link_rate(d) for d in sorted(self.mentions)}

    def unresolved(self) -> pl.DataFrame:
        rows = [
            {"dataset": d, "mention": m, "imdb_id": i, "occurrences": n, "best_candidate": c, "best_score": s}
            for (d, m, i), (n, c, s) in sorted(self._unresolved.items(), key=lambda kv: (kv[0][0], -kv[1][0]))
        ]
        return pl.DataFrame(rows, schema=UNRESOLVED_SCHEMA)

    def merge(self, other: LinkLog) -> LinkLog:
        for name in ("mentions", "linked", "methods"):
            for key, value in getattr(other, name).items():
                getattr(self, name)[key] += value
        for key, (n, c, s) in other._unresolved.items():
            entry = self._unresolved.setdefault(key, [0, c, s])
            entry[0] += n
        return self
