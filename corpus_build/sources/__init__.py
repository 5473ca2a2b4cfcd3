"""One module per upstream source; each parses its real upstream format into source rows.

The contract between fetching, parsing and merging:

- a :class:`SourceSpec` names a source, the :class:`RemoteFile` s it needs and a reader;
- :func:`corpus_build.fetch.fetch_source` puts those files under ``$RAR_HOME/raw/<source>/``;
- the reader turns the local files into a :class:`SourceResult`: rows in ``SOURCE_ROW_SCHEMA`` and
  rejected records in ``QUARANTINE_SCHEMA`` (never silently dropped);
- :func:`corpus_build.merge` combines the rows of every source into ``movie_corpus``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from corpus_build.storage import as_path


class SourceFormatError(ValueError):
    """An upstream file that cannot be read at all (bad header, truncated archive, not JSON).

    The message names the file and, where known, the 1-based line; rows that are individually bad go
    to quarantine instead.
    """

    def __init__(self, file: str | Path, message: str, line: int | None = None):
        self.file = str(file)
        self.line = line
        where = f"{self.file}, line {line}" if line is not None else self.file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class RemoteFile:
    """One upstream file: where it lives upstream and where a mirror folder keeps it."""

    name: str  # local file name under $RAR_HOME/raw/<source>/
    url: str | None  # upstream URL (None: the file ships inside an installed package)
    mirror_path: str | None = None  # path relative to RAR_SOURCE_MIRROR, when a mirror has it
    zip_member: str | None = None  # when the URL is a zip archive: the member to extract
    package_resource: tuple[str, str] | None = None  # (package, relative path) for package data
    optional: bool = False  # a mirror without it skips the file instead of failing


@dataclass
class SourceResult:
    rows: pl.DataFrame  # SOURCE_ROW_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    stats: dict[str, float] = field(default_factory=dict)  # e.g. {"rows_read": ..., "films": ...}


@dataclass(frozen=True)
class SourceSpec:
    name: str  # asset raw_<name>
    description: str
    files: tuple[RemoteFile, ...]
    reader: Callable[[dict[str, Path]], SourceResult]  # local files by RemoteFile.name -> result
    profiles: tuple[str, ...]  # profiles that use this source ("sample", "full")


def source_dir(raw_root: Path, source: str) -> Path:
    """Where the fetched files of ``source`` live: ``raw_root/<source>/`` (``raw_root`` is $RAR_HOME/raw)."""
    return as_path(raw_root) / source


_UNIT_SEPARATOR = "\x1f"


def string_lists(values: list[list[str]], name: str = "") -> pl.Series:
    """A ``List(String)`` Series from Python lists, fast (polars builds nested lists slowly one by one).

    Empty strings are dropped; a list may not contain the ASCII unit separator (``\\x1f``).
    """
    joined = pl.Series(name, [_UNIT_SEPARATOR.join(v) for v in values], dtype=pl.String)
    return joined.str.split(_UNIT_SEPARATOR).list.eval(pl.element().filter(pl.element() != ""))
