"""How a movie is described, everywhere: ids, normalised titles and the one text that is embedded.

The retriever's item init, the vector store and the LLM prompt all describe a film through
:func:`movie_text`, so they agree on what a film "is".
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence

# Characters that are never part of a film's text: C0 controls other than tab, newline and carriage
# return, DEL, the C1 controls, and the bidirectional marks, embeddings, overrides and isolates (they
# reorder or hide what a terminal or a page shows: U+202E turns "evil\u202ecod.exe" into "evilexe.doc").
# One character class, valid both in Python's ``re`` and in polars' regex engine.
UNSAFE_CHARACTERS = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
_UNSAFE = re.compile(UNSAFE_CHARACTERS)
_ARTICLE_SUFFIX = re.compile(r"^(?P<body>.+?),\s*(?P<article>the|a|an|les|le|la|l'|el|il|der|die|das|los|las)$", re.I)
_NON_WORD = re.compile(r"[^\w\s]", re.UNICODE)
_SPACES = re.compile(r"\s+")
_LEADING_ARTICLE = re.compile(r"^(the|a|an)\s+", re.I)


def strip_unsafe(text: str) -> str:
    """``text`` without control and bidirectional-override characters (:data:`UNSAFE_CHARACTERS`)."""
    return _UNSAFE.sub("", text)


def nfc(text: str) -> str:
    """Unicode NFC with collapsed white space and no control or bidi-override characters."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", strip_unsafe(text))).strip()


def restore_article(title: str) -> str:
    """'Matrix, The' -> 'The Matrix' (MovieLens and IMDb-style trailing articles)."""
    title = nfc(title)
    match = _ARTICLE_SUFFIX.match(title)
    if not match:
        return title
    article = match.group("article")
    sep = "" if article.endswith("'") else " "
    return f"{article}{sep}{match.group('body')}"


def title_key(title: str) -> str:
    """A matching key: accents stripped, case folded, punctuation and a leading article removed."""
    text = restore_article(title)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("&", " and ")
    text = _NON_WORD.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    return _LEADING_ARTICLE.sub("", text)


def rar_movie_id(title: str, year: int | None) -> str:
    """Stable id for a film no source knows an IMDb id for: 'rar:' + hash of title key and year."""
    digest = hashlib.sha1(f"{title_key(title)}|{year or ''}".encode()).hexdigest()[:12]
    return f"rar:{digest}"


def normalise_imdb_id(value: str | int | None) -> str | None:
    """'tt0133093', '0133093', 133093 -> 'tt0133093'; anything else -> None."""
    if value is None:
        return None
    text = str(value).strip()
    if text.startswith("tt"):
        text = text[2:]
    if not text.isdigit() or int(text) == 0:
        return None
    return f"tt{int(text):07d}"


def _join(values: Sequence[str] | None, limit: int | None = None) -> str:
    values = [v for v in (values or []) if v]
    return ", ".join(values[:limit] if limit else values)


def movie_text(movie: Mapping, plot_chars: int | None = None) -> str:
    """The text that describes a film: title (year), genres, directors, cast, plot.

    Missing fields are left out, so a film with no plot still gets a text from what it has.
    ``plot_chars`` trims the plot (prompts under a token budget).
    """
    title = movie.get("title") or ""
    year = movie.get("year")
    parts = [f"{title} ({year})" if year else title]
    if genres := _join(movie.get("genres")):
        parts.append(f"Genres: {genres}.")
    if directors := _join(movie.get("directors")):
        parts.append(f"Directed by {directors}.")
    if cast := _join(movie.get("cast"), limit=5):
        parts.append(f"Starring {cast}.")
    plot = (movie.get("plot") or "").strip()
    if plot:
        parts.append(plot[:plot_chars].rstrip() if plot_chars is not None else plot)
    return " ".join(parts)


def content_hash(movie: Mapping) -> str:
    """Hash of :func:`movie_text`: the vector of a film is recomputed exactly when this changes."""
    return hashlib.sha256(movie_text(movie).encode()).hexdigest()[:16]
