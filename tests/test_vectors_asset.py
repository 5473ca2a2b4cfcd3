"""The movie_vectors asset and its checks, materialised with Dagster on a tiny corpus; `rar search`."""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner
from test_vector_store import FILMS, tiny_corpus

from assets import vectors as vectors_module
from corpus_build.atomic import write_parquet_atomic
from rar_pipeline.settings import get_settings

CHECKS = [
    vectors_module.vectors_row_count_matches_corpus,
    vectors_module.vectors_ids_in_corpus,
    vectors_module.vectors_dimension,
    vectors_module.vectors_finite_nonzero,
]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("RAR_EMBEDDING_PRECISION", "fp32")


def _materialize(instance):
    result = dg.materialize([vectors_module.movie_vectors, *CHECKS], instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("movie_vectors")[0].metadata
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    return {k: v.value for k, v in metadata.items()}, checks


def test_missing_corpus_fails_clearly(rar_home):
    with pytest.raises(dg.Failure, match="movie_corpus not found"):
        dg.materialize([vectors_module.movie_vectors], instance=dg.DagsterInstance.ephemeral())


@pytest.mark.slow
def test_materialise_incrementally_with_checks(rar_home):
    settings = get_settings()
    corpus_path = settings.table_path("movie_corpus")
    write_parquet_atomic(tiny_corpus(), corpus_path)
    instance = dg.DagsterInstance.ephemeral()

    first, checks = _materialize(instance)
    assert first["dagster/row_count"] == len(FILMS) and first["embedded"] == len(FILMS)
    assert first["dimension"] == 384 and first["uri"] == str(rar_home / "lancedb")
    assert checks == dict.fromkeys(
        ["vectors_row_count_matches_corpus", "vectors_ids_in_corpus", "vectors_dimension", "vectors_finite_nonzero"], True
    )

    second, _ = _materialize(instance)
    assert (second["embedded"], second["reused"], second["deleted"]) == (0.0, float(len(FILMS)), 0.0)

    # a film leaves the corpus: the next run deletes it; the checks still pass
    write_parquet_atomic(tiny_corpus(FILMS[1:]), corpus_path)
    third, checks = _materialize(instance)
    assert (third["embedded"], third["deleted"], third["dagster/row_count"]) == (0.0, 1.0, len(FILMS) - 1)
    assert all(checks.values())

    # the checks catch a table out of step with the corpus (a film the table lacks)
    write_parquet_atomic(tiny_corpus(), corpus_path)
    result = dg.materialize(
        CHECKS[:2], instance=instance, selection=dg.AssetSelection.all_asset_checks(), raise_on_error=False
    )  # blocking checks fail the run
    assert not result.success
    evaluations = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert evaluations == {"vectors_row_count_matches_corpus": False, "vectors_ids_in_corpus": True}

    # rar search over the materialised table
    runner = CliRunner()
    out = runner.invoke(_cli(), ["search", "cowboy doll stolen by a toy collector", "--k", "3"])
    assert out.exit_code == 0, out.output
    ranked = [line.split() for line in out.stdout.splitlines() if line.strip().startswith(("1.", "2.", "3."))]
    assert len(ranked) == 3 and ranked[0][2] == "tt0120363", out.output  # Toy Story 2
    out = runner.invoke(_cli(), ["search", "toys", "--k", "3", "--year-max", "1990", "--exclude", "tt0068646"])
    assert out.exit_code == 0 and "tt0068646" not in out.output and "Toy Story" not in out.output


def test_search_without_a_table_says_what_to_do(rar_home):
    out = CliRunner().invoke(_cli(), ["search", "anything"])
    assert out.exit_code != 0 and "rar materialize" in out.output


def _cli():
    from rar_pipeline.cli import main

    return main
