"""Prompt building within a token budget and parsing answers into rankings of the given candidates."""

from __future__ import annotations

import pytest

from training.generator.base import RankRequest
from training.generator.parse import label_scores_from_tokens, parse_ranking, ranking_from_scores
from training.generator.prompt import COMPLETION_TAIL, LABELS, build_prompt

MOVIES = {
    "tt0078748": {"title": "Alien", "year": 1979, "genres": ["Horror", "Sci-Fi"], "directors": ["Ridley Scott"],
                  "plot": "The crew of a commercial spacecraft encounters a deadly lifeform. " * 6},
    "tt2543164": {"title": "Arrival", "year": 2016, "genres": ["Drama", "Sci-Fi"],
                  "plot": "A linguist works with the military to communicate with alien lifeforms. " * 6},
    "tt0133093": {"title": "The Matrix", "year": 1999, "cast": ["Keanu Reeves"],
                  "plot": "A hacker learns the true nature of his reality. " * 6},
}
IDS = ("tt0078748", "tt2543164", "tt0133093")


def request(context=None, ids=IDS) -> RankRequest:
    turns = context or [{"role": "user", "text": "Something like Interstellar?"},
                        {"role": "assistant", "text": "Do you like horror too?"},
                        {"role": "user", "text": "Yes, scary space films please."}]
    return RankRequest(turns, ids, MOVIES)


def test_prompt_labels_candidates_with_movie_text_and_ends_for_the_verbalizer():
    prompt = build_prompt(request(), "completion", max_tokens=4096)
    assert prompt.labels == ("A", "B", "C") and prompt.candidate_ids == IDS
    assert "A. Alien (1979) Genres: Horror, Sci-Fi. Directed by Ridley Scott." in prompt.text
    assert "C. The Matrix (1999) Starring Keanu Reeves." in prompt.text
    assert "User: Something like Interstellar?\nRecommender: Do you like horror too?" in prompt.text
    assert prompt.text.endswith(COMPLETION_TAIL) and prompt.plot_chars is None and not prompt.over_budget


def test_chat_prompt_asks_for_every_label():
    prompt = build_prompt(request(), "chat", max_tokens=4096)
    assert "Rank all 3 candidates" in prompt.text and "(for example: C, B, A)" in prompt.text


def test_budget_trims_plots_before_dropping_turns():
    full = build_prompt(request(), "completion", max_tokens=10_000)
    trimmed = build_prompt(request(), "completion", max_tokens=full.tokens - 50)
    assert trimmed.plot_chars is not None and trimmed.turns_kept == 3 and trimmed.tokens <= full.tokens - 50
    plotless = {k: {**v, "plot": None} for k, v in MOVIES.items()}
    no_plot_tokens = build_prompt(RankRequest(request().context, IDS, plotless), "completion", 10_000).tokens
    tight = build_prompt(request(), "completion", max_tokens=no_plot_tokens - 40)
    assert tight.plot_chars == 0 and tight.turns_kept < 3 and "Yes, scary space films please." in tight.text
    impossible = build_prompt(request(), "completion", max_tokens=10)
    assert impossible.over_budget and "Alien (1979)" in impossible.text  # candidates are never dropped


def test_candidates_shrink_to_title_and_year_when_nothing_else_fits():
    single = RankRequest([{"role": "user", "text": "Yes, scary space films please."}], IDS, MOVIES)
    titles_only = {k: {"title": v["title"], "year": v["year"]} for k, v in MOVIES.items()}
    without_details = build_prompt(RankRequest(single.context, IDS, titles_only), "completion", 10_000)
    tight = build_prompt(single, "completion", max_tokens=without_details.tokens)
    assert not tight.over_budget and tight.tokens <= without_details.tokens
    assert "A. Alien (1979)\n" in tight.text and "Ridley Scott" not in tight.text
    no_dialogue = RankRequest((), IDS, MOVIES)  # the last step needs no turn to shorten first
    budget = build_prompt(RankRequest((), IDS, titles_only), "completion", 10_000).tokens
    assert not build_prompt(no_dialogue, "completion", max_tokens=budget).over_budget


def test_more_candidates_than_labels_shows_the_first_26():
    ids = tuple(f"tt{i:07d}" for i in range(1, 31))
    prompt = build_prompt(RankRequest([{"role": "user", "text": "hi"}], ids, {}), "completion", 10_000)
    assert prompt.labels == LABELS and prompt.candidate_ids == ids[:26] and "Z. tt0000026" in prompt.text


@pytest.mark.parametrize(
    ("answer", "expected_head"),
    [
        ("C, A, B", ["tt0133093", "tt0078748", "tt2543164"]),
        ("I think the best is B. Then C.", ["tt2543164", "tt0133093"]),  # "I" is a word, not label I
        ("A great pick: C > A", ["tt0133093", "tt0078748"]),  # "A great" is an article
        ("B, B, B, C", ["tt2543164", "tt0133093"]),  # duplicates count once
        ("1. The Matrix (1999)\n2. Alien", ["tt0133093", "tt0078748"]),  # titles when no labels
        ("(B) then (Z) then candidate Q", ["tt2543164"]),  # labels outside the set are ignored
    ],
)
def test_parse_ranking_tolerates_extra_text_duplicates_and_omissions(answer, expected_head):
    prompt = build_prompt(request(), "chat", 4096)
    ranking, named = parse_ranking(answer, prompt, IDS, MOVIES)
    assert list(ranking[: len(expected_head)]) == expected_head and named == len(expected_head)
    assert sorted(ranking) == sorted(IDS)  # a permutation of exactly the candidates
    rest = [m for m in IDS if m not in expected_head]
    assert list(ranking[len(expected_head):]) == rest  # omitted keep the retriever's order


def test_parse_ranking_of_nonsense_keeps_retriever_order():
    prompt = build_prompt(request(), "chat", 4096)
    assert parse_ranking("no idea, sorry", prompt, IDS, MOVIES) == (IDS, 0)


def test_scores_rank_labels_and_unscored_keep_retriever_order():
    prompt = build_prompt(request(), "completion", 4096)
    scores = label_scores_from_tokens({" C": -0.5, "C": -0.7, " A": -2.0, "the": -0.1, "▁": -0.2}, prompt.labels)
    assert scores == {"C": -0.5, "A": -2.0}
    ranking, ordered = ranking_from_scores(scores, prompt, IDS)
    assert ranking == ("tt0133093", "tt0078748", "tt2543164") and ordered is None
    full, ordered = ranking_from_scores({"A": -1.0, "B": -1.0, "C": -0.2}, prompt, IDS)
    assert full == ("tt0133093", "tt0078748", "tt2543164") and ordered == (-0.2, -1.0, -1.0)


def test_request_rejects_duplicate_candidates():
    with pytest.raises(ValueError, match="duplicate"):
        RankRequest([], ("a", "a"))
