"""fetch_source against a real HTTP server on 127.0.0.1, a mirror folder and package data."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corpus_build.fetch import FetchError, RetryPolicy, fetch_source
from corpus_build.sources import RemoteFile, SourceResult, SourceSpec
from rar_pipeline.settings import get_settings

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
FAST = RetryPolicy(attempts=4, initial_wait=0.01, max_wait=0.05, timeout=5)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("pack/movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n")
        zf.writestr("pack/links.csv", "movieId,imdbId,tmdbId\n1,0114709,862\n")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()
    zip_payload = _zip_bytes()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        self.hits[self.path] += 1
        if self.path == "/data.bin":
            if self.headers.get("If-None-Match") == '"v1"':
                self.send_response(304)
                self.end_headers()
                return
            self._send(PAYLOAD, etag='"v1"')
        elif self.path == "/flaky.bin":
            if self.hits[self.path] <= 2:
                self.send_error(503, "busy")
                return
            self._send(PAYLOAD)
        elif self.path == "/truncated.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:4000])
            self.wfile.flush()
            self.close_connection = True
        elif self.path == "/length-only.bin":
            self._send(PAYLOAD)  # no ETag, no Last-Modified: the length decides
        elif self.path == "/pack.zip":
            self._send(self.zip_payload, etag='"zip1"')
        else:
            self.send_error(404, "not here")

    def _send(self, body: bytes, etag: str | None = None):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _spec(*files: RemoteFile, name: str = "demo") -> SourceSpec:
    return SourceSpec(name=name, description="test source", files=files,
                      reader=lambda paths: SourceResult(rows=None, quarantine=None), profiles=("full",))


def _listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_records_size_sha_and_skips_unchanged(server, rar_home):
    settings = get_settings()
    spec = _spec(RemoteFile(name="data.bin", url=f"{server}/data.bin"))

    [first] = fetch_source(spec, settings.upstream, progress=False, retry=FAST)
    assert first.path == rar_home / "raw" / "demo" / "data.bin"
    assert first.path.read_bytes() == PAYLOAD
    assert (first.size, first.sha256) == (len(PAYLOAD), hashlib.sha256(PAYLOAD).hexdigest())
    assert first.origin == "http" and not first.skipped_unchanged
    meta = json.loads((first.path.parent / "data.bin.meta.json").read_text())
    assert meta["etag"] == '"v1"' and meta["sha256"] == first.sha256

    [second] = fetch_source(spec, settings.upstream, progress=False, retry=FAST)
    assert second.skipped_unchanged and second.sha256 == first.sha256
    assert second.fetched_at == first.fetched_at
    assert _Handler.hits["/data.bin"] == 2  # the second request was answered 304


def test_skip_by_content_length_and_refetch_when_local_file_damaged(server, rar_home):
    settings = get_settings()
    spec = _spec(RemoteFile(name="plain.bin", url=f"{server}/length-only.bin"))
    [first] = fetch_source(spec, settings.upstream, progress=False, retry=FAST)
    [second] = fetch_source(spec, settings.upstream, progress=False, retry=FAST)
    assert not first.skipped_unchanged and second.skipped_unchanged

    first.path.write_bytes(PAYLOAD[:10])  # damaged on disk: fetched again
    [third] = fetch_source(spec, settings.upstream, progress=False, retry=FAST)
    assert not third.skipped_unchanged and third.path.read_bytes() == PAYLOAD


def test_503_twice_is_retried(server, rar_home):
    spec = _spec(RemoteFile(name="flaky.bin", url=f"{server}/flaky.bin"))
    [fetched] = fetch_source(spec, get_settings().upstream, progress=False, retry=FAST)
    assert fetched.path.read_bytes() == PAYLOAD
    assert _Handler.hits["/flaky.bin"] == 3


def test_truncated_body_never_lands(server, rar_home):
    spec = _spec(RemoteFile(name="cut.bin", url=f"{server}/truncated.bin"))
    with pytest.raises(FetchError, match=r"truncated\.bin: truncated download"):
        fetch_source(spec, get_settings().upstream, progress=False, retry=FAST)
    assert _Handler.hits["/truncated.bin"] == FAST.attempts
    assert _listing(rar_home / "raw" / "demo") == []  # no file, no temp file, no sidecar


def test_client_error_is_not_retried(server, rar_home):
    spec = _spec(RemoteFile(name="gone.bin", url=f"{server}/gone.bin"))
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_source(spec, get_settings().upstream, progress=False, retry=FAST)
    assert _Handler.hits["/gone.bin"] == 1


def test_zip_members_share_one_download(server, rar_home):
    url = f"{server}/pack.zip"
    spec = _spec(RemoteFile(name="movies.csv", url=url, zip_member="pack/movies.csv"),
                 RemoteFile(name="links.csv", url=url, zip_member="pack/links.csv"))
    movies, links = fetch_source(spec, get_settings().upstream, progress=False, retry=FAST)
    assert movies.path.read_text().startswith("movieId,title,genres\n1,Toy Story")
    assert links.path.read_text().endswith("1,0114709,862\n")
    assert _Handler.hits["/pack.zip"] == 2  # second file: conditional request answered 304
    again = fetch_source(spec, get_settings().upstream, progress=False, retry=FAST)
    assert all(f.skipped_unchanged for f in again)

    bad = _spec(RemoteFile(name="x.csv", url=url, zip_member="pack/absent.csv"))
    with pytest.raises(FetchError, match="absent.csv"):
        fetch_source(bad, get_settings().upstream, progress=False, retry=FAST)


def test_mirror_copies_skips_optional_and_names_missing_required(rar_home, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "set").mkdir(parents=True)
    (mirror / "set" / "a.csv").write_text("x\n1\n")
    monkeypatch.setenv("RAR_SOURCE_MIRROR", str(mirror))
    get_settings.cache_clear()
    settings = get_settings()
    spec = _spec(
        RemoteFile(name="a.csv", url="http://127.0.0.1:9/never", mirror_path="set/a.csv"),
        RemoteFile(name="b.csv", url="http://127.0.0.1:9/never", mirror_path="set/b.csv", optional=True),
        RemoteFile(name="c.tsv.gz", url="http://127.0.0.1:9/never", optional=True),  # no mirror path
    )
    [copied] = fetch_source(spec, settings.upstream, progress=False)
    assert copied.origin == "mirror" and copied.path.read_text() == "x\n1\n"
    assert copied.sha256 == hashlib.sha256(b"x\n1\n").hexdigest()
    [again] = fetch_source(spec, settings.upstream, progress=False)
    assert again.skipped_unchanged

    required = _spec(RemoteFile(name="b.csv", url=None, mirror_path="set/b.csv"))
    with pytest.raises(FetchError, match=r"required file missing from RAR_SOURCE_MIRROR: .*set/b\.csv"):
        fetch_source(required, settings.upstream, progress=False)


def test_package_resource_is_copied(rar_home):
    spec = _spec(RemoteFile(name="movies.db", url=None,
                            package_resource=("bokeh_sampledata", "_data/movies.db")))
    [copied] = fetch_source(spec, get_settings().upstream, progress=False)
    assert copied.origin == "package" and copied.size > 1_000_000
    assert copied.path.read_bytes()[:16] == b"SQLite format 3\x00"
