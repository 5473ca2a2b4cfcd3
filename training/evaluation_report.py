"""The evaluation report: every system on every evaluation set, per turn, summarised with CIs.

Systems: ``popularity`` (most frequent films of the conversations the retrievers learn from), each
retriever checkpoint that exists (``pretrained``, ``sft``: the paper's history-only LRURec; ``dialogue``:
the dialogue-aware retriever; ``aligned``) alone, and each retriever followed by the generator
(``<retriever>+<generator>``: the generator re-orders the retriever's top ``candidates``, K, and its
order is fused with the retriever's, :func:`training.fusion.fuse_rankings`).
Evaluation sets: each conversation dataset's held-out split (:func:`training.turn_pools.held_out_split`:
``test``, else ``validation``, as INSPIRED dev offline), which no stage learns from; plus MovieLens
next-item prediction on ``user_sequences`` (retrievers and popularity only: there is no dialogue).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import polars as pl

from corpus_build.schema import CONVERSATION_TURNS_SCHEMA
from corpus_build.storage import as_path, read_parquet
from training.evaluation_protocol import DEFAULT_KS, Protocol, chart_png, markdown_table, per_turn_results, summarise
from training.fusion import fuse_rankings
from training.layout import SYSTEMS, checkpoint_path, evaluation_chart_path, round_records, rounds_dir, text_vectors_dir
from training.turn_pools import held_out_split

HEADLINE = "ndcg@10"
REPORT_METRICS = [f"{m}@{k}" for m in ("ndcg", "recall") for k in DEFAULT_KS] + ["mrr"]


@dataclass
class EvaluationSet:
    name: str  # e.g. "redial/test"
    turns: pl.DataFrame  # CONVERSATION_TURNS_SCHEMA (MovieLens rows use an empty context)
    has_dialogue: bool


def evaluation_sets(turns: pl.DataFrame, sequences: pl.DataFrame | None, max_turns: int, seed: int
                    ) -> list[EvaluationSet]:
    """The evaluation sets present in the tables, each a seeded sample of at most ``max_turns``."""
    out = []
    for dataset in sorted(turns["dataset"].unique().to_list()):
        split = held_out_split(set(turns.filter(pl.col("dataset") == dataset)["split"].unique().to_list()))
        if split is None:
            continue
        part = turns.filter((pl.col("dataset") == dataset) & (pl.col("split") == split))
        out.append(EvaluationSet(f"{dataset}/{split}", _sample(part, max_turns, seed), True))
    if sequences is not None and sequences.height:
        for dataset in sorted(sequences["dataset"].unique().to_list()):
            part = _sample(sequences.filter(pl.col("dataset") == dataset), max_turns, seed)
            out.append(EvaluationSet(f"{dataset}/test", next_item_turns(part), False))
    return out


def _sample(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    return frame if frame.height <= limit else frame.sample(limit, seed=seed, shuffle=False)


def next_item_turns(sequences: pl.DataFrame) -> pl.DataFrame:
    """MovieLens next-item prediction as turns: history = train + validation films, target = test film."""
    return pl.DataFrame({
        "dataset": sequences["dataset"], "split": "test", "dialog_id": sequences["user_id"], "turn_index": 0,
        "context": [[] for _ in range(sequences.height)],
        "history_movie_ids": [t + [v] for t, v in zip(sequences["train_movie_ids"].to_list(), sequences["val_movie_id"].to_list())],
        "target_movie_ids": [[t] for t in sequences["test_movie_id"].to_list()],
        "target_mentioned_before": [[False] for _ in range(sequences.height)],
    }, schema=CONVERSATION_TURNS_SCHEMA)


def popularity_counts(turns: pl.DataFrame, datasets: Sequence[str], folds) -> Counter:
    """Film frequencies in the conversations the retrievers learn from: histories and targets of the
    learning pool of ``datasets`` (train and validation turns, held-out splits excluded) minus the
    promotion gate's slice (``folds``, a :class:`training.turn_pools.Folds`). This is the popularity a
    user of these dialogues would compare a recommender against; MovieLens next-item sets use
    :func:`sequence_counts` instead."""
    try:
        pool = folds.split(turns, datasets)
    except ValueError:  # no learning pool (no dialogue dataset learned from): an empty count
        return Counter()
    learned = pl.concat([frame for name, frame in pool.items() if name != "gate"])
    counts: Counter = Counter()
    for column in ("history_movie_ids", "target_movie_ids"):
        counts.update(m for row in learned[column].to_list() for m in row)
    return counts


def sequence_counts(sequences: pl.DataFrame | None) -> Counter:
    """Film frequencies in the MovieLens training histories (the popularity of next-item prediction)."""
    counts: Counter = Counter()
    if sequences is not None:
        counts.update(m for row in sequences["train_movie_ids"].to_list() for m in row)
    return counts


def popularity_rankings(turns: pl.DataFrame, counts: Counter, k: int) -> list[list[str]]:
    """The ``k`` most frequent films outside each turn's history (fewer only when fewer films were counted)."""
    ranked = [m for m, _ in counts.most_common()]
    out = []
    for history in turns["history_movie_ids"].to_list():
        seen = set(history)
        out.append(list(islice((m for m in ranked if m not in seen), k)))
    return out


def retriever_rankings(retriever, turns: pl.DataFrame, k: int, batch: int = 256) -> list[list[str]]:
    """Each turn's top-k films (a dialogue-aware retriever also reads the turn's conversation)."""
    histories = turns["history_movie_ids"].to_list()
    contexts = turns["context"].to_list() if retriever.reads_dialogue else None
    out = []
    for start in range(0, len(histories), batch):
        chunk = histories[start:start + batch]
        context = None if contexts is None else contexts[start:start + batch]
        out.extend([[m for m, _ in hits] for hits in retriever.retrieve_batch(chunk, k, contexts=context)])
    return out


def generator_rankings(generator, turns: pl.DataFrame, candidates: list[list[str]], movies_for) -> list[list[str]]:
    """The generator's order of each turn's candidates (a fallback keeps the retriever's order).

    Turns whose candidates hold none of their targets are not sent to the generator and keep the
    retriever's order: every metric is 0 for them in any order (``Generator.rank_scored``).
    """
    from training.generator.base import RankRequest

    requests = [RankRequest(tuple(ctx), tuple(c), movies_for(c)) for ctx, c in zip(turns["context"].to_list(), candidates)]
    return [list(r.ranking) for r in generator.rank_scored(requests, turns["target_movie_ids"].to_list())]


def evaluate_systems(
    sets: Sequence[EvaluationSet], retrievers: dict, generator, movies_for, popularity: Counter,
    item_set: set[str], candidates: int = 20, log: Callable[[str], None] = print,
    sequence_popularity: Counter | None = None, depth: int | None = None, generator_weight: float = 1.0,
    rerank_popularity: bool = False,
) -> pl.DataFrame:
    """Per-turn results of every system on every evaluation set (one frame).

    Each retriever ranks ``depth`` films (default: the largest k of the metrics); the generator re-orders
    its top ``candidates`` (K), fused with the retriever's order at ``generator_weight`` (1: the generator's
    order alone), and the rest keep the retriever's order, so Recall@k beyond K is the retriever's. With
    ``rerank_popularity`` it re-orders the popularity list's top K too (off by default: each re-ranked
    system costs a generator call per turn). ``sequence_popularity`` is the popularity list of the sets
    without dialogue (MovieLens next-item; default ``popularity``)."""
    frames = []
    protocol = Protocol(exclude_mentioned=True, in_corpus_only=True)
    depth = max(depth or max(DEFAULT_KS), candidates)
    for eval_set in sets:
        turns = eval_set.turns
        counts = popularity if (eval_set.has_dialogue and popularity) or sequence_popularity is None else sequence_popularity
        ranked = {"popularity": popularity_rankings(turns, counts, depth)}
        ranked |= {name: retriever_rankings(retriever, turns, depth) for name, retriever in retrievers.items()}
        systems = {}
        for name, top in ranked.items():
            systems[name] = top
            rerank = name != "popularity" or rerank_popularity
            if rerank and eval_set.has_dialogue and generator is not None:
                reranked = generator_rankings(generator, turns, [t[:candidates] for t in top], movies_for)
                systems[f"{name}+{generator.name}"] = [fuse_rankings(t[:candidates], r, generator_weight) + t[candidates:]
                                                       for r, t in zip(reranked, top, strict=True)]
        for system, rankings in systems.items():
            frame = per_turn_results(turns, rankings, system, item_set=item_set, protocol=protocol)
            if frame.height:
                frames.append(frame.with_columns(pl.lit(eval_set.name).alias("dataset")))
        log(f"{eval_set.name}: {turns.height} turns, {len(systems)} systems")
    if not frames:
        raise ValueError("no evaluation set has a turn with a target left under the protocol")
    return pl.concat(frames, how="diagonal_relaxed")


def rounds_curve(rounds_dir: Path) -> dict[str, float]:
    """Gate NDCG@10 after each finished alignment round, in round order."""
    return {record["round"]: float(record["gate_ndcg_after"]) for _, record in round_records(rounds_dir)}


def build_report(per_turn: pl.DataFrame, rounds: dict[str, float], n_boot: int, seed: int):
    """(summary frame, markdown, PNG bytes) of the per-turn results."""
    summary = summarise(per_turn, REPORT_METRICS, n_boot=n_boot, seed=seed)
    # The figures a reader compares, the headline with its CI: narrow enough for a laptop-wide dialog (every
    # metric of REPORT_METRICS with its CI is in the summary and the asset's `figures` table).
    markdown = markdown_table(summary, [HEADLINE, "recall@10", "recall@20", "recall@50", "mrr"], with_ci=[HEADLINE])
    png = chart_png(summary, HEADLINE, rounds or None)
    return summary, markdown, png


def headline(summary: pl.DataFrame, dialogue_sets: Sequence[str]) -> dict:
    """The headline figure: NDCG@10 of the most trained system with the generator on the largest
    dialogue evaluation set (falling back to the most trained system that exists)."""
    preference = ["aligned+", "dialogue+", "sft+", "pretrained+", "aligned", "dialogue", "sft", "pretrained", "popularity"]
    dialogue = summary.filter(pl.col("dataset").is_in(list(dialogue_sets)))
    table = dialogue if dialogue.height else summary
    largest = table.group_by("dataset").agg(pl.col("turns").max()).sort(["turns", "dataset"], descending=[True, False])
    first = largest["dataset"][0]
    rows = table.filter(pl.col("dataset") == first)
    for prefix in preference:
        match = rows.filter(pl.col("system").str.starts_with(prefix))
        if match.height:
            row = match.row(0, named=True)
            return {"dataset": first, "system": row["system"], "value": row[HEADLINE],
                    "lo": row[f"{HEADLINE}_lo"], "hi": row[f"{HEADLINE}_hi"]}
    raise ValueError("empty summary")


class NoRetrieverError(FileNotFoundError):
    """No retriever checkpoint exists yet: there is nothing to evaluate."""


@dataclass
class EvaluationReport:
    per_turn: pl.DataFrame  # one row per (evaluation set, system, turn)
    summary: pl.DataFrame  # per (evaluation set, system): metrics with bootstrap CIs
    markdown: str
    png: bytes  # the chart
    headline: dict  # see :func:`headline`
    turns_path: Path  # where per_turn was written
    chart_path: Path
    generator_name: str


def current_retrievers(home: Path) -> dict:
    """Every retriever checkpoint under ``home``, least to most trained (pretrained, sft, dialogue, aligned)."""
    from training.retriever import Retriever

    return {
        system: Retriever.from_checkpoint(checkpoint_path(home, system), text_cache_dir=text_vectors_dir(home))
        for system in reversed(SYSTEMS) if checkpoint_path(home, system).is_file()
    }


def report_from_tables(
    home: Path, turns_path: Path, sequences_path: Path, corpus_path: Path, make_generator: Callable[[], object],
    out_turns_path: Path, *, max_turns: int, seed: int, candidates: int, datasets: Sequence[str], folds,
    n_boot: int = 1000, log: Callable[[str], None] = print, generator_weight: float = 1.0,
) -> EvaluationReport:
    """The evaluation report of every retriever under ``home`` (alone and re-ranked by the generator that
    ``make_generator`` opens, fused with the retriever's order at ``generator_weight``; it is closed here) on
    every evaluation set of the tables (``sequences_path`` may be missing). ``popularity`` counts the learning pool of ``datasets`` minus the gate slice of
    ``folds``. Writes the per-turn results to ``out_turns_path`` and the chart under ``home``."""
    from corpus_build.atomic import write_bytes_atomic, write_parquet_atomic
    from training.turn_pools import CorpusLookup

    turns = read_parquet(turns_path)
    sequences = read_parquet(sequences_path) if as_path(sequences_path).is_file() else None
    lookup = CorpusLookup.from_parquet(corpus_path)
    sets = evaluation_sets(turns, sequences, max_turns, seed)
    retrievers = current_retrievers(home)
    if not retrievers:
        raise NoRetrieverError("no retriever checkpoint found: materialise lrurec_pretrained first")
    generator = make_generator()
    try:
        per_turn = evaluate_systems(
            sets, retrievers, generator, lookup, popularity_counts(turns, datasets, folds),
            set(lookup.corpus["movie_id"].to_list()), candidates=candidates, log=log,
            sequence_popularity=sequence_counts(sequences), generator_weight=generator_weight,
        )
    finally:
        generator.close()
    written = write_parquet_atomic(per_turn, out_turns_path)
    summary, markdown, png = build_report(per_turn, rounds_curve(rounds_dir(home)), n_boot=n_boot, seed=seed)
    chart_path = write_bytes_atomic(png, evaluation_chart_path(home))
    top = headline(summary, [e.name for e in sets if e.has_dialogue])
    return EvaluationReport(per_turn, summary, markdown, png, top, written, chart_path, generator.name)
