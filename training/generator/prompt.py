"""Prompts: the dialogue plus labelled candidates (with their movie text) within a token budget.

Candidates are labelled with single capital letters (A, B, C, ...): each is one token for common
tokenizers, so a base model's next-token scores over the labels rank the candidates in one forward
pass (LlamaRec's verbalizer), and a chat model can answer with a short list of labels.
When the prompt is over budget, plots are trimmed first, then the oldest turns are dropped, then the
last turn is shortened, and at last candidates are shown by title and year only.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from corpus_build.movie_text import movie_text
from training.generator.base import RankRequest, Turn

LABELS: tuple[str, ...] = tuple(string.ascii_uppercase)  # at most 26 candidates are shown to the model
PLOT_STEPS: tuple[int | None, ...] = (None, 600, 300, 150, 60, 0)  # plot characters tried, in order
Mode = Literal["completion", "chat"]

HEADER = "Below is a conversation between a user and a movie recommender, then candidate movies."
COMPLETION_TAIL = (
    "Question: Which candidate movie should the recommender suggest next?\n"
    "Answer: The best recommendation is candidate"
)
CHAT_TAIL = (
    "Rank all {n} candidates from the best to the worst recommendation for the user. Answer only "
    "with their letters, best first, separated by commas (for example: {example})."
)
_ROLE_NAMES = {"user": "User", "seeker": "User", "assistant": "Recommender", "recommender": "Recommender"}


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters per token for English)."""
    return len(text) // 4 + 1


@dataclass(frozen=True)
class Prompt:
    text: str
    labels: tuple[str, ...]  # label of each shown candidate, in retriever order
    candidate_ids: tuple[str, ...]  # the shown candidates (the first len(LABELS) of the request)
    tokens: int  # by the counter used to build it
    plot_chars: int | None  # plot length used (None: full plots)
    turns_kept: int
    over_budget: bool  # still over budget with titles only and the end of the last turn

    def label_of(self) -> dict[str, str]:
        return dict(zip(self.labels, self.candidate_ids, strict=True))


def _turn_line(turn: Turn) -> str:
    role = str(turn.get("role") or "user")
    return f"{_ROLE_NAMES.get(role.lower(), role.title())}: {(turn.get('text') or '').strip()}"


def _candidate_line(label: str, movie_id: str, movies: Mapping[str, Mapping], plot_chars: int | None,
                    brief: bool = False) -> str:
    movie = movies.get(movie_id)
    if not movie:
        return f"{label}. {movie_id}"
    if brief:  # the last resort of the budget: title and year only
        return f"{label}. {movie_text({'title': movie.get('title') or movie_id, 'year': movie.get('year')})}"
    return f"{label}. {movie_text(movie, plot_chars=plot_chars)}"


def _render(turns: Sequence[Turn], lines: Sequence[str], tail: str) -> str:
    conversation = "\n".join(_turn_line(t) for t in turns) or "User: (no message yet)"
    return f"{HEADER}\n\nConversation:\n{conversation}\n\nCandidate movies:\n" + "\n".join(lines) + f"\n\n{tail}"


def _tail(mode: Mode, labels: Sequence[str]) -> str:
    if mode == "completion":
        return COMPLETION_TAIL
    example = ", ".join(labels[:3][::-1]) if len(labels) >= 3 else ", ".join(labels)
    return CHAT_TAIL.format(n=len(labels), example=example)


def build_prompt(
    request: RankRequest,
    mode: Mode = "completion",
    max_tokens: int = 2048,
    count_tokens: Callable[[str], int] = approx_tokens,
) -> Prompt:
    """The prompt for ``request``: full plots if they fit in ``max_tokens``, else trimmed ones."""
    shown = request.candidate_ids[: len(LABELS)]
    labels = LABELS[: len(shown)]
    tail = _tail(mode, labels)
    turns = list(request.context)

    def attempt(plot_chars: int | None, kept_turns: Sequence[Turn], brief: bool = False) -> tuple[str, int]:
        lines = [_candidate_line(lab, mid, request.movies, plot_chars, brief) for lab, mid in zip(labels, shown)]
        text = _render(kept_turns, lines, tail)
        return text, count_tokens(text)

    for plot_chars in PLOT_STEPS:  # 1. trim plots
        text, tokens = attempt(plot_chars, turns)
        if tokens <= max_tokens:
            return Prompt(text, labels, shown, tokens, plot_chars, len(turns), False)
    while len(turns) > 1:  # 2. drop the oldest turns
        turns = turns[1:]
        text, tokens = attempt(0, turns)
        if tokens <= max_tokens:
            return Prompt(text, labels, shown, tokens, 0, len(turns), False)
    if turns:  # 3. keep only the end of the last turn
        last = dict(turns[0])
        while tokens > max_tokens and len(last.get("text") or "") > 40:
            last["text"] = "..." + (last["text"] or "")[len(last["text"]) // 4 :]
            text, tokens = attempt(0, [last])
        turns = [last]
    if tokens > max_tokens:  # 4. candidates by title and year only (20 full lines can exceed ~800 tokens)
        text, tokens = attempt(0, turns, brief=True)
    return Prompt(text, labels, shown, tokens, 0, len(turns), tokens > max_tokens)
