"""Fine-tuning (SFT): continue a retriever on conversation turns, history = films mentioned so far,
target = each recommended film (loss at the last position)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from corpus_build.storage import as_path, read_parquet
from training.fit import TrainConfig, evaluate, file_stamp, fit, load_best, run_key
from training.layout import exported_checkpoint, run_dir


def finetune_from_turns(
    turns_path: str | Path,
    pretrained_checkpoint: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    datasets: Sequence[str] | None = None,
    folds=None,
) -> dict:
    """Continue a retriever on conversation turns: history = films mentioned so far, target = each
    recommended film (loss at the last position).

    With ``datasets`` (the alignment datasets) the SFT retriever learns from the SFT fold of their
    learning pool and validates on its SFT validation slice (``folds``, a
    :class:`training.turn_pools.Folds`, default its defaults): dialogues the RL rounds and the promotion
    gate never use. Without, it trains on the ``train`` split and validates on ``validation`` (else ``test``)."""
    import polars as pl

    from training.retriever import Retriever, export_retriever
    from training.sequences import eval_set, last_item_examples
    from training.turn_pools import Folds, sft_pools

    if not as_path(turns_path).is_file():
        raise FileNotFoundError(f"{turns_path} not found: materialise conversation_turns first")
    retriever = Retriever.from_checkpoint(pretrained_checkpoint)
    vocab, model = retriever.vocab, retriever.model
    frame = read_parquet(turns_path, columns=["dataset", "split", "dialog_id", "history_movie_ids", "target_movie_ids"])

    def encode(rows: pl.DataFrame):
        histories = [vocab.encode(h or []) for h in rows["history_movie_ids"].to_list()]
        targets = [vocab.encode(t or []) for t in rows["target_movie_ids"].to_list()]
        return histories, targets

    folds = folds or Folds()
    if datasets:
        train_rows, val_rows = sft_pools(frame, datasets, folds)
        val_name = f"SFT validation slice of {'/'.join(datasets)}"
    else:
        train_rows = frame.filter(pl.col("split") == "train")
        val_name = "validation" if frame.filter(pl.col("split") == "validation").height else "test"
        val_rows = frame.filter(pl.col("split") == val_name)
    train_h, train_t = encode(train_rows)
    examples = last_item_examples(train_h, train_t, config.max_len)
    if config.negatives == 0:
        # One scored position per example: the full softmax costs batch x items, affordable at any corpus
        # size (pretraining scores every position, hence its cap); sampled negatives made a weaker SFT.
        config = replace(config, full_softmax_max_items=max(config.full_softmax_max_items, model.config.num_items))
    if len(examples) == 0:
        raise ValueError(f"{turns_path}: no training turn has both a known history and a known target")
    val_set = eval_set(*encode(val_rows), config.max_len)
    test_set = eval_set(*encode(frame.filter(pl.col("split") == "test")), config.max_len)
    key = run_key(
        file_stamp(turns_path), file_stamp(pretrained_checkpoint), config.to_dict(),
        sorted(datasets or []), sorted(vars(folds).items()),
    )  # other turns or other folds: a fresh run, never a resume
    checkpoints = run_dir(out_dir, key)
    before = evaluate(model, test_set, config.eval_batch_size, ks=config.ks) if len(test_set) else {}
    result = fit(model, examples, val_set, config, checkpoints, resume=True, log=log)
    load_best(model, checkpoints)
    test_metrics = evaluate(model, test_set, config.eval_batch_size, ks=config.ks) if len(test_set) else {}
    path = export_retriever(model.cpu(), vocab.movie_ids, exported_checkpoint(out_dir), config.max_len, test_metrics)
    return {
        "checkpoint": path, "checkpoint_dir": checkpoints, "training_examples": len(examples), "items": len(vocab.movie_ids),
        "skipped_turns_without_history": sum(1 for h in train_h if not h), "validation_split": val_name,
        "val_turns": len(val_set), "test_turns": len(test_set), "val": result.best_metrics, "test": test_metrics,
        "test_before": before, "epochs_run": result.epochs_run, "iterations": result.iterations,
        "full_softmax": result.full_softmax,
    }
