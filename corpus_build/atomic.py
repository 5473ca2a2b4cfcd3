"""Atomic file writes: write to a temporary sibling, then rename, so readers never see half a file.

Every writer of the pipeline goes through :func:`atomic_path` (directly or through one of the helpers
below), so a crashed step leaves either the old file or the new one, and a storage layer other than
the local disk has one place to change.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
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


def write_parquet_atomic(frame, target: str | os.PathLike) -> Path:
    """Write a polars DataFrame as zstd Parquet atomically; return the target path."""
    with atomic_path(target) as tmp:
        frame.write_parquet(tmp, compression="zstd")
    return Path(target)


def write_bytes_atomic(data: bytes, target: str | os.PathLike) -> Path:
    """Write ``data`` to ``target`` atomically; return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(obj, target: str | os.PathLike, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (``indent`` spaces) atomically; return the target path."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent))
    return Path(target)


def copy_file_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` over ``target`` atomically; return the target path."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return Path(target)


def torch_save_atomic(obj, target: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``target`` atomically (torch is imported here, on first use)."""
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return Path(target)
