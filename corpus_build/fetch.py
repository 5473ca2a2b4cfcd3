"""Fetching upstream files into ``$RAR_HOME/raw/<source>/``: HTTP, a local mirror, or package data.

``raw_root`` may be an object-store prefix (``corpus_build.storage``): files then land as objects.

Every file lands atomically (downloaded or copied into a temporary sibling, renamed only when complete),
so a failed or truncated transfer never leaves a file where the reader looks. Each file gets a sidecar
``<file>.meta.json`` with its size, sha256 and the validators (ETag, Last-Modified, Content-Length) used
to skip it next time when the upstream is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import httpx
import tenacity
from tqdm.auto import tqdm

from corpus_build.atomic import atomic_path
from corpus_build.sources import RemoteFile, SourceSpec, source_dir
from corpus_build.storage import local_copy

log = logging.getLogger(__name__)

Origin = Literal["http", "mirror", "package"]
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A file could not be fetched; the message names the file, URL or mirror path."""


class _RetryableStatus(Exception):
    """429 or 5xx: worth another try."""

    def __init__(self, url: str, status: int):
        super().__init__(f"HTTP {status} from {url}")
        self.status = status


class _Truncated(Exception):
    """The body ended before Content-Length bytes arrived."""


@dataclass(frozen=True)
class FetchedFile:
    name: str
    path: Path
    size: int
    sha256: str
    fetched_at: str  # ISO 8601 UTC of the transfer (of the earlier transfer when skipped)
    origin: Origin
    skipped_unchanged: bool


@dataclass(frozen=True)
class Upstream:
    """Where fetched files land and where they come from: ``raw_root/<source>/<file>``, copied from the
    ``mirror`` folder when one is set (laid out like ``../shared/data``), else downloaded."""

    raw_root: Path
    mirror: Path | None = None

    def source_dir(self, source: str) -> Path:
        return source_dir(self.raw_root, source)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: initial_wait, doubled per try up to max_wait, at most ``attempts`` tries."""

    attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 30.0
    timeout: float = 60.0  # seconds per connect/read


def fetch_source(
    spec: SourceSpec, upstream: Upstream, progress: bool = True, retry: RetryPolicy | None = None
) -> list[FetchedFile]:
    """Fetch every file of ``spec`` into ``upstream.raw_root/<source>/``; return what is on disk (a missing
    optional mirror file is left out)."""
    retry = retry or RetryPolicy()
    fetched: list[FetchedFile] = []
    with httpx.Client(timeout=retry.timeout, follow_redirects=True) as client:
        for remote in spec.files:
            target = upstream.source_dir(spec.name) / remote.name
            result = _fetch_one(remote, target, upstream.mirror, client, retry, progress)
            if result is not None:
                fetched.append(result)
    return fetched


def mirror_file(remote: RemoteFile, mirror: Path | str | None) -> Path | None:
    """Where the mirror folder keeps ``remote`` (None: no mirror, or the mirror lacks it)."""
    if mirror is None or remote.mirror_path is None:
        return None
    path = Path(mirror) / remote.mirror_path
    return path if path.is_file() else None


def _fetch_one(remote, target, mirror, client, retry, progress) -> FetchedFile | None:
    if remote.package_resource is not None:
        package, relative = remote.package_resource
        with resources.as_file(resources.files(package).joinpath(relative)) as source:
            if not source.is_file():
                raise FetchError(f"{remote.name}: package resource {package}/{relative} not found")
            return _copy_local(remote, source, target, "package")
    if mirror is not None:
        source = mirror_file(remote, mirror)
        if source is not None:
            return _copy_local(remote, source, target, "mirror")
        expected = Path(mirror) / (remote.mirror_path or f"<no mirror path for {remote.name}>")
        if remote.optional:
            log.warning("mirror lacks optional file %s (%s): skipped", remote.name, expected)
            return None
        raise FetchError(f"{remote.name}: required file missing from RAR_SOURCE_MIRROR: {expected}")
    if remote.url is None:
        raise FetchError(f"{remote.name}: no URL and no package resource")
    return _fetch_http(remote, target, client, retry, progress)


# --- local copies (mirror, package data) ---------------------------------------------------------


def _copy_local(remote: RemoteFile, source: Path, target: Path, origin: Origin) -> FetchedFile:
    stat = source.stat()
    validators = {"source": str(source), "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    previous = _unchanged(target, validators)
    if previous is not None:
        return _fetched(remote, target, previous, origin, skipped=True)
    with atomic_path(target) as tmp:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            digest, size = _copy_hashing(src, dst)
    meta = _write_meta(target, size, digest, validators)
    return _fetched(remote, target, meta, origin, skipped=False)


def _copy_hashing(src, dst, bar=None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):
        dst.write(chunk)
        digest.update(chunk)
        size += len(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return digest.hexdigest(), size


# --- HTTP ---------------------------------------------------------------------------------------


def _fetch_http(remote, target, client, retry, progress) -> FetchedFile:
    if remote.zip_member is None:
        meta, skipped = _download(remote.url, target, client, retry, progress)
        return _fetched(remote, target, meta, "http", skipped)
    # A zip archive shared by several files of a source is downloaded once, then one member extracted.
    archive = target.parent / "_archives" / remote.url.rstrip("/").rsplit("/", 1)[-1]
    archive_meta, _ = _download(remote.url, archive, client, retry, progress)
    validators = {"archive_sha256": archive_meta["sha256"], "zip_member": remote.zip_member}
    previous = _unchanged(target, validators)
    if previous is not None:
        return _fetched(remote, target, previous, "http", skipped=True)
    meta = _extract_member(archive, remote.zip_member, target, validators)
    return _fetched(remote, target, meta, "http", skipped=False)


def _extract_member(archive: Path, member: str, target: Path, validators: dict) -> dict:
    try:
        with zipfile.ZipFile(local_copy(archive)) as zf, zf.open(member) as src, atomic_path(target) as tmp:
            with open(tmp, "wb") as dst:
                digest, size = _copy_hashing(src, dst)
    except KeyError as exc:
        raise FetchError(f"{archive}: zip member {member!r} not found") from exc
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{archive}: not a valid zip archive ({exc})") from exc
    return _write_meta(target, size, digest, validators)


def _download(url, target, client, retry: RetryPolicy, progress) -> tuple[dict, bool]:
    """Download ``url`` to ``target`` unless unchanged; return (meta, skipped)."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(retry.attempts),
        wait=tenacity.wait_exponential(multiplier=retry.initial_wait, max=retry.max_wait),
        retry=tenacity.retry_if_exception_type(
            (httpx.TransportError, _RetryableStatus, _Truncated)
        ),
        before_sleep=lambda state: log.warning(
            "fetch %s failed (%s); retry %d", url, state.outcome.exception(), state.attempt_number
        ),
        reraise=True,
    )
    try:
        return retrying(_download_once, url, target, client, progress)
    except _Truncated as exc:
        raise FetchError(f"{url}: truncated download after {retry.attempts} tries ({exc}); "
                         f"nothing written to {target}") from exc
    except (httpx.TransportError, _RetryableStatus) as exc:
        raise FetchError(f"{url}: failed after {retry.attempts} tries ({exc}); "
                         f"nothing written to {target}") from exc


def _download_once(url: str, target: Path, client: httpx.Client, progress: bool) -> tuple[dict, bool]:
    previous = _read_meta(target) if target.is_file() else None
    headers = _conditional_headers(previous)
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 304 and previous is not None:
            return previous, True
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableStatus(url, response.status_code)
        if response.status_code != 200:
            raise FetchError(f"{url}: HTTP {response.status_code}")
        validators = _response_validators(url, response)
        if previous is not None and _same_validators(previous, validators) and _size_ok(target, previous):
            return previous, True
        return _stream_to(response, target, validators, progress), False


def _stream_to(response: httpx.Response, target: Path, validators: dict, progress: bool) -> dict:
    expected = validators.get("content_length")
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out, tqdm(
            total=expected, unit="B", unit_scale=True, desc=target.name, disable=not progress, leave=False
        ) as bar:
            try:
                digest, _ = _copy_hashing(_RawReader(response), out, bar)
            except httpx.RemoteProtocolError as exc:  # the server closed before Content-Length bytes
                raise _Truncated(str(exc)) from exc
        received = response.num_bytes_downloaded
        if expected is not None and received != expected:
            raise _Truncated(f"received {received} of {expected} bytes")
        size = tmp.stat().st_size
    return _write_meta(target, size, digest, validators)


class _RawReader:
    """File-like ``read`` over a streamed response body (content decoded as the server encoded it)."""

    def __init__(self, response: httpx.Response):
        self._chunks = response.iter_bytes(_CHUNK)

    def read(self, _size: int = -1) -> bytes:
        return next(self._chunks, b"")


def _response_validators(url: str, response: httpx.Response) -> dict[str, Any]:
    length = response.headers.get("content-length")
    return {
        "url": url,
        "etag": response.headers.get("etag"),
        "last_modified": response.headers.get("last-modified"),
        "content_length": int(length) if length and length.isdigit() else None,
    }


def _conditional_headers(previous: dict | None) -> dict[str, str]:
    if previous is None:
        return {}
    headers = {}
    if previous.get("etag"):
        headers["If-None-Match"] = previous["etag"]
    if previous.get("last_modified"):
        headers["If-Modified-Since"] = previous["last_modified"]
    return headers


def _same_validators(previous: dict, current: dict) -> bool:
    """Unchanged upstream: same ETag, else same Last-Modified and length, else (only) the same length."""
    if previous.get("url") != current["url"]:
        return False
    if current["etag"] and previous.get("etag"):
        return current["etag"] == previous["etag"]
    if current["last_modified"] and previous.get("last_modified"):
        return (current["last_modified"], current["content_length"]) == (
            previous["last_modified"], previous.get("content_length"))
    return current["content_length"] is not None and current["content_length"] == previous.get("content_length")


# --- sidecar metadata ----------------------------------------------------------------------------


def _meta_path(target: Path) -> Path:
    return target.with_name(target.name + ".meta.json")


def _read_meta(target: Path) -> dict | None:
    try:
        return json.loads(_meta_path(target).read_text())
    except (OSError, ValueError):
        return None


def _size_ok(target: Path, meta: dict) -> bool:
    return target.is_file() and target.stat().st_size == meta.get("size")


def _unchanged(target: Path, validators: dict) -> dict | None:
    """The recorded meta when ``target`` is on disk, intact and fetched with the same validators."""
    meta = _read_meta(target) if target.is_file() else None
    if meta is None or not _size_ok(target, meta):
        return None
    if any(meta.get(key) != value for key, value in validators.items()):
        return None
    return meta


def _write_meta(target: Path, size: int, sha256: str, validators: dict) -> dict:
    meta = {**validators, "size": size, "sha256": sha256,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with atomic_path(_meta_path(target)) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return meta


def _fetched(remote: RemoteFile, target: Path, meta: dict, origin: Origin, skipped: bool) -> FetchedFile:
    return FetchedFile(name=remote.name, path=target, size=int(meta["size"]), sha256=meta["sha256"],
                       fetched_at=meta["fetched_at"], origin=origin, skipped_unchanged=skipped)


def fetched_metadata(files: list[FetchedFile]) -> dict[str, Any]:
    """JSON-friendly description of fetched files (for asset metadata)."""
    return {f.name: {**asdict(f), "path": str(f.path)} for f in files}
