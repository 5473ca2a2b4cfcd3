"""Pretraining: LRURec on the user_sequences table (next item over every position of each history),
with the item table = every corpus film, optionally initialised from the films' text vectors.

Every MovieLens dataset of the table takes part by default (ML-1M alone stops at films of 2000, while
most conversation targets are later films): each (dataset, user) row is one history, since a user id
is only unique within its dataset. :func:`target_coverage` measures how many conversation targets the
histories teach the retriever about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path

import numpy as np

from corpus_build.storage import as_path, read_parquet
from training.fit import TrainConfig, evaluate, file_stamp, fit, load_best, run_key
from training.layout import exported_checkpoint, run_dir


def pretrain_from_tables(
    sequences_path: str | Path,
    corpus_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    hidden: int = 64,
    load_vectors: Callable[[list[str]], np.ndarray] | None = None,
    datasets: Sequence[str] | None = None,
    turns_path: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Pretrain LRURec on the user_sequences table (the rows of ``datasets``, default every dataset in
    it), with the item table = every corpus film; returns metrics (overall and per dataset), users and
    interactions per dataset, the retriever checkpoint path and, with ``turns_path`` (conversation_turns),
    the ``coverage`` of conversation targets by the pretraining histories (:func:`target_coverage`).

    A run interrupted mid-way resumes from its last epoch checkpoint when called again on the same
    inputs and settings (the checkpoint folder is named after them)."""
    import polars as pl
    import torch

    from training.lrurec import LRURec, LRURecConfig
    from training.retriever import export_retriever, item_text_matrix
    from training.sequences import ItemVocab, eval_set, next_item_examples

    for path in (sequences_path, corpus_path):
        if not as_path(path).is_file():
            raise FileNotFoundError(f"{path} not found: materialise its asset first")
    vocab = ItemVocab(read_parquet(corpus_path, columns=["movie_id"])["movie_id"].to_list())
    frame = select_datasets(read_parquet(sequences_path), datasets, sequences_path)
    chosen = sorted(frame["dataset"].unique().to_list())
    train, val, test = [], [], []
    for row in frame.iter_rows(named=True):
        history = vocab.encode(row["train_movie_ids"] or [])
        val_item, test_item = vocab.encode([row["val_movie_id"] or ""]), vocab.encode([row["test_movie_id"] or ""])
        train.append(history)
        val.append(val_item)
        test.append(test_item)
    examples = next_item_examples(train, config.max_len)
    if len(examples) == 0:
        raise ValueError(f"{sequences_path}: no user has two or more films known to the corpus")
    val_set = eval_set(train, val, config.max_len)
    dataset_of_row = frame["dataset"].to_list()
    rows_of = {d: [i for i, name in enumerate(dataset_of_row) if name == d] for d in chosen}
    test_sets = {d: eval_set([train[i] + val[i] for i in rows], [test[i] for i in rows], config.max_len)
                 for d, rows in rows_of.items()}
    text = item_text_matrix(load_vectors(vocab.movie_ids), len(vocab)) if load_vectors else None
    key = run_key(file_stamp(sequences_path), file_stamp(corpus_path), config.to_dict(), hidden,
                  text is not None, chosen)
    checkpoints = run_dir(out_dir, key)
    torch.manual_seed(config.seed)
    model = LRURec(LRURecConfig(num_items=len(vocab), hidden=hidden, text_dim=None if text is None else text.shape[1]), text)
    result = fit(model, examples, val_set, config, checkpoints, resume=True, log=log)
    load_best(model, checkpoints)
    test_by_dataset = {d: evaluate(model, data, config.eval_batch_size, ks=config.ks) for d, data in test_sets.items()}
    test_metrics = _pooled(test_by_dataset, {d: len(data) for d, data in test_sets.items()})
    path = export_retriever(model.cpu(), vocab.movie_ids, exported_checkpoint(out_dir), config.max_len, test_metrics)
    sizes = frame.group_by("dataset").agg(users=pl.len(), interactions=pl.col("movie_ids").list.len().sum())
    coverage = None
    if turns_path is not None:
        coverage = target_coverage(read_parquet(turns_path, columns=["dataset", "split", "target_movie_ids"]),
                                   frame["train_movie_ids"].to_list())
    return {
        "checkpoint": path, "checkpoint_dir": checkpoints, "dataset": ",".join(chosen),
        "users": len(train), "training_examples": len(examples), "items": len(vocab), "text_init": text is not None,
        "val": result.best_metrics, "test": test_metrics, "test_by_dataset": test_by_dataset,
        "users_by_dataset": dict(sizes.select("dataset", "users").iter_rows()),
        "interactions_by_dataset": dict(sizes.select("dataset", "interactions").iter_rows()), "coverage": coverage,
        "epochs_run": result.epochs_run, "iterations": result.iterations,
        "seconds_per_epoch": result.seconds_per_epoch, "full_softmax": result.full_softmax,
    }


def select_datasets(sequences, datasets: Sequence[str] | None, source: str | Path = "user_sequences"):
    """The rows of ``datasets`` (every dataset when empty or None); a clear error for one the table lacks."""
    import polars as pl

    available = sorted(sequences["dataset"].unique().to_list())
    missing = sorted(set(datasets or ()) - set(available))
    if missing:
        raise ValueError(f"{source} has no rows of {missing}; its datasets are {available}")
    return sequences.filter(pl.col("dataset").is_in(list(datasets))) if datasets else sequences


def _pooled(metrics_by_part: dict[str, dict[str, float]], sizes: dict[str, int]) -> dict[str, float]:
    """Means over every row from per-part means (each part weighted by its number of rows; an empty part,
    whose metrics are empty, counts for nothing)."""
    parts = {part: m for part, m in metrics_by_part.items() if sizes[part]}
    total = sum(sizes[part] for part in parts)
    names = next(iter(parts.values()), {}).keys()
    return {name: sum(m[name] * sizes[part] for part, m in parts.items()) / total for name in names}


def target_coverage(turns, histories: Iterable[Sequence[str]]) -> dict[str, float]:
    """Per ``<dataset>/<split>`` of conversation turns, the share of their targets (one per turn and
    target film) that occur in ``histories``: the films pretraining gives a collaborative signal."""
    import polars as pl

    films = pl.Series(list(set(chain.from_iterable(histories))), dtype=pl.String)
    targets = turns.select("dataset", "split", "target_movie_ids").explode("target_movie_ids").drop_nulls()
    shares = (targets.group_by("dataset", "split").agg(pl.col("target_movie_ids").is_in(films.implode()).mean())
              .sort("dataset", "split"))
    return {f"{dataset}/{split}": float(share) for dataset, split, share in shares.iter_rows()}
