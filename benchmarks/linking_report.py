"""Print link rates, turn counts, pretraining coverage and the ReDial cross-check against the CRS harness.

    python benchmarks/linking_report.py [--mirror ../shared/data] [--corpus PATH | --dev-corpus] [--json OUT]

Runs ``user_sequences`` and ``conversation_turns`` (full profile, served from the mirror) into a
temporary RAR_HOME, so the artefacts under $RAR_HOME are never touched. ``--corpus`` defaults to
$RAR_HOME/tables/movie_corpus.parquet; ``--dev-corpus`` builds a stand-in corpus from the mirror's
MovieLens ml-25m-metadata + ml-latest-small movies and links (films with IMDb ids only), for when
the real movie_corpus has not been built yet.

Coverage: the share of conversation targets (per dataset and split) that occur in the training
histories of each MovieLens dataset alone, of ML-1M (the paper's pretraining data) and of all of them
(what ``lrurec_pretrained`` learns from by default): :func:`training.pretraining.target_coverage`.

Cross-check: ../shared/data/crs_turns/redial/test.jsonl (3,552 ReDial test recommendation turns
prepared by the LLMs-as-zero-shot-CRS harness), compared per turn under each ReDial recommendation
rule; see :mod:`corpus_build.interactions.crs_check`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpus_build.interactions.crs_check import cross_check  # noqa: E402
from corpus_build.interactions.dev_corpus import dev_corpus  # noqa: E402
from corpus_build.linking import Linker  # noqa: E402


def title_precision(mirror: Path, linker: Linker) -> None:
    """How often linking by title alone picks the film MovieLens' own IMDb id names (ml-latest-small)."""
    from collections import Counter

    from corpus_build.interactions.movielens_ratings import read_ml_latest_small

    small = mirror / "movielens/ml-latest-small"
    _, films = read_ml_latest_small(small / "ratings.csv", small / "movies.csv", small / "links.csv")
    right, wrong, missed, by_method = 0, 0, 0, Counter()
    for title, imdb_id in films.select("title", "imdb_id").iter_rows():
        truth = linker.link(None, imdb_id=imdb_id).movie_id
        if truth is None:
            continue
        link = linker.link(title)
        if link.movie_id is None:
            missed += 1
        elif link.movie_id == truth:
            right += 1
        else:
            wrong += 1
            by_method[link.method] += 1
    linked = right + wrong
    print(f"title-only linking vs MovieLens' IMDb ids (ml-latest-small, {linked + missed:,} films in the corpus): "
          f"precision {right / linked:.2%} of {linked:,} linked, {missed:,} unlinked; wrong by method "
          f"{dict(by_method)}")


def coverage_table(sequences: pl.DataFrame, turns: pl.DataFrame) -> dict[str, dict[str, float]]:
    """{histories: {"<dataset>/<split>": share of targets}} for each MovieLens dataset alone and all."""
    from training.pretraining import target_coverage

    groups = {d: sequences.filter(pl.col("dataset") == d) for d in sorted(sequences["dataset"].unique().to_list())}
    groups["all"] = sequences
    return {name: target_coverage(turns, part["train_movie_ids"].to_list()) for name, part in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("RAR_SOURCE_MIRROR", REPO.parent / "shared/data")))
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--dev-corpus", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        corpus = args.corpus
        if args.dev_corpus:
            corpus = dev_corpus(args.mirror, Path(home) / "dev_corpus.parquet")
        elif corpus is None:
            from rar_pipeline.settings import get_settings

            corpus = get_settings().table_path("movie_corpus")
        os.environ.update(RAR_HOME=home, RAR_PROFILE="full", RAR_SOURCE_MIRROR=str(args.mirror.resolve()))
        from rar_pipeline.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        from corpus_build.interactions import redial
        from corpus_build.interactions.build import build_conversation_turns, build_user_sequences, turn_counts
        from corpus_build.linking import LinkLog

        start = time.perf_counter()
        linker = Linker.from_parquet(corpus)
        print(f"corpus: {corpus} ({len(linker):,} films; linker built in {time.perf_counter() - start:.1f} s)")
        start = time.perf_counter()
        sequences = build_user_sequences(settings.profile, settings.upstream, linker)
        turns = build_conversation_turns(settings.profile, settings.upstream, linker, settings.seed)
        print(f"built user_sequences + conversation_turns in {time.perf_counter() - start:.1f} s\n")
        print("link rates (MovieLens: distinct films; dialogues: distinct mentions per dialogue)")
        for dataset, rate in {**sequences.log.rates(), **turns.log.rates()}.items():
            log = sequences.log if dataset in sequences.log.mentions else turns.log
            print(f"  {dataset:22s} {rate:7.2%}  ({log.linked[dataset]:,} / {log.mentions[dataset]:,})")
        sizes = (sequences.frame.group_by("dataset").agg(users=pl.len(), interactions=pl.col("movie_ids").list.len().sum())
                 .sort("dataset"))
        print("\nuser_sequences per dataset (users, interactions):",
              {d: (u, i) for d, u, i in sizes.iter_rows()}, sequences.stats)
        counts = {k: int(v) for k, v in turn_counts(turns.frame).items()}
        print("conversation_turns per dataset x split:", counts)
        print("dialogues per file (with a recommendation turn) and duplicates removed:")
        for name, value in turns.stats.items():
            print(f"  {name:60s} {value:7,.0f}")
        print(f"quarantined dialogue records: {turns.quarantine.height}")
        coverage = coverage_table(sequences.frame, turns.frame)
        columns = sorted(next(iter(coverage.values())))
        print("\ncoverage: share of conversation targets in the pretraining histories of")
        print(f"  {'histories':16s}" + "".join(f"{c:>22s}" for c in columns))
        for name, shares in coverage.items():
            print(f"  {name:16s}" + "".join(f"{shares.get(c, 0.0):22.1%}" for c in columns))
        title_precision(args.mirror, linker)
        raw = settings.upstream.source_dir("interactions_redial") / "test_data.jsonl"
        by_rule = {rule: pl.DataFrame(redial.read_redial(raw, "test", linker, LinkLog(), rule=rule)[0],
                                      schema=turns.frame.schema) for rule in redial.RULES}
        for rule, frame in by_rule.items():
            report = cross_check(args.mirror, frame, by_rule["mentioned"], linker)
            print(f"\ncross-check with crs_turns/redial/test.jsonl, rule {rule!r}"
                  f"{' (the pipeline default)' if rule == redial.DEFAULT_RULE else ''}: {report['paired']:,} turns "
                  f"paired of {report['their_turns']:,} theirs / {report['our_turns']:,} ours; targets agree on "
                  f"{report['agree']:,} = {report['agreement']:.2%}")
            print("  their turns we do not have:", report["their_turns_unpaired"])
            print("  our turns they do not have:", report["our_turns_unpaired"])
            print("  disagreement kinds (per film):")
            for kind, n in sorted(report["disagreement_kinds"].items(), key=lambda kv: -kv[1]):
                print(f"    {n:5d}  {kind}   e.g. {report['examples'][kind]}")
        if args.json is not None:
            args.json.write_text(json.dumps({
                "link_rates": {**sequences.log.rates(), **turns.log.rates()},
                "movielens": {d: {"users": u, "interactions": i} for d, u, i in sizes.iter_rows()},
                "turns": counts, "dialogue_files": turns.stats, "coverage": coverage,
                "quarantined": turns.quarantine.height}, indent=1))

if __name__ == "__main__":
    main()
