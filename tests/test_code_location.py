"""The code location: definitions validate, every asset is grouped and described, the UI serves."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from dagster_server import DAGSTER, free_port, start_dagster_dev, stop, wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), RAR_HOME=str(tmp_path / "rar_home"), HF_HUB_OFFLINE="1")
    env.pop("RAR_SOURCE_MIRROR", None)
    env.pop("RAR_PROFILE", None)
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    return env


def test_every_asset_has_a_group_and_a_description():
    from rar_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert keys, "the code location defines no assets"
    for key in keys:
        node = graph.get(key)
        assert node.group_name and node.group_name != "default", f"{key.to_user_string()} has no group"
        assert (node.description or "").strip(), f"{key.to_user_string()} has no description"
    corpus_group = {k.to_user_string() for k in keys if graph.get(k).group_name == "corpus"}
    assert {"movie_corpus", "movie_corpus_quarantine", "raw_wikidata_sample"} <= corpus_group


def test_assets_link_their_source_freshness_and_automation():
    """Code references to the line that defines each asset, freshness expectations on the weekly corpus and
    the nightly retriever, and the report's declarative automation (its sensor off until switched on)."""
    import dagster as dg

    from rar_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        [reference] = graph.get(key).metadata["dagster/code_references"].code_references
        source = Path(reference.file_path)
        assert source.is_relative_to(REPO_ROOT / "assets") and reference.line_number > 0, key
        assert "asset" in source.read_text().splitlines()[reference.line_number - 1], key  # the decorator's line
    weekly = graph.get(dg.AssetKey("movie_corpus")).freshness_policy
    nightly = graph.get(dg.AssetKey("aligned_retriever")).freshness_policy
    assert weekly.warn_window.to_timedelta().days == 7 and nightly.warn_window.to_timedelta().total_seconds() == 26 * 3600
    assert graph.get(dg.AssetKey("evaluation_report")).automation_condition is not None
    sensor = defs.resolve_sensor_def("automation")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_every_declaration_names_the_same_code_location():
    """workspace.yaml, [tool.dagster], [tool.dg] and dagster_cloud.yaml agree with the origin that `rar
    materialize` records (job_runs), so its runs land under the location the UI serves."""
    import yaml

    from rar_pipeline.job_runs import CODE_LOCATION, DEFINITIONS_MODULE

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads TOML")

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]
    [workspace] = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    [cloud] = yaml.safe_load((REPO_ROOT / "dagster_cloud.yaml").read_text())["locations"]
    declared = {
        "workspace.yaml": (workspace["python_module"]["location_name"], workspace["python_module"]["module_name"]),
        "tool.dagster": (pyproject["dagster"]["code_location_name"], pyproject["dagster"]["module_name"]),
        "tool.dg": (pyproject["dg"]["project"]["code_location_name"],
                    pyproject["dg"]["project"]["code_location_target_module"]),
        "dagster_cloud.yaml": (cloud["location_name"], cloud["code_source"]["module_name"]),
    }
    assert set(declared.values()) == {(CODE_LOCATION, DEFINITIONS_MODULE)}, declared


@pytest.mark.slow
def test_definitions_validate(tmp_path):
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_dagster_dev_serves_the_ui(tmp_path):
    port = free_port()
    process = start_dagster_dev(REPO_ROOT, _env(tmp_path), tmp_path / "dagster_dev.log", port)
    try:
        info = wait_for(f"http://127.0.0.1:{port}/server_info", process, timeout=120)
        assert "dagster_webserver_version" in info
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert "<html" in page.lower()
    finally:
        stop(process)
    assert process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # the whole process group (webserver + code server) is gone
