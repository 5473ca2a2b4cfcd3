"""Stable ids: a film no source knows an IMDb id for gets a ``rar:`` id that must never change between
versions (every table, checkpoint and round refers to films by id), so the ids are pinned here."""

from __future__ import annotations

import pytest

from corpus_build.movie_text import rar_movie_id, title_key

# (title as a source writes it, year) -> the id every version of the pipeline gives it
GOLDEN_IDS = [
    ("The Matrix", 1999, "rar:8bc393f0ec71"),
    ("Matrix, The", 1999, "rar:8bc393f0ec71"),  # a trailing article is the same film
    ("THE MATRIX!", 1999, "rar:8bc393f0ec71"),  # case and punctuation do not count
    ("Amélie", 2001, "rar:88bb0db89f16"),
    ("Untitled Project", None, "rar:cc371103f1ad"),
]


@pytest.mark.parametrize(("title", "year", "movie_id"), GOLDEN_IDS)
def test_rar_ids_are_pinned(title, year, movie_id):
    assert rar_movie_id(title, year) == movie_id


def test_rar_ids_differ_by_year_and_title():
    assert rar_movie_id("The Matrix", 2000) != rar_movie_id("The Matrix", 1999)
    assert rar_movie_id("Amelie", 2001) == rar_movie_id("Amélie", 2001)  # accents stripped by the key
    assert title_key("Matrix, The") == "matrix"


def test_merge_gives_a_film_without_imdb_id_its_pinned_id():
    from test_merge import source_rows

    from corpus_build.merge import merge_rows

    result = merge_rows([source_rows("wikipedia", {"title": "Matrix, The", "year": 1999, "plot": "A hacker."})],
                        max_year=2030)
    assert result.corpus["movie_id"].to_list() == ["rar:8bc393f0ec71"]
