"""Cross-check our ReDial test turns with the turns the LLMs-as-zero-shot-CRS harness prepared.

``crs_turns/redial/test.jsonl`` (3,552 turns; CRSLab processing) gives per recommender turn the
context, the response and ``rec``: DBpedia entity ids (``entity2id.json``). A turn of theirs is paired
with ours by (conversation id, turn position = len(context) - 1); each of their targets is resolved to
a movie_id, first among the films of the same dialogue by title (DBpedia names carry no year), else
with the linker. A pair agrees when both target sets are equal; disagreements are classified per film.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import polars as pl

from corpus_build.linking import Linker, loose_key, split_title_year, title_variants
from corpus_build.movie_text import title_key

_URI_SUFFIX = re.compile(r"^(?P<title>.*?)\s*\((?:(?P<year>\d{4})\s+)?(?:[\w\s]*?film|miniseries|TV series|"
                         r"franchise|movie|series)\)$")


def uri_title(uri: str) -> tuple[str, int | None]:
    name = unquote(uri.strip("<>").rsplit("/", 1)[-1]).replace("_", " ")
    match = _URI_SUFFIX.match(name)
    if match:
        return match.group("title"), int(match.group("year")) if match.group("year") else None
    return name, None


def _title_keys(movie_id: str, year: int | None, linker: Linker) -> set[str]:
    label_title, label_year = split_title_year(linker.label(movie_id))
    if year and label_year and abs(year - label_year) > 1:
        return set()
    return {k for k in (title_key(v) for v in title_variants(label_title)) if k}


_LEVELS = (
    lambda key, k: key == k,
    lambda key, k: loose_key(key) == loose_key(k),
    lambda key, k: k.startswith(key + " "),  # DBpedia 'Avengers: Infinity War' ~ '... - Part I'
    lambda key, k: key.startswith(k + " "),
)


def resolve_theirs(uri: str, dialog_films: list[str], linker: Linker) -> str | None:
    """Their DBpedia target -> movie_id: the closest-named film of the same dialogue, else the linker."""
    title, year = uri_title(uri)
    key = title_key(title)
    keys = {movie_id: _title_keys(movie_id, year, linker) for movie_id in dialog_films}
    for same in _LEVELS:
        for movie_id, film_keys in keys.items():
            if any(same(key, k) for k in film_keys):
                return movie_id
    from rapidfuzz import fuzz

    scored = [(max(fuzz.ratio(key, k) for k in ks), m) for m, ks in keys.items() if ks]
    if scored and max(scored)[0] >= 85:  # 'Kill Bill: Volume 1' ~ 'Kill Bill: Vol. 1' in the same dialogue
        return max(scored)[1]
    return linker.link(title, year=year).movie_id


def cross_check(mirror: Path, turns_suggested: pl.DataFrame, turns_mentioned: pl.DataFrame, linker: Linker) -> dict:
    crs_dir = mirror / "crs_turns/redial"
    names = {v: k for k, v in json.loads((crs_dir / "entity2id.json").read_text()).items()}
    ours = {(d, i): r for d, i, r in zip(turns_suggested["dialog_id"], turns_suggested["turn_index"],
                                        turns_suggested.iter_rows(named=True))}
    mentioned = {(d, i): set(t) for d, i, t in turns_mentioned.select("dialog_id", "turn_index",
                                                                      "target_movie_ids").iter_rows()}
    dialog_films: dict[str, list[str]] = {}
    for d, h, t in turns_mentioned.select("dialog_id", "history_movie_ids", "target_movie_ids").iter_rows():
        dialog_films.setdefault(d, [])
        dialog_films[d] += [m for m in h + t if m not in dialog_films[d]]
    kinds, examples, paired, agree, theirs_only = Counter(), {}, 0, 0, Counter()
    theirs_keys = set()
    for line in (crs_dir / "test.jsonl").read_text().splitlines():
        turn = json.loads(line)
        key = (turn["dialog_id"].removeprefix("test_"), len(turn["context"]) - 1)
        theirs_keys.add(key)
        uris = [names[i] for i in turn["rec"]]
        if key not in ours:
            why = "recommender mentions only non-suggested films" if key in mentioned else "no linked film in turn"
            theirs_only[why] += 1
            continue
        paired += 1
        films = dialog_films.get(key[0], [])
        theirs = {resolve_theirs(u, films, linker) or u for u in uris}
        mine = set(ours[key]["target_movie_ids"])
        if theirs == mine:
            agree += 1
            continue
        for extra in theirs - mine:
            kind = ("their target is not a film of our corpus (unlinked DBpedia entity)" if extra.startswith("<")
                    else "mentioned by the recommender but not marked suggested" if extra in mentioned.get(key, ())
                    else "their target not mentioned in this turn by our parse")
            kinds[kind] += 1
            examples.setdefault(kind, (turn["resp"][:100], extra if extra.startswith("<") else linker.label(extra)))
        for extra in mine - theirs:
            kind = "our target absent from their rec (no DBpedia entity on their side)"
            kinds[kind] += 1
            examples.setdefault(kind, (turn["resp"][:100], linker.label(extra)))
    ours_only = len(set(ours) - theirs_keys)
    return {"their_turns": len(theirs_keys), "our_turns": len(ours), "paired": paired, "agree": agree,
            "agreement": agree / paired if paired else 0.0, "disagreement_kinds": dict(kinds),
            "examples": examples, "their_turns_unpaired": dict(theirs_only), "our_turns_unpaired": ours_only}
