"""Fingerprints of what the corpus is built from, so a sensor can tell when a refresh is due.

The upstream catalog of a profile is the set of :class:`~corpus_build.sources.RemoteFile` s its
sources need. Each file's state is cheap to read without downloading it: size + mtime for a mirror
or package file, ETag / Last-Modified / Content-Length from an HTTP HEAD for a URL. The catalog
fingerprint is a hash over those states; it changes exactly when some upstream file does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corpus_build.sources import RemoteFile, SourceSpec

_HTTP_HEADERS = ("etag", "last-modified", "content-length")


@dataclass(frozen=True)
class FileState:
    source: str
    name: str
    origin: str  # "package", "mirror", "http", "absent" (optional file not there), "unreachable"
    state: dict[str, str] = field(default_factory=dict)


@dataclass
class CatalogFingerprint:
    digest: str  # sha256 over every reachable file's state
    files: list[FileState]

    @property
    def unreachable(self) -> list[FileState]:
        return [f for f in self.files if f.origin == "unreachable"]


def file_fingerprint(path: str | Path) -> str | None:
    """``size:mtime_ns`` of a local file (``size:etag`` of an object), or None when it does not exist."""
    from corpus_build.storage import fingerprint

    return fingerprint(path)


def _local_state(path: Path) -> dict[str, str] | None:
    stamp = file_fingerprint(path)
    if stamp is None:
        return None
    size, mtime = stamp.split(":")
    return {"size": size, "mtime_ns": mtime}


def _package_path(remote: RemoteFile) -> Path | None:
    from importlib import resources

    package, relative = remote.package_resource
    try:
        return Path(str(resources.files(package).joinpath(relative)))
    except ModuleNotFoundError:
        return None


def _http_state(url: str, client) -> dict[str, str] | None:
    import httpx

    try:
        response = client.head(url, follow_redirects=True)
    except httpx.HTTPError:
        return None
    if response.status_code >= 400:
        return None
    return {h: response.headers[h] for h in _HTTP_HEADERS if h in response.headers}


def file_state(source: str, remote: RemoteFile, mirror: Path | None, client) -> FileState:
    """Where ``remote`` would be read from and its current state (nothing is downloaded)."""
    if remote.package_resource is not None:
        path = _package_path(remote)
        state = _local_state(path) if path else None
        return FileState(source, remote.name, "package" if state else "absent", state or {})
    if mirror is not None and remote.mirror_path:
        state = _local_state(Path(mirror) / remote.mirror_path)
        return FileState(source, remote.name, "mirror" if state else "absent", state or {})
    if remote.url:
        state = _http_state(remote.url, client)
        if state is None:
            return FileState(source, remote.name, "unreachable", {"url": remote.url})
        return FileState(source, remote.name, "http", state)
    return FileState(source, remote.name, "absent")


def catalog_fingerprint(specs: Iterable[SourceSpec], mirror: Path | None = None, timeout_s: float = 10.0) -> CatalogFingerprint:
    """The fingerprint of every file the given sources read (HTTP HEAD for URLs, stat for files)."""
    import httpx

    with httpx.Client(timeout=timeout_s, headers={"User-Agent": "rar-pipeline catalog sensor"}) as client:
        files = [file_state(spec.name, remote, mirror, client) for spec in specs for remote in spec.files]
    reachable = sorted((asdict(f) for f in files if f.origin != "unreachable"), key=lambda f: (f["source"], f["name"]))
    digest = hashlib.sha256(json.dumps(reachable, sort_keys=True).encode()).hexdigest()
    return CatalogFingerprint(digest=digest, files=files)
