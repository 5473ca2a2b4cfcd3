"""Benchmark: build movie_corpus from full-scale IMDb-format dumps, as the assets do.

Generates the dumps with ``benchmarks/make_imdb_dumps.py`` (a subprocess, not timed) into a temporary
mirror folder laid out like ``RAR_SOURCE_MIRROR`` (``--with-shared ../shared/data`` adds the mirror's
Wikipedia and MovieLens files, i.e. the whole full profile), then runs the corpus path of the assets:
``fetch_source`` (mirror copy with sha256) -> ``read_fetched_sources`` (the readers) ->
``build_corpus`` (merge) -> ``write_corpus`` (zstd Parquet). Prints wall time per step, rows/s and the
peak RSS of this process. Target on the 2-core dev machine: <= 60 s and <= 4 GB.

    python benchmarks/movie_corpus.py [--movies 345000] [--keep DIR] [--with-shared ../shared/data]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def generate_dumps(mirror: Path, movies: int, seed: int) -> float:
    """Write the IMDb dumps where the mirror layout expects them; return the generation time."""
    from corpus_build.sources.registry import SOURCES

    generated = mirror / "_generated"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "make_imdb_dumps.py"), str(generated),
         "--movies", str(movies), "--seed", str(seed)],
        check=True,
    )
    for remote in SOURCES["imdb"].files:
        target = mirror / (remote.mirror_path or remote.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(generated / remote.name, target)
    return time.perf_counter() - started


def build(mirror: Path, home: Path) -> dict[str, float]:
    """The assets' corpus path for every full-profile source in the mirror; seconds per step, counts."""
    from corpus_build.fetch import fetch_source
    from corpus_build.merge import build_corpus, read_fetched_sources, write_corpus
    from corpus_build.sources.registry import sources_for_profile
    from rar_pipeline.settings import Settings

    settings = Settings(home=home, profile="full", source_mirror=mirror)
    specs = sources_for_profile("full", mirror)
    times: dict[str, float] = {}
    started = time.perf_counter()
    for spec in specs:
        fetch_source(spec, settings.upstream, progress=False)
    times["fetch"] = time.perf_counter() - started
    step = time.perf_counter()
    results, skipped = read_fetched_sources(specs, settings.raw_dir)
    if skipped:
        raise SystemExit(f"files not fetched: {skipped}")
    times["read"] = time.perf_counter() - step
    step = time.perf_counter()
    merged = build_corpus(results)
    times["merge"] = time.perf_counter() - step
    step = time.perf_counter()
    write_corpus(merged, settings.table_path("movie_corpus"), settings.table_path("movie_corpus_quarantine"))
    times["write"] = time.perf_counter() - step
    times["total"] = time.perf_counter() - started
    times["rows_in"] = float(sum(r.rows.height for r in results.values()))
    times["films"] = float(merged.corpus.height)
    times["quarantined"] = float(merged.quarantine.height)
    times["sources"] = ", ".join(results)  # type: ignore[assignment]
    return times


def link_shared_sources(mirror: Path, shared: Path) -> None:
    """Serve the other full-profile sources (Wikipedia, MovieLens) from ``shared`` via symlinks."""
    for folder in ("wikipedia-movie-data", "movielens"):
        if not (shared / folder).is_dir():
            raise SystemExit(f"{shared / folder} not found")
        (mirror / folder).symlink_to((shared / folder).resolve(), target_is_directory=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movies", type=int, default=345_000, help="movie titles to generate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="use (and keep) this folder instead of a temporary one")
    parser.add_argument("--with-shared", type=Path, metavar="DIR",
                        help="also merge the mirror's other sources from DIR (e.g. ../shared/data)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="rar-corpus-bench-"))
    try:
        mirror, home = work / "mirror", work / "home"
        generated = generate_dumps(mirror, args.movies, args.seed)
        print(f"generated IMDb dumps for {args.movies:,} movie titles in {generated:.1f} s (not timed below)")
        if args.with_shared:
            link_shared_sources(mirror, args.with_shared)
        times = build(mirror, home)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux
        print(f"sources: {times['sources']}")
        print(
            f"steps: fetch {times['fetch']:.1f} s, read {times['read']:.1f} s, merge {times['merge']:.1f} s, "
            f"write {times['write']:.1f} s"
        )
        print(f"films in movie_corpus: {times['films']:,.0f} (source rows {times['rows_in']:,.0f}, "
              f"quarantined {times['quarantined']:,.0f})")
        print(f"wall time: {times['total']:.1f} s  (target <= 60 s)")
        print(f"rows/s: {times['films'] / times['total']:,.0f}")
        print(f"peak RSS: {peak_gb:.2f} GB  (target <= 4 GB)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
