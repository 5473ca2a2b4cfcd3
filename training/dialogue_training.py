"""Training the dialogue-aware retriever on conversation turns: full softmax, history masked, early stopping.

One example per (turn, target) whose target was not mentioned before the turn (inference never
proposes a mentioned film, so such a pair only teaches what is masked anyway). The loss is the
softmax cross-entropy over the whole item table with the turn's mentioned films masked out, exactly
the ranking the retriever is evaluated on; one scored position per example, so the full softmax
over 82k films costs batch x items. Validation after every epoch on a slice of dialogues that is
neither trained on nor the promotion gate's; the best epoch by validation Recall@20 is kept.

With ``average_weights`` (the default) the weights kept are not the best epoch's own but the mean of
the weights at the end of epochs 1..best (stochastic weight averaging up to the early-stopping point,
``torch.optim.swa_utils.AveragedModel``): the retriever overfits within two or three epochs, and the mean
of those epochs ranks better than any one of them on the promotion gate's slice (docs/evaluation.md,
"Weight averaging"). The selection is the same: the epochs' own validation figures.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from training.lrurec import parameter_groups
from training.sequences import left_pad


@dataclass
class DialogueTrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 64
    epochs: int = 40
    patience: int = 5
    max_len: int = 50
    max_minutes: float | None = None
    best_metric: str = "Recall@20"
    seed: int = 1234
    threads: int | None = None
    ks: tuple[int, ...] = (10, 20, 50)
    # p: after training, p x log(1 + mentions in the turns learned from) joins the item bias (best on the gate)
    popularity_prior: float = 0.3
    average_weights: bool = True  # keep the mean of epochs 1..best, not the best epoch's own weights

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TurnExamples:
    """Turns as tensors: mentioned films [n, L] (left padded), dialogue vectors [n, dim], targets [n, T]."""

    tokens: np.ndarray
    text: np.ndarray
    targets: np.ndarray  # 0-padded item indices

    def __len__(self) -> int:
        return len(self.tokens)


def turn_examples(histories: Sequence[Sequence[int]], text: np.ndarray, targets: Sequence[Sequence[int]],
                  max_len: int, one_per_target: bool) -> TurnExamples:
    """Examples from encoded turns; targets already mentioned are dropped, turns left with none too.

    ``one_per_target``: one row per (turn, target) (training); else one row per turn with all its
    targets (evaluation)."""
    rows_h, rows_x, rows_t = [], [], []
    for history, vector, turn_targets in zip(histories, text, targets, strict=True):
        seen = set(history)
        kept = [t for t in dict.fromkeys(turn_targets) if t not in seen]
        if not kept:
            continue
        for group in ([[t] for t in kept] if one_per_target else [kept]):
            rows_h.append(history)
            rows_x.append(vector)
            rows_t.append(group)
    width = max((len(t) for t in rows_t), default=1)
    target_array = np.zeros((len(rows_t), width), dtype=np.int64)
    for i, group in enumerate(rows_t):
        target_array[i, : len(group)] = group
    dim = text.shape[1] if len(text) else 0
    return TurnExamples(left_pad(rows_h, max_len), np.asarray(rows_x, dtype=np.float32).reshape(-1, dim), target_array)


def masked_logits(model, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Logits [B, N + 1] with padding and each row's mentioned films at -inf."""
    logits = model.score_items(tokens, text).float()
    logits[:, 0] = -math.inf
    return logits.scatter(1, tokens, -math.inf) if tokens.shape[1] else logits


def evaluate(model, data: TurnExamples, batch_size: int = 256, ks=(10, 20, 50)) -> dict[str, float]:
    from training.ranking_metrics import metrics_from_ranks, target_ranks

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            sl = slice(start, start + batch_size)
            logits = masked_logits(model, torch.from_numpy(data.tokens[sl]), torch.from_numpy(data.text[sl]))
            per_row = metrics_from_ranks(target_ranks(logits, torch.from_numpy(data.targets[sl])), ks)
            for name, values in per_row.items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
    model.train(was_training)
    return {name: total / max(len(data), 1) for name, total in sums.items()}


@dataclass
class DialogueTrainResult:
    best_metrics: dict[str, float]
    best_epoch: int
    epochs_run: int
    seconds: float
    curve: list[dict] = field(default_factory=list)


def fit(model, train: TurnExamples, val: TurnExamples, config: DialogueTrainConfig,
        log: Callable[[str], None] | None = None) -> DialogueTrainResult:
    """Train in place; on return ``model`` holds the best validation epoch's weights, or with
    ``config.average_weights`` the mean of the weights of epochs 1 to that one (``best_metrics``: theirs)."""
    from torch.optim.swa_utils import AveragedModel

    log = log or (lambda message: print(message, flush=True))
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
    averaged = AveragedModel(model) if config.average_weights else None  # the running mean of epochs 1..e
    started = time.monotonic()
    best = evaluate(model, val, ks=config.ks)
    best_state, best_epoch, bad = copy.deepcopy(model.state_dict()), 0, 0
    curve = [{"epoch": 0, "seconds": 0.0, **best}]
    log(f"epoch 0 val {config.best_metric}={best.get(config.best_metric, 0):.4f} NDCG@10={best.get('NDCG@10', 0):.4f}")
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(model, optimizer, train, rng, config.batch_size)
        if averaged is not None:
            averaged.update_parameters(model)
        metrics = evaluate(model, val, ks=config.ks)
        elapsed = time.monotonic() - started
        curve.append({"epoch": epoch, "seconds": elapsed, "loss": loss, **metrics})
        improved = metrics[config.best_metric] > best[config.best_metric]
        if improved:
            best, best_epoch, bad = metrics, epoch, 0
            best_state = copy.deepcopy((model if averaged is None else averaged.module).state_dict())
        else:
            bad += 1
        log(f"epoch {epoch} loss={loss:.4f} val {config.best_metric}={metrics[config.best_metric]:.4f} "
            f"NDCG@10={metrics.get('NDCG@10', 0):.4f} {elapsed:.0f}s{' *' if improved else ''}")
        if bad >= config.patience or (config.max_minutes and elapsed > 60 * config.max_minutes):
            break
    model.load_state_dict(best_state)
    model.eval()
    if averaged is not None and best_epoch > 1:
        epoch_alone, best = best, evaluate(model, val, ks=config.ks)
        log(f"kept the mean of epochs 1-{best_epoch}: val {config.best_metric}={best[config.best_metric]:.4f} "
            f"NDCG@10={best.get('NDCG@10', 0):.4f} (epoch {best_epoch} alone {epoch_alone[config.best_metric]:.4f} / "
            f"{epoch_alone.get('NDCG@10', 0):.4f})")
    return DialogueTrainResult(best, best_epoch, epoch, time.monotonic() - started, curve)


def _train_epoch(model, optimizer, train: TurnExamples, rng: np.random.Generator, batch_size: int) -> float:
    """One pass over ``train`` in a random order; the mean loss."""
    import torch.nn.functional as F

    model.train()
    order = rng.permutation(len(train))
    total, steps = 0.0, 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        tokens = torch.from_numpy(train.tokens[idx])
        logits = masked_logits(model, tokens, torch.from_numpy(train.text[idx]))
        loss = F.cross_entropy(logits, torch.from_numpy(train.targets[idx, 0]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        total += float(loss.detach())
        steps += 1
    return total / max(steps, 1)


# ---------------------------------------------------------------- from the pipeline's tables


def encode_turns(frame, vocab, text_encoder, model_config, max_len: int, one_per_target: bool) -> TurnExamples:
    """``conversation_turns`` rows as examples: mentioned films, the embedded conversation, targets."""
    from training.dialogue_retriever import conversation_text

    texts = [conversation_text(c, model_config.max_utterances, model_config.roles) for c in frame["context"].to_list()]
    vectors = text_encoder.encode(texts) if texts else np.zeros((0, model_config.text_dim), np.float32)
    histories = [vocab.encode(h or []) for h in frame["history_movie_ids"].to_list()]
    targets = [vocab.encode(t or []) for t in frame["target_movie_ids"].to_list()]
    return turn_examples(histories, vectors, targets, max_len, one_per_target)


def dialogue_films(frame, vocab) -> list[list[int]]:
    """Per dialogue of ``frame``, the item indices of every film its turns mention or recommend."""
    import polars as pl

    films = (frame.select("dataset", "dialog_id", pl.concat_list("history_movie_ids", "target_movie_ids").alias("films"))
             .explode("films").group_by("dataset", "dialog_id").agg(pl.col("films").drop_nulls().unique()))
    return [vocab.encode(row) for row in films["films"].to_list()]


def log_popularity(frame, vocab) -> np.ndarray:
    """[N + 1] log(1 + mentions) of every film in ``frame``'s histories and targets (row 0: padding)."""
    counts = np.zeros(len(vocab) + 1, dtype=np.float32)
    for column in ("history_movie_ids", "target_movie_ids"):
        for row in frame[column].to_list():
            for index in vocab.encode(row or []):
                counts[index] += 1
    return np.log1p(counts)


def train_from_tables(
    turns_path, corpus_path, out_dir, load_vectors: Callable[[list[str]], np.ndarray], text_encoder,
    text_model: str, config: DialogueTrainConfig, model_config: dict | None = None, datasets: Sequence[str] = ("redial",),
    folds=None, pretrained_checkpoint=None, learn_from_rl_fold: bool = True, sequences_path=None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train the dialogue-aware retriever from ``conversation_turns`` and ``movie_vectors``; returns metrics
    and the exported checkpoint's path (in ``out_dir``).

    Items are every corpus film, tied to its text vector (``load_vectors``). Training turns: the SFT fold of
    the learning pool of ``datasets`` (``folds``, :class:`training.turn_pools.Folds`), and also the
    rounds' RL fold when ``learn_from_rl_fold`` (a stronger retriever; the rounds then learn on turns it has
    seen); validation on the SFT validation slice, never the gate's. The item bias starts at the log
    popularity in the turns learned from, plus learned weights of film features (release-year buckets and,
    with ``sequences_path`` (user_sequences), log MovieLens popularity); with ``pretrained_checkpoint`` (a
    text-tied LRURec over the same films, e.g. lrurec_pretrained) the history encoder and the item
    projection start from it. After training, the co-mention prior is counted from the same dialogues the
    retriever learned from (:func:`training.dialogue_retriever.co_mention_cosines`), and
    ``config.popularity_prior`` x the log popularity the bias started from joins the bias."""
    import polars as pl

    from training.dialogue_retriever import (
        DialogueRetriever,
        DialogueRetrieverConfig,
        co_mention_cosines,
        film_features,
    )
    from training.retriever import export_retriever, item_text_matrix
    from training.sequences import ItemVocab
    from training.turn_pools import Folds

    log = log or (lambda message: print(message, flush=True))
    from corpus_build.storage import as_path, read_parquet
    from training.layout import exported_checkpoint

    for path in (turns_path, corpus_path):
        if not as_path(path).is_file():
            raise FileNotFoundError(f"{path} not found: materialise its asset first")
    corpus = read_parquet(corpus_path, columns=["movie_id", "year"])
    vocab = ItemVocab(corpus["movie_id"].to_list())
    turns = read_parquet(turns_path)
    watched = np.zeros(len(vocab), dtype=np.float32)
    if sequences_path is not None and as_path(sequences_path).is_file():
        for row in read_parquet(sequences_path, columns=["train_movie_ids"])["train_movie_ids"].to_list():
            for index in vocab.encode(row or []):
                watched[index - 1] += 1
    features = film_features(corpus["year"].to_list(), watched)
    pools = (folds or Folds()).split(turns, list(datasets))
    train_frame = pl.concat([pools["sft_train"], pools["rl"]]) if learn_from_rl_fold else pools["sft_train"]
    text = item_text_matrix(load_vectors(vocab.movie_ids), len(vocab))
    model_config = DialogueRetrieverConfig(num_items=len(vocab), text_dim=text.shape[1],
                                           item_features=features.shape[1], **(model_config or {}))
    torch.manual_seed(config.seed)
    model = DialogueRetriever(model_config, text, features)
    if pretrained_checkpoint is not None:
        _start_from_pretrained(model, pretrained_checkpoint, vocab.movie_ids, log)
    popularity = torch.from_numpy(log_popularity(pl.concat([train_frame, pools["sft_validation"]]), vocab))
    with torch.no_grad():
        model.bias.copy_(popularity)
    started = time.monotonic()
    train = encode_turns(train_frame, vocab, text_encoder, model_config, config.max_len, one_per_target=True)
    val = encode_turns(pools["sft_validation"], vocab, text_encoder, model_config, config.max_len, one_per_target=False)
    log(f"{len(train)} training examples ({train_frame.height} turns), {len(val)} validation turns; "
        f"conversations embedded in {time.monotonic() - started:.0f}s")
    if len(train) == 0:
        raise ValueError(f"{turns_path}: no training turn of {list(datasets)} has a target outside its history")
    result = fit(model, train, val, config, log=log)
    model.set_co_mentions(*co_mention_cosines(dialogue_films(train_frame, vocab), len(vocab)))
    with torch.no_grad():  # the popularity prior, beside the co-mention prior added after training
        model.bias.add_(config.popularity_prior * popularity)
    with_prior = evaluate(model, val, ks=config.ks)
    log(f"co-mention prior: {model.config.co_mention_pairs} film pairs at weight {model.config.co_mention_weight}, "
        f"popularity prior {config.popularity_prior}; "
        f"val {config.best_metric} {result.best_metrics[config.best_metric]:.4f} -> {with_prior[config.best_metric]:.4f}")
    model.text_model = text_model
    path = export_retriever(model, vocab.movie_ids, exported_checkpoint(out_dir), config.max_len, with_prior)
    return {
        "checkpoint": path, "items": len(vocab), "training_examples": len(train), "training_turns": train_frame.height,
        "val_turns": len(val), "val": with_prior, "val_without_co_mentions": result.best_metrics,
        "co_mention_pairs": model.config.co_mention_pairs, "popularity_prior": config.popularity_prior,
        "average_weights": config.average_weights,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "seconds": result.seconds, "curve": result.curve,
    }


def _start_from_pretrained(model, checkpoint, movie_ids: Sequence[str], log: Callable[[str], None]) -> None:
    """Copy a text-tied LRURec's weights (history encoder, item projection and residuals) into ``model``."""
    from corpus_build.storage import local_copy

    saved = torch.load(local_copy(checkpoint), map_location="cpu", weights_only=False)
    if list(saved["movie_ids"]) != list(movie_ids) or saved.get("kind", "lrurec") != "lrurec":
        raise ValueError(f"{checkpoint} is not an LRURec over the same films: cannot start from it")
    state = {k: v for k, v in saved["state"].items() if k != "bias"}
    missing, unexpected = model.lru.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "bias"]:
        raise ValueError(f"{checkpoint} does not fit the history encoder: missing {missing}, unexpected {unexpected}")
    log(f"history encoder and item table start from {checkpoint}")
