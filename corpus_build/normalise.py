"""Normalising source rows before merging: canonical genres, title keys, numbers in titles."""

from __future__ import annotations

import re
from collections.abc import Iterable

import polars as pl

from corpus_build.movie_text import title_key

# The small genre vocabulary of the corpus. Upstream spellings (IMDb "Sci-Fi", MovieLens "Children",
# Wikipedia "Animated", Wikidata "science fiction film") map onto it; anything else is dropped.
CANONICAL_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary", "Drama",
    "Family", "Fantasy", "Film Noir", "History", "Horror", "Music", "Musical", "Mystery", "Romance",
    "Science Fiction", "Short", "Silent", "Sport", "Thriller", "War", "Western",
)

_GENRE_SYNONYMS: dict[str, str] = {
    **{g.casefold(): g for g in CANONICAL_GENRES},
    "animated": "Animation",
    "cartoon": "Animation",
    "children": "Family",
    "children's": "Family",
    "kids": "Family",
    "noir": "Film Noir",
    "film noir": "Film Noir",
    "neo noir": "Film Noir",
    "historical": "History",
    "period": "History",
    "biographical": "Biography",
    "biopic": "Biography",
    "sports": "Sport",
    "sci fi": "Science Fiction",
    "science fiction": "Science Fiction",
    "romantic": "Romance",
    "romantic comedy": "Romance",
    "slasher": "Horror",
    "supernatural": "Horror",
    "found footage": "Horror",
    "superhero": "Action",
    "martial arts": "Action",
    "disaster": "Action",
    "spy": "Thriller",
    "suspense": "Thriller",
    "psychological thriller": "Thriller",
    "satire": "Comedy",
    "parody": "Comedy",
    "black comedy": "Comedy",
    "comedy drama": "Comedy",
    "dance": "Music",
    "musical film": "Musical",
    "war drama": "War",
    "legal": "Drama",
    "political": "Drama",
    "documentary film": "Documentary",
    "short film": "Short",
    "silent film": "Silent",
}

_GENRE_NOISE = re.compile(r"[-_/]+")
_GENRE_SUFFIX = re.compile(r"\s+(film|movie)s?$")


def canonical_genre(raw: str | None) -> str | None:
    """'Sci-Fi' -> 'Science Fiction', 'Animated' -> 'Animation', 'comedy film' -> 'Comedy'; unknown -> None."""
    if not raw:
        return None
    text = _GENRE_NOISE.sub(" ", raw.strip().casefold())
    text = " ".join(text.split())
    if text in _GENRE_SYNONYMS:
        return _GENRE_SYNONYMS[text]
    return _GENRE_SYNONYMS.get(_GENRE_SUFFIX.sub("", text))


def canonical_genres(values: Iterable[str | None]) -> list[str]:
    """Canonical genres in first-seen order, without duplicates; unknown spellings dropped."""
    seen: dict[str, None] = {}
    for value in values:
        genre = canonical_genre(value)
        if genre is not None:
            seen.setdefault(genre, None)
    return list(seen)


_ROMAN = {"i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii"}


def sequel_markers(key: str) -> frozenset[str]:
    """Numbers and roman numerals in a title key: 'rocky ii' and 'rocky iii' must never fuzzy-match."""
    return frozenset(tok for tok in key.split() if tok.isdigit() or tok in _ROMAN)


def safe_title_key(title: str | None) -> str:
    """:func:`title_key`, or '' for a missing title."""
    return title_key(title) if title else ""


_PRINTABLE_ASCII = r"^[\x20-\x7e]*$"
_ARTICLES = "the|a|an|les|le|la|el|il|der|die|das|los|las"


def _ascii_title_key(expr: pl.Expr) -> pl.Expr:
    """:func:`title_key` for printable-ASCII titles, in polars (NFKD and accents are no-ops there)."""
    text = expr.str.replace_all(r" +", " ").str.strip_chars(" ")
    text = text.str.replace(r"(?i)^(.+?),\s*(l')$", "${2}${1}")  # "Homme, L'" -> "L'Homme"
    text = text.str.replace(rf"(?i)^(.+?),\s*({_ARTICLES})$", "${2} ${1}")  # "Matrix, The" -> "The Matrix"
    text = text.str.to_lowercase().str.replace_all("&", " and ", literal=True)
    text = text.str.replace_all(r"[^A-Za-z0-9_ ]", " ").str.replace_all(r" +", " ").str.strip_chars(" ")
    return text.str.replace(r"^(the|a|an) +", "")


def title_keys(titles: pl.Series) -> pl.Series:
    """:func:`title_key` of every title ('' for null): polars for printable ASCII, Python for the rest."""
    frame = pl.DataFrame({"title": titles}).with_columns(
        pl.col("title").fill_null("").str.contains(_PRINTABLE_ASCII).alias("_ascii")
    )
    fast = frame.select(
        pl.when(pl.col("_ascii")).then(_ascii_title_key(pl.col("title").fill_null(""))).alias("key")
    )["key"]
    slow = frame.filter(~pl.col("_ascii"))["title"].to_list()
    slow_keys = iter([safe_title_key(t) for t in slow])
    if not slow:
        return fast.alias(titles.name)
    keys = [k if k is not None else next(slow_keys) for k in fast.to_list()]
    return pl.Series(titles.name, keys, dtype=pl.String)
