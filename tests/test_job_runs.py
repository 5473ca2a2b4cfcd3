"""rar_pipeline/job_runs.py: a job's runs from the command line, recorded like the UI's, and `--select`."""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner

from rar_pipeline.job_runs import resolve_selection


def test_a_selection_resolves_to_assets_of_the_job_and_their_checks():
    assets, checks = resolve_selection("main", "+movie_corpus")
    assert dg.AssetKey("movie_corpus") in assets and dg.AssetKey("raw_imdb") in assets
    assert dg.AssetKey("movie_vectors") not in assets
    assert {check.asset_key for check in checks} <= assets and any(c.name == "movie_id_unique" for c in checks)
    everything, _ = resolve_selection("main", "*")
    everything_but_vectors, _ = resolve_selection("main", "not key:movie_vectors")
    assert everything_but_vectors == everything - {dg.AssetKey("movie_vectors")}
    with pytest.raises(ValueError, match="selects no asset of job 'evaluation'"):
        resolve_selection("evaluation", "key:movie_corpus")


@pytest.mark.parametrize("selection, message", [("key:(", "Invalid selection string"),
                                                ("key:no_such_asset", "selects no asset")])
def test_rar_materialize_refuses_a_bad_selection_in_one_line(rar_home, selection, message):
    from rar_pipeline.cli import main

    result = CliRunner().invoke(main, ["materialize", "--select", selection])
    assert result.exit_code == 1 and result.output.startswith("Error: --select: ") and message in result.output
    assert "Traceback" not in result.output
