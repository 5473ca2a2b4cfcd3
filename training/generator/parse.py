"""From a model's answer to a ranking of exactly the given candidates.

Tolerates extra text, duplicates and omissions: candidates the answer names come first, in the
order named; the others keep the retriever's order after them. Nothing outside the candidate set is
ever returned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from training.generator.prompt import Prompt

# A label is a capital letter standing alone ("C", "C.", "(C)", "C, A > B"); "A" and "I" followed by
# a lower-case word are English words ("A great pick", "I think"), not labels.
_LABEL = re.compile(r"(?<![\w'’])([A-Z])(?![\w'’])")
_WORDLIKE = re.compile(r"\s+[a-z]")


def _complete(named: Sequence[str], candidate_ids: Sequence[str]) -> tuple[str, ...]:
    """``named`` (deduplicated, in order, only candidates) then every other candidate in retriever order."""
    allowed = set(candidate_ids)
    ranking: list[str] = []
    for movie_id in named:
        if movie_id in allowed and movie_id not in ranking:
            ranking.append(movie_id)
    ranking.extend(m for m in candidate_ids if m not in ranking)
    return tuple(ranking)


def _label_positions(answer: str, label_to_id: Mapping[str, str]) -> list[tuple[int, str]]:
    found = []
    for match in _LABEL.finditer(answer):
        label = match.group(1)
        if label not in label_to_id:
            continue
        if label in ("A", "I") and _WORDLIKE.match(answer, match.end()):
            continue
        found.append((match.start(), label_to_id[label]))
    return found


def _title_positions(answer: str, candidate_ids: Sequence[str], movies: Mapping[str, Mapping]) -> list[tuple[int, str]]:
    found = []
    for movie_id in candidate_ids:
        title = ((movies.get(movie_id) or {}).get("title") or "").strip()
        if len(title) < 3:
            continue
        match = re.search(rf"(?<!\w){re.escape(title)}(?!\w)", answer, re.IGNORECASE)
        if match:
            found.append((match.start(), movie_id))
    return found


def parse_ranking(
    answer: str, prompt: Prompt, candidate_ids: Sequence[str], movies: Mapping[str, Mapping] | None = None
) -> tuple[tuple[str, ...], int]:
    """The ranking an answer expresses (labels or titles, in order of appearance) and how many it named."""
    positions = _label_positions(answer or "", prompt.label_of())
    positions += _title_positions(answer or "", prompt.candidate_ids, movies or {})
    named = [movie_id for _, movie_id in sorted(positions, key=lambda p: p[0])]
    ranking = _complete(named, candidate_ids)
    return ranking, len(set(named))


def label_scores_from_tokens(token_logprobs: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    """Top next-token log-probs ({" A": -0.3, "B": -1.2, ...}) -> the best score of each label seen."""
    wanted = set(labels)
    scores: dict[str, float] = {}
    for token, logprob in token_logprobs.items():
        label = token.strip().lstrip("▁").strip()
        if label in wanted and logprob is not None:
            scores[label] = max(float(logprob), scores.get(label, float("-inf")))
    return scores


def ranking_from_scores(
    label_scores: Mapping[str, float], prompt: Prompt, candidate_ids: Sequence[str]
) -> tuple[tuple[str, ...], tuple[float, ...] | None]:
    """Scored labels by descending score (ties keep retriever order), then the rest in retriever order."""
    label_to_id = prompt.label_of()
    order = {movie_id: i for i, movie_id in enumerate(candidate_ids)}
    scored = [(score, label_to_id[label]) for label, score in label_scores.items() if label in label_to_id]
    scored.sort(key=lambda item: (-item[0], order[item[1]]))
    ranking = _complete([movie_id for _, movie_id in scored], candidate_ids)
    if len(scored) != len(candidate_ids):
        return ranking, None
    return ranking, tuple(score for score, _ in scored)
