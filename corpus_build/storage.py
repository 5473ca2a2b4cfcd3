"""Where artefacts live: a local folder or an object store, behind one small API.

``RAR_HOME`` may be a folder or an object-store URI: ``s3://bucket/prefix`` (any S3-compatible server),
or ``gs://`` / ``az://`` where fsspec's ``gcsfs`` / ``adlfs`` are installed. This module is the one
place that knows the difference; everything else composes paths with ``/`` and calls the helpers here.

- :func:`as_path` gives a :class:`pathlib.Path` for a folder (local work runs exactly as it always
  did) and a :class:`upath.UPath` for a URI (fsspec underneath: ``s3fs`` for S3). Both answer ``/``,
  ``name``, ``parent``, ``is_file``, ``exists``, ``read_text``, ``glob``, ``stat().st_size``.
- Parquet goes through polars' native object-store I/O (:func:`read_parquet`, :func:`scan_parquet`,
  :func:`parquet_schema`); LanceDB gets the same credentials from :func:`object_store_options`.
- Files that a library must open from disk (``torch.load``, zip archives, SQLite, the source readers)
  are read through :func:`local_copy`: the object downloaded once into a local cache, checked against
  its ETag and size, so a second read costs one HEAD request.
- Writes: :func:`staged_upload` yields a local temporary file and, once it is complete, sends it as a
  single PUT (multipart uploads also become visible only when completed): a reader sees the old object
  or the new one, never a part. ``corpus_build.atomic`` builds every writer on it.

Credentials and endpoint come from the standard variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``) or, when the keys are unset, from the SDKs' default
chains (instance or pod roles, ``~/.aws``). They are passed to the libraries and never logged: errors
name the URI only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# URI schemes served through fsspec/object_store; anything else (no scheme, file://) is the local disk.
OBJECT_STORE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
LOCAL_CACHE = Path.home() / ".cache" / "rar-pipeline"  # local copies of objects, working copies
# Standard AWS variables -> object_store (polars, LanceDB) option names.
_AWS_OPTIONS = {
    "AWS_ACCESS_KEY_ID": "aws_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key",
    "AWS_SESSION_TOKEN": "aws_session_token",
}

def scheme(location) -> str:
    """The URI scheme of ``location`` ('' for a plain path)."""
    text = str(location)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_remote(location) -> bool:
    """True when ``location`` is an object-store URI (s3://, gs://, az://, ...)."""
    return scheme(location) in OBJECT_STORE_SCHEMES


def as_path(location):
    """``location`` as a path object: a :class:`pathlib.Path` for a folder or ``file://`` URI, a
    :class:`upath.UPath` for an object-store URI (already a path object: returned as it is)."""
    if not isinstance(location, (str, os.PathLike)) and hasattr(location, "fs"):
        return location  # a UPath
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if not is_remote(text):
        return Path(text)
    if scheme(text) not in OBJECT_STORE_SCHEMES:
        raise ValueError(f"unsupported storage URI {text!r}: use a folder or one of "
                         + ", ".join(f"{s}://" for s in OBJECT_STORE_SCHEMES))
    from upath import UPath

    try:
        return UPath(text.rstrip("/"))
    except ImportError as error:  # fsspec names the missing package (s3fs, gcsfs, adlfs)
        raise ImportError(f"{text}: {error} (pip install 'rar-pipeline[deploy]' for s3://)") from None


def uri(path) -> str:
    """The string a library takes for ``path``: a local path, or ``s3://bucket/key``."""
    return str(as_path(path))


def aws_endpoint() -> str | None:
    """The S3 endpoint of the standard variables (None: AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def object_store_options(location) -> dict[str, str]:
    """Options for Rust ``object_store`` readers (polars ``storage_options``, LanceDB ``storage_options``)
    of ``location``: the credentials, region and endpoint of the standard AWS variables, for s3:// only
    (Google and Azure readers find their own variables). Empty for local paths and for unset variables,
    so the default credential chain (an instance or pod role) still applies."""
    if scheme(location) not in ("s3", "s3a"):
        return {}
    options = {name: os.environ[var] for var, name in _AWS_OPTIONS.items() if os.environ.get(var)}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["aws_region"] = region
    if endpoint := aws_endpoint():
        options["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["aws_allow_http"] = "true"  # a local S3-compatible server (MinIO, moto) without TLS
    return options


def describe(location) -> str:
    """``location`` for a log line or metadata: the URI, and the endpoint when it is not AWS's (never keys)."""
    text = uri(location)
    endpoint = aws_endpoint() if scheme(text) in ("s3", "s3a") else None
    return f"{text} (endpoint {endpoint})" if endpoint else text


# --- Parquet through polars ------------------------------------------------------------------------


def read_parquet(path, **kwargs):
    """``polars.read_parquet`` of a local file or an object."""
    import polars as pl

    if is_remote(path):
        return pl.read_parquet(uri(path), storage_options=object_store_options(path), **kwargs)
    return pl.read_parquet(path, **kwargs)


def scan_parquet(path, **kwargs):
    """``polars.scan_parquet`` of a local file or an object (lazy: filters and columns pushed down)."""
    import polars as pl

    if is_remote(path):
        return pl.scan_parquet(uri(path), storage_options=object_store_options(path), **kwargs)
    return pl.scan_parquet(path, **kwargs)


def parquet_schema(path) -> dict:
    """Column name -> polars dtype of a Parquet file or object (its footer only)."""
    return dict(scan_parquet(path).collect_schema())


def parquet_rows(path) -> int:
    """Rows of a Parquet file or object, from its footer."""
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.ParquetFile(path).metadata.num_rows
    target = as_path(path)
    with target.fs.open(target.path, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def arrow_dataset(path):
    """A lazy ``pyarrow.dataset`` over a Parquet file or object (columns and filters pushed down), read
    through the same filesystem as every other object (DuckDB scans it in ``rar sql``)."""
    import pyarrow.dataset as ds

    if not is_remote(path):
        return ds.dataset(str(path), format="parquet")
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    target = as_path(path)
    return ds.dataset(target.path, filesystem=PyFileSystem(FSSpecHandler(target.fs)), format="parquet")


# --- whole files ------------------------------------------------------------------------------------


@contextlib.contextmanager
def staged_upload(target) -> Iterator[Path]:
    """Yield a local temporary file; when the block ends without an exception, send it to the object
    ``target`` in one PUT (a multipart upload for large files, also visible only once complete). On any
    exception nothing is sent and the old object, if any, stays as it was."""
    target = as_path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        target.fs.put_file(str(tmp), target.path)
        target.fs.invalidate_cache(target.parent.path)
    finally:
        tmp.unlink(missing_ok=True)


def local_copy(path, cache_dir: Path | None = None) -> Path:
    """A local file holding ``path``'s bytes: ``path`` itself on the local disk; for an object, a copy
    fetched when its ETag or size changed, in ``cache_dir`` (default ``~/.cache/rar-pipeline/objects/``)
    under one folder per object prefix, so the objects of one prefix sit side by side as they did.
    Raises FileNotFoundError when the object does not exist."""
    if not is_remote(path):
        return Path(path)
    source = as_path(path)
    info = source.fs.info(source.path)
    if info.get("type") == "directory":
        raise IsADirectoryError(uri(source))
    stamp = {"uri": uri(source), "size": info.get("size"), "etag": info.get("ETag") or info.get("etag")}
    folder = _cache_folder(source.parent, cache_dir)
    local, sidecar = folder / source.name, folder / f".{source.name}.json"
    with contextlib.suppress(OSError, ValueError):
        if local.is_file() and json.loads(sidecar.read_text()) == stamp and local.stat().st_size == stamp["size"]:
            return local
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        source.fs.get_file(source.path, name)
        os.replace(name, local)
    finally:
        Path(name).unlink(missing_ok=True)
    sidecar.write_text(json.dumps(stamp))
    return local


def local_folder(folder, names, cache_dir: Path | None = None) -> Path:
    """A local folder holding the files ``names`` of ``folder`` that exist: ``folder`` itself on the local
    disk; for an object prefix, the folder of their local copies (:func:`local_copy`)."""
    if not is_remote(folder):
        return Path(folder)
    folder = as_path(folder)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            local_copy(folder / name, cache_dir)
    return _cache_folder(folder, cache_dir)


def _cache_folder(prefix, cache_dir: Path | None) -> Path:
    return (cache_dir or LOCAL_CACHE / "objects") / _digest(prefix)


def working_folder(location, cache_dir: Path | None = None) -> Path:
    """A local folder that belongs to the object-store ``location`` (e.g. a SQLite working copy of what
    is published there), the same for every process of this machine."""
    folder = (cache_dir or LOCAL_CACHE / "working") / _digest(location)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _digest(location) -> str:
    return hashlib.sha256(uri(location).encode()).hexdigest()[:24]


def remove_tree(path) -> None:
    """Remove a folder (or every object under a prefix) and everything in it; nothing if absent."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    target = as_path(path)
    with contextlib.suppress(FileNotFoundError):
        target.fs.rm(target.path, recursive=True)
    target.fs.invalidate_cache(target.path)


def fingerprint(path) -> str | None:
    """What changes when the file changes: ``size:mtime_ns`` locally, ``size:etag`` for an object; None
    when it does not exist."""
    if not is_remote(path):
        try:
            stat = Path(path).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    target = as_path(path)
    try:
        info: dict[str, Any] = target.fs.info(target.path)
    except FileNotFoundError:
        return None
    etag = str(info.get("ETag") or info.get("etag") or info.get("LastModified") or "").strip('"')
    return f"{info.get('size')}:{etag}"


def ensure_folder(path):
    """Create the folder ``path`` (and its parents) on the local disk; object stores have no folders."""
    path = as_path(path)
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)
    return path
