"""Atomic file writes: readers never see half a file.

On the local disk the data goes to a temporary sibling, renamed over the target when complete; on an
object store (``corpus_build.storage``) to a local temporary file sent as one PUT when complete. Every
writer of the pipeline goes through :func:`atomic_path` (directly or through one of the helpers
below), so a crashed step leaves either the old file or object or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from corpus_build.storage import as_path, is_remote, local_copy, staged_upload


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a local temporary path; on success it replaces ``target`` (a path or an object URI) whole.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    if is_remote(target):
        with staged_upload(target) as tmp:
            yield tmp
        return
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame, target: str | os.PathLike):
    """Write a polars DataFrame as zstd Parquet atomically; return the target path."""
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp, compression="zstd")
    return as_path(target)


def write_bytes_atomic(data: bytes, target: str | os.PathLike):
    """Write ``data`` to ``target`` atomically; return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return as_path(target)


def write_json_atomic(obj, target: str | os.PathLike, indent: int | None = 2):
    """Write ``obj`` as JSON (``indent`` spaces) atomically; return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))
    return as_path(target)


def copy_file_atomic(source: str | os.PathLike, target: str | os.PathLike):
    """Copy ``source`` (a path or an object) over ``target`` atomically; return the target path."""
    with atomic_path(target) as tmp:
        shutil.copyfile(local_copy(source), tmp)
    return as_path(target)


def torch_save_atomic(obj, target: str | os.PathLike):
    """``torch.save(obj)`` to ``target`` atomically (torch is imported here, on first use)."""
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return as_path(target)
