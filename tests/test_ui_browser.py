"""Dagster's web UI over a sample home, in a real headless browser (Chromium through Playwright), checked
against what a data engineer looks at first, with the GraphQL endpoint where it is more robust than pixels.

The home is the one `rar materialize --job main` leaves on the sample profile, scaled down, once per session
(``main_run`` in tests/conftest.py, shared with test_main_job.py); `dagster dev` serves a copy of it on 127.0.0.1
and is stopped by its process group. Screenshots go to $RAR_UI_SCREENSHOTS when set, else to pytest's temporary
folder; the folder is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster_server import free_port, graphql, start_dagster_dev, stop, wait_for

from rar_pipeline.job_runs import CODE_LOCATION as LOCATION

pytestmark = [pytest.mark.ui, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1440, "height": 900}
TABLE_KINDS = {"parquet", "lancedb"}  # the assets that are tables: only they may carry dagster/row_count
METADATA_KEY_MAX = 32  # characters: wider keys overflow the UI's metadata key column


def chromium_path() -> str | None:
    return os.environ.get("RAR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class DagsterUI:
    url: str
    log: Path
    screenshots: Path

    def query(self, text: str, variables: dict | None = None) -> dict:
        return graphql(self.url, text, variables)


@dataclass
class SampleHome:
    """A copy of main_run's homes (the server writes into its Dagster home), and what the command printed."""

    env: dict[str, str]
    output: str

    def run_ids(self) -> list[str]:
        """The runs `rar materialize` reported ("run <id>: SUCCESS"), in order."""
        return [line.split()[1].rstrip(":") for line in self.output.splitlines() if line.startswith("run ")]


@pytest.fixture(scope="module")
def sample_home(main_run, tmp_path_factory) -> SampleHome:
    home, env, done, _ = main_run
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    copy = tmp_path_factory.mktemp("ui_home")
    shutil.copytree(home, copy / "rar_home")
    shutil.copytree(env["DAGSTER_HOME"], copy / "dagster")
    return SampleHome(env | {"RAR_HOME": str(copy / "rar_home"), "DAGSTER_HOME": str(copy / "dagster")}, done.stdout)


@pytest.fixture(scope="module")
def ui(sample_home, tmp_path_factory) -> DagsterUI:
    """`dagster dev` (the README's command) over the sample home, its code location loaded."""
    folder = tmp_path_factory.mktemp("dagster_dev")
    shots = Path(os.environ.get("RAR_UI_SCREENSHOTS") or tmp_path_factory.mktemp("ui_screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots: {shots}")
    port = free_port()
    process = start_dagster_dev(REPO_ROOT, sample_home.env, folder / "dagster_dev.log", port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/server_info", process, timeout=180)
        _wait_for_location(url)
        yield DagsterUI(url, folder / "dagster_dev.log", shots)
    finally:
        stop(process)
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # webserver, daemon and code server are gone with the group


def _wait_for_location(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
    while time.monotonic() < deadline:
        entries = graphql(url, query)["workspaceOrError"]["locationEntries"]
        if [(e["name"], e["loadStatus"]) for e in entries] == [(LOCATION, "LOADED")]:
            return
        time.sleep(1)
    raise AssertionError(f"code location {LOCATION} did not load within {timeout}s: {entries}")


@pytest.fixture(scope="module")
def page(ui):
    """A Chromium page (a fresh profile; Dagster's community dialog dismissed as a returning user has)."""
    executable = chromium_path()
    if executable is None:
        # CI installs chromium (.ci/run): there a missing browser is a broken set-up, not a reason to skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)("no Chromium found (apt-get install chromium, or set RAR_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, args=CHROMIUM_ARGS, headless=True, viewport=VIEWPORT)
        context.add_init_script("window.localStorage.setItem('communityNux', '1')")
        context.set_default_timeout(60_000)
        yield context.new_page()
        context.close()


def open_page(page, ui: DagsterUI, path: str, name: str, wait_for_text: str):
    """Go to ``path``, wait until ``wait_for_text`` shows, and save a screenshot ``name``.png."""
    page.goto(ui.url + path)
    page.get_by_text(wait_for_text, exact=False).first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ui.screenshots / f"{name}.png"))


# --- pages -----------------------------------------------------------------------------------------------


def test_lineage_graph(page, ui):
    """The global lineage shows the five groups; the corpus group's graph shows every source and the corpus."""
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1600})  # the corpus group is tall
    page.goto(ui.url + "/asset-groups")
    for group in ("corpus", "interactions", "retriever", "alignment", "evaluation"):  # the graph lays out late
        page.get_by_text(group, exact=True).first.wait_for()
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ui.screenshots / "lineage.png"))
    open_page(page, ui, f"/locations/{LOCATION}/asset-groups/corpus", "lineage_corpus", "raw_wikidata_sample")
    for asset in ("raw_imdb", "raw_wikipedia", "movie_corpus", "movie_corpus_quarantine", "movie_vectors"):
        assert page.get_by_text(asset, exact=True).count() >= 1, asset
    page.set_viewport_size(VIEWPORT)


def test_cli_run_is_under_the_main_job_and_on_the_timeline(page, ui, sample_home):
    """Defects 1 and 14: `rar materialize`'s run shows under Jobs > main > Runs, on the timeline and in the run
    view, green, with the round's promotion_gate verdict (one result per round partition) in its log."""
    [main_run] = sample_home.run_ids()
    runs = ui.query("""query($location: String!) { pipelineOrError(params: {pipelineName: "main",
        repositoryName: "__repository__", repositoryLocationName: $location}) { ... on Pipeline {
        runs { runId status tags { key value } } } } }""", {"location": LOCATION})["pipelineOrError"]["runs"]
    assert [(r["runId"], r["status"]) for r in runs] == [(main_run, "SUCCESS")]
    open_page(page, ui, f"/locations/{LOCATION}/jobs/main/runs", "main_job_runs", main_run[:8])
    assert page.get_by_text("Success").count() >= 1

    everything = ui.query("{ runsOrError { ... on Runs { results { runId pipelineName repositoryOrigin { "
                          "repositoryLocationName } } } } }")["runsOrError"]["results"]
    assert [(r["runId"], r["pipelineName"], r["repositoryOrigin"]["repositoryLocationName"]) for r in everything] == [
        (main_run, "main", LOCATION)]  # the timeline groups runs by their origin: one without is not shown
    open_page(page, ui, "/overview/activity/timeline", "timeline", LOCATION)
    page.get_by_text("main", exact=True).first.wait_for()  # the job's row

    partition = next(t["value"] for t in runs[0]["tags"] if t["key"] == "dagster/partition")
    gate = ui.query("""{ assetCheckExecutions(assetKey: {path: ["alignment_round"]}, checkName: "promotion_gate",
        limit: 1) { runId partition evaluation { success severity description } } }""")["assetCheckExecutions"]
    assert [(g["runId"], g["partition"]) for g in gate] == [(main_run, partition)]
    assert gate[0]["evaluation"]["severity"] == "WARN"  # a refused round warns; the run stays green
    assert gate[0]["evaluation"]["description"].startswith(f"{partition}: promoted: ")  # main_run's gate lets it pass
    open_page(page, ui, f"/runs/{main_run}", "main_run", "RUN_SUCCESS")
    page.get_by_placeholder("Filter…").fill("promotion_gate")  # the gate's verdict and figures in the run's log
    page.get_by_text("gate_ndcg_after").first.wait_for()
    page.screenshot(path=str(ui.screenshots / "main_run_gate.png"))


def test_evaluation_report_chart_fits_its_dialog(page, ui):
    """Defect 4: the report's chart opens in the metadata dialog without horizontal scrolling, and the
    markdown that carries it stays small."""
    report = latest_metadata(ui, "evaluation_report")
    assert len(report["report"]["mdStr"]) < 40_000 and "data:image/png;base64," in report["report"]["mdStr"]
    page.set_viewport_size({"width": 1280, "height": 800})  # a laptop: the dialog is at most 80% of it
    open_page(page, ui, "/assets/evaluation_report", "evaluation_report", "[Show Markdown]")
    page.get_by_text("[Show Markdown]").first.click()
    dialog = page.get_by_role("dialog")
    dialog.locator("img").first.wait_for()
    page.wait_for_function("() => document.querySelector('[role=dialog] img').complete")
    page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')")  # faded in
    page.screenshot(path=str(ui.screenshots / "evaluation_report_dialog.png"))
    fit = page.evaluate("""() => {
        const dialog = document.querySelector('[role=dialog]'), img = dialog.querySelector('img');
        const box = dialog.getBoundingClientRect(), chart = img.getBoundingClientRect();
        const scrolling = [...dialog.querySelectorAll('*')].filter(e => e.scrollWidth > e.clientWidth + 1
            && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)).length;
        return {inside: chart.left >= box.left && chart.right <= box.right, width: img.naturalWidth,
                height: img.naturalHeight, drawn: chart.width, scrolling};
    }""")
    assert fit["inside"] and fit["scrolling"] == 0 and fit["drawn"] == fit["width"], fit  # shown whole, unscaled
    assert 500 < fit["width"] and fit["height"] < fit["width"], fit
    page.keyboard.press("Escape")
    page.set_viewport_size(VIEWPORT)


def test_skipped_source_is_not_shown_as_ingested(page, ui):
    """Defect 5: a source the sample profile does not read has an observation saying why, no materialisation."""
    asset = ui.query("""{ assetOrError(assetKey: {path: ["raw_imdb"]}) { ... on Asset {
        assetMaterializations(limit: 1) { runId }
        assetObservations(limit: 1) { metadataEntries { label ... on TextMetadataEntry { text } } } } } }""")
    asset = asset["assetOrError"]
    assert asset["assetMaterializations"] == []
    observed = {e["label"]: e.get("text") for e in asset["assetObservations"][0]["metadataEntries"]}
    assert observed["status"] == "skipped" and observed["skipped_because"].startswith("not in profile 'sample'")
    open_page(page, ui, "/assets/raw_imdb", "raw_imdb", "Never materialized")
    assert page.get_by_text("not in profile 'sample'").count() >= 1


def test_descriptions_render_as_written(page, ui):
    """Defect 2: `<round>` in alignment_round's description reaches the screen."""
    open_page(page, ui, "/assets/alignment_round", "alignment_round", "One RL alignment round")
    assert page.get_by_text("$RAR_HOME/alignment/rounds/<round>/").count() == 1


# --- what the UI shows, through its GraphQL endpoint ------------------------------------------------------


ASSET_NODES = """{ assetNodes { assetKey { path } kinds description
    metadataEntries { label __typename }
    assetMaterializations(limit: 1) { metadataEntries { label __typename
        ... on FloatMetadataEntry { floatValue }
        ... on TableSchemaMetadataEntry { schema { columns { name description } } } } } } }"""


def latest_metadata(ui: DagsterUI, asset: str) -> dict[str, dict]:
    """The latest materialisation's metadata of ``asset``, by label (each entry as GraphQL gives it)."""
    answer = ui.query("""query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
        assetMaterializations(limit: 1) { metadataEntries { label __typename ... on MarkdownMetadataEntry { mdStr }
        ... on TableMetadataEntry { table { records } } } } } } }""", {"path": [asset]})
    [materialization] = answer["assetOrError"]["assetMaterializations"]
    return {entry["label"]: entry for entry in materialization["metadataEntries"]}


def test_metadata_is_readable(ui):
    """Defects 3, 6, 7, 8, 12: short keys, rounded floats, named counts, described columns, source links."""
    from rar_pipeline.definitions import defs

    nodes = ui.query(ASSET_NODES)["assetNodes"]
    assert len(nodes) == len(defs.resolve_asset_graph().get_all_asset_keys())
    problems = []
    for node in nodes:
        name = "/".join(node["assetKey"]["path"])
        if "CodeReferencesMetadataEntry" not in {e["__typename"] for e in node["metadataEntries"]}:
            problems.append(f"{name}: no link to its source code")
        for materialization in node["assetMaterializations"]:
            for entry in materialization["metadataEntries"]:
                label = entry["label"]
                if len(label) > METADATA_KEY_MAX:
                    problems.append(f"{name}: key {label!r} is longer than {METADATA_KEY_MAX} characters")
                if entry["__typename"] == "FloatMetadataEntry" and significant_digits(entry["floatValue"]) > 4:
                    problems.append(f"{name}: {label} = {entry['floatValue']!r} is not rounded")
                if label == "dagster/row_count" and not TABLE_KINDS & {k.lower() for k in node["kinds"]}:
                    problems.append(f"{name}: dagster/row_count on an asset that is not a table")
                if entry["__typename"] == "TableSchemaMetadataEntry":
                    problems += [f"{name}: column {c['name']} has no description"
                                 for c in entry["schema"]["columns"] if not c["description"]]
    assert not problems, "\n".join(problems)
    materialized = {"/".join(n["assetKey"]["path"]) for n in nodes if n["assetMaterializations"]}
    assert {"movie_corpus", "movie_corpus_quarantine", "user_sequences", "conversation_turns", "lrurec_pretrained",
            "lrurec_sft", "alignment_round", "evaluation_report"} <= materialized
    figures = latest_metadata(ui, "evaluation_report")["figures"]["table"]["records"]
    assert {json.loads(record)["system"] for record in figures} >= {"popularity", "pretrained", "sft"}  # defect 3


def significant_digits(value: float) -> int:
    """Significant digits of ``value`` as Python writes it (0.002981 -> 4, 61.38 -> 4, 1e-05 -> 1)."""
    mantissa = re.sub(r"e[-+]?\d+$", "", repr(abs(value))).replace(".", "").lstrip("0")
    return len(mantissa.rstrip("0")) or 1


def test_generator_resource_shows_its_values(ui):
    """Defect 10: the resource page shows the backend in effect and plain-text descriptions."""
    details = ui.query("""query($location: String!) { topLevelResourceDetailsOrError(resourceSelector: {
        repositoryLocationName: $location, repositoryName: "__repository__", resourceName: "generator"}) {
        ... on ResourceDetails { description configFields { name description } configuredValues { key value } } } }""",
                       {"location": LOCATION})["topLevelResourceDetailsOrError"]
    values = {v["key"]: v["value"] for v in details["configuredValues"]}
    assert json.loads(values["backend"]) == "embedding"
    texts = [details["description"], *(f["description"] for f in details["configFields"])]
    assert all(text and ":func:" not in text and "``" not in text for text in texts)


def test_dagster_dev_starts_without_instance_warnings(ui):
    """Defect 11: DAGSTER_HOME holds a dagster.yaml (written by `rar materialize`), so no warning about it."""
    log = ui.log.read_text(errors="replace")
    assert "Serving dagster-webserver" in log
    assert "dagster.yaml" not in log and "No dagster instance configuration file" not in log


def test_significant_digits():
    assert [significant_digits(v) for v in (0.002981, 61.38, 1e-05, 0.0029806259314456036, 120.0, 0.5)] == [
        4, 4, 1, 17, 2, 1]
