"""Pretraining: LRURec on the user_sequences table (next item over every position of each history),
with the item table = every corpus film, optionally initialised from the films' text vectors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.fit import TrainConfig, evaluate, file_stamp, fit, load_best, run_key


def _text_matrix(vectors, num_items: int):
    """[N + 1, dim] float32 tensor with a zero padding row, from an [N, dim] array."""
    import torch

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[0] != num_items:
        raise ValueError(f"text vectors have {vectors.shape[0]} rows for {num_items} items")
    return torch.from_numpy(np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors]))


def pretrain_from_tables(
    sequences_path: str | Path,
    corpus_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    hidden: int = 64,
    load_vectors: Callable[[list[str]], np.ndarray] | None = None,
    prefer_dataset: str = "ml-1m",
    log: Callable[[str], None] | None = None,
) -> dict:
    """Pretrain LRURec on the user_sequences table (its ``prefer_dataset`` rows when present, else all),
    with the item table = every corpus film; returns metrics and the retriever checkpoint path.

    A run interrupted mid-way resumes from its last epoch checkpoint when called again on the same
    inputs and settings (the checkpoint folder is named after them)."""
    import polars as pl
    import torch

    from training.lrurec import LRURec, LRURecConfig
    from training.retriever import export_retriever
    from training.sequences import ItemVocab, eval_set, next_item_examples

    for path in (sequences_path, corpus_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found: materialise its asset first")
    vocab = ItemVocab(pl.read_parquet(corpus_path, columns=["movie_id"])["movie_id"].to_list())
    frame = pl.read_parquet(sequences_path)
    datasets = sorted(frame["dataset"].unique().to_list())
    if prefer_dataset in datasets:
        frame = frame.filter(pl.col("dataset") == prefer_dataset)
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
    test_set = eval_set([t + v for t, v in zip(train, val, strict=True)], test, config.max_len)
    text = _text_matrix(load_vectors(vocab.movie_ids), len(vocab)) if load_vectors else None
    key = run_key(file_stamp(Path(sequences_path)), file_stamp(Path(corpus_path)), config.to_dict(), hidden, text is not None)
    checkpoints = Path(out_dir) / f"checkpoints-{key}"
    torch.manual_seed(config.seed)
    model = LRURec(LRURecConfig(num_items=len(vocab), hidden=hidden, text_dim=None if text is None else text.shape[1]), text)
    result = fit(model, examples, val_set, config, checkpoints, resume=True, log=log)
    load_best(model, checkpoints)
    test_metrics = evaluate(model, test_set, config.eval_batch_size, ks=config.ks)
    path = export_retriever(model.cpu(), vocab.movie_ids, Path(out_dir) / "retriever.pt", config.max_len, test_metrics)
    return {
        "checkpoint": path, "checkpoint_dir": checkpoints, "dataset": prefer_dataset if prefer_dataset in datasets else ",".join(datasets),
        "users": len(train), "training_examples": len(examples), "items": len(vocab), "text_init": text is not None,
        "val": result.best_metrics, "test": test_metrics, "epochs_run": result.epochs_run, "iterations": result.iterations,
        "seconds_per_epoch": result.seconds_per_epoch, "full_softmax": result.full_softmax,
    }
