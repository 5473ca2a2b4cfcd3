"""Every upstream source the pipeline knows, and which ones a profile reads.

``SOURCES`` maps a source name (asset ``raw_<name>``) to its :class:`SourceSpec`. Mirror paths follow
the layout of ``../shared/data`` (see its README.md). The shared mirror does not carry the IMDb dumps, so
IMDb's files are ``optional``: a mirror without ``imdb/<file>`` skips the source instead of failing, and a
mirror that has them (the corpus benchmark's generated dumps) serves them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from corpus_build.fetch import mirror_file
from corpus_build.sources import RemoteFile, SourceSpec
from corpus_build.sources.imdb import COLUMNS as IMDB_COLUMNS
from corpus_build.sources.imdb import read_imdb
from corpus_build.sources.movielens import LINKS_CSV, MOVIES_CSV, MOVIES_DAT, read_movielens_csv, read_movielens_dat
from corpus_build.sources.wikidata_sample import FILE_NAME as WIKIDATA_FILE
from corpus_build.sources.wikidata_sample import PACKAGE_RESOURCE, read_wikidata_sample
from corpus_build.sources.wikipedia import FILE_NAMES as WIKIPEDIA_FILES
from corpus_build.sources.wikipedia import read_wikipedia

IMDB_BASE = "https://datasets.imdbws.com"
WIKIPEDIA_BASE = "https://raw.githubusercontent.com/prust/wikipedia-movie-data/master"
GROUPLENS_BASE = "https://files.grouplens.org/datasets/movielens"


def _movielens_csv(release: str, mirror_folder: str) -> tuple[RemoteFile, ...]:
    url = f"{GROUPLENS_BASE}/{release}.zip"
    return tuple(RemoteFile(name=name, url=url, zip_member=f"{release}/{name}",
                            mirror_path=f"movielens/{mirror_folder}/{name}")
                 for name in (MOVIES_CSV, LINKS_CSV))


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec(
            name="wikidata_sample",
            description="Wikidata/OMDb movie table shipped by the PyPI package bokeh-sampledata (CC0, ~17.5k films).",
            files=(RemoteFile(name=WIKIDATA_FILE, url=None, package_resource=PACKAGE_RESOURCE),),
            reader=read_wikidata_sample,
            profiles=("sample",),
        ),
        SourceSpec(
            name="imdb",
            description="IMDb non-commercial dumps: feature films with rating, votes, directors, top-billed cast.",
            files=tuple(RemoteFile(name=name, url=f"{IMDB_BASE}/{name}", mirror_path=f"imdb/{name}", optional=True)
                        for name in IMDB_COLUMNS),
            reader=read_imdb,
            profiles=("full",),
        ),
        SourceSpec(
            name="wikipedia",
            description="Wikipedia movie data (prust/wikipedia-movie-data), per decade: cast, genres, plot.",
            files=tuple(RemoteFile(name=name, url=f"{WIKIPEDIA_BASE}/{name}",
                                   mirror_path=f"wikipedia-movie-data/{name}") for name in WIKIPEDIA_FILES),
            reader=read_wikipedia,
            profiles=("full",),
        ),
        SourceSpec(
            name="movielens",
            description="MovieLens ml-25m catalogue (movies.csv + links.csv with IMDb ids).",
            files=_movielens_csv("ml-25m", "ml-25m-metadata"),
            reader=partial(read_movielens_csv, source="movielens"),
            profiles=("full",),
        ),
        SourceSpec(
            name="movielens_small",
            description="MovieLens ml-latest-small catalogue (movies.csv + links.csv with IMDb ids).",
            files=_movielens_csv("ml-latest-small", "ml-latest-small"),
            reader=partial(read_movielens_csv, source="movielens_small"),
            profiles=("full",),
        ),
        SourceSpec(
            name="movielens_1m",
            description="MovieLens ml-1m catalogue (movies.dat; no IMDb ids).",
            files=(RemoteFile(name=MOVIES_DAT, url=f"{GROUPLENS_BASE}/ml-1m.zip", zip_member=f"ml-1m/{MOVIES_DAT}",
                              mirror_path=f"movielens/ml-1m/{MOVIES_DAT}"),),
            reader=partial(read_movielens_dat, source="movielens_1m"),
            profiles=("full",),
        ),
    )
}


def sources_for_profile(profile: str, mirror: Path | str | None = None) -> list[SourceSpec]:
    """The sources a profile reads, in a fixed order.

    With ``mirror`` (a RAR_SOURCE_MIRROR folder) a source that needs the network and has none of its
    files in the mirror is left out (IMDb with ../shared/data); without it every source is listed (the
    asset graph stays the same whatever the mirror holds: use :func:`source_files_present` at run time).
    """
    specs = [spec for spec in SOURCES.values() if profile in spec.profiles]
    if not specs:
        raise ValueError(f"unknown profile {profile!r}")
    if mirror is None:
        return specs
    return [spec for spec in specs if _present_in(spec, Path(mirror))]


def source_files_present(spec: SourceSpec, mirror: Path | str | None) -> bool:
    """False when a ``mirror`` is set and holds none of the source's files: report the source as skipped.

    Without a mirror the files come from the network or a package, so the source is always attempted.
    """
    if mirror is None:
        return True
    return _present_in(spec, Path(mirror))


def _present_in(spec: SourceSpec, mirror: Path) -> bool:
    return any(f.package_resource is not None or mirror_file(f, mirror) is not None for f in spec.files)
