"""Training loop for LRURec: AdamW, full or sampled softmax, early stopping on validation Recall@10,
a checkpoint per epoch (model + optimizer + counters + RNG) and resume from the last one.

Also the pieces the loop is made of and others reuse: the next-item loss (fused full softmax or sampled
softmax), full-ranking evaluation, and the run key that names a run's checkpoint folder. Pretraining
(``training.pretraining``) and fine-tuning (``training.finetuning``) turn tables into examples and call
:func:`fit`."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from corpus_build.atomic import torch_save_atomic
from corpus_build.storage import ensure_folder, fingerprint, is_remote, local_copy
from training.layout import best_checkpoint, last_checkpoint
from training.sequences import EvalSet, Examples, NegativeSampler, batches, item_counts


@dataclass
class TrainConfig:
    max_len: int = 200
    batch_size: int = 128
    eval_batch_size: int = 128  # CPU: keeps the scan's working set near cache size
    lr: float = 1e-3
    weight_decay: float = 0.01
    adam_eps: float = 1e-9  # as the paper's code
    max_grad_norm: float = 5.0
    epochs: int = 500
    patience: int = 10  # validations without improvement of the best metric
    val_every: int | None = None  # validate every N iterations; None: after every epoch
    best_metric: str = "Recall@10"
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = False  # bf16 autocast (GPU; also works on CPUs with bf16 support)
    negatives: int = 0  # 0: full softmax; >0: sampled softmax with this many shared negatives
    full_softmax_max_items: int = 50_000  # above this, negatives are sampled even when negatives=0
    sampler: str = "uniform"  # uniform | popularity
    threads: int | None = None  # torch CPU threads (None: all cores)
    max_minutes: float | None = None  # wall-clock budget for training (validations included)
    progress: bool = True
    ks: tuple[int, ...] = (1, 5, 10, 20)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    best_metrics: dict[str, float]
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    epochs_run: int
    iterations: int
    start_epoch: int
    seconds_per_epoch: float
    stopped_early: bool
    curve: list[dict] = field(default_factory=list)  # one row per validation: iteration, seconds, metrics
    full_softmax: bool = True  # False: sampled softmax over shared negatives


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def configure_threads(threads: int | None) -> None:
    """One intra-op pool sized to the cores we have; no inter-op oversubscription."""
    import torch

    threads = threads or os.cpu_count() or 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(device, enabled: bool):
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _fused_ce_class():
    import torch

    class FusedLinearCrossEntropy(torch.autograd.Function):
        """mean CE(h @ W^T + b, targets), computed in row chunks with the gradients formed in the same
        pass: the [M, V] logits are never stored (less memory traffic, no huge fresh allocations)."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, chunk, compute_dtype):
            rows = hidden.shape[0]
            h = hidden.to(compute_dtype)
            w = weight.to(compute_dtype)
            b = bias.to(compute_dtype)
            grad_h = torch.empty(rows, weight.shape[1], dtype=torch.float32, device=hidden.device)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=hidden.device)
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=hidden.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, rows, chunk):
                h_c, t_c = h[start : start + chunk], targets[start : start + chunk]
                logits = torch.addmm(b, h_c, w.t()).float()
                target_logit = logits.gather(1, t_c.unsqueeze(1))
                row_max = logits.amax(dim=1, keepdim=True)
                probs = logits.sub_(row_max).exp_()  # in place: no second [chunk, V] buffer
                denom = probs.sum(dim=1, keepdim=True)
                total += (denom.log() + row_max - target_logit).sum()
                probs.div_(denom)
                probs[torch.arange(len(t_c), device=probs.device), t_c] -= 1.0  # softmax - one-hot
                g = probs.to(compute_dtype)
                grad_h[start : start + chunk] = (g @ w).float()
                grad_w += (g.t() @ h_c).float()
                grad_b += probs.sum(0)
            scale = 1.0 / max(rows, 1)
            ctx.save_for_backward(grad_h.mul_(scale), grad_w.mul_(scale), grad_b.mul_(scale))
            ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype)
            return total * scale

        @staticmethod
        def backward(ctx, grad_out):
            grad_h, grad_w, grad_b = ctx.saved_tensors
            dh, dw, db = ctx.dtypes
            return (grad_h * grad_out).to(dh), (grad_w * grad_out).to(dw), (grad_b * grad_out).to(db), None, None, None

    return FusedLinearCrossEntropy


_FUSED_CE = None


def fused_linear_cross_entropy(hidden, weight, bias, targets, chunk: int | None = None, compute_dtype=None):
    """Mean softmax cross-entropy of ``hidden @ weight.T + bias`` against ``targets`` (full softmax)."""
    import torch

    global _FUSED_CE
    if _FUSED_CE is None:
        _FUSED_CE = _fused_ce_class()
    chunk = chunk or (1024 if hidden.device.type == "cpu" else 16384)  # CPU: cache-sized row blocks
    if compute_dtype is None:
        compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) else torch.float32
    with torch.autocast(hidden.device.type, enabled=False):
        return _FUSED_CE.apply(hidden, weight, bias, targets, chunk, compute_dtype)


def next_item_loss(model, tokens, labels, sampler: NegativeSampler | None, negatives: int):
    """Cross-entropy at non-padding positions only (labels > 0): full softmax, or sampled softmax
    over shared negatives with the log-q correction and accidental hits masked."""
    import torch
    import torch.nn.functional as F

    hidden, packing = model.encode_packed(tokens)
    targets = packing.pack(labels)
    keep = targets > 0
    if not bool(keep.all()):
        hidden, targets = hidden[keep], targets[keep]
    if sampler is None:
        return fused_linear_cross_entropy(hidden, model.items.weight(), model.bias, targets)
    neg = sampler.sample(negatives).to(tokens.device)
    candidates = torch.cat([targets, neg])
    weights = model.items.embed(candidates)
    pos = (hidden * weights[: len(targets)]).sum(-1) + model.bias[targets]
    neg_scores = hidden @ weights[len(targets) :].t() + model.bias[neg]
    log_q = sampler.log_q.to(tokens.device)
    pos = pos.float() - log_q[targets] - math.log(negatives)
    neg_scores = neg_scores.float() - log_q[neg] - math.log(negatives)
    neg_scores = neg_scores.masked_fill(neg.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos.unsqueeze(1), neg_scores], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=tokens.device))


def evaluate(model, data: EvalSet, batch_size: int = 128, device=None, amp: bool = False, ks=(1, 5, 10, 20)) -> dict[str, float]:
    """Mean full-ranking metrics over ``data`` (history = the input window, masked)."""
    import torch

    from training.ranking_metrics import ranking_metrics
    from training.sequences import trim_left_padding

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    with torch.inference_mode(), _autocast(device, amp):
        weight = model.items.weight()
        for start in range(0, len(data), batch_size):
            tokens = torch.from_numpy(data.tokens[start : start + batch_size]).to(device)
            targets = torch.from_numpy(data.targets[start : start + batch_size]).to(device)
            (tokens,) = trim_left_padding(tokens)
            hidden = model.encode_last(tokens)
            scores = (hidden @ weight.t() + model.bias).float()
            per_row = ranking_metrics(scores, targets, history=tokens, ks=ks)
            for name, values in per_row.items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
    model.train(was_training)
    return {name: total / max(len(data), 1) for name, total in sums.items()}


def fit(
    model,
    train: Examples,
    val: EvalSet,
    config: TrainConfig,
    checkpoint_dir: str | Path,
    resume: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train``, validating on ``val``; checkpoints in ``checkpoint_dir``:
    ``last.pt`` (every epoch, with optimizer state, for resume) and ``best.pt`` (best validation)."""
    import torch
    from tqdm.auto import tqdm

    from training.lrurec import parameter_groups

    log = log or (lambda message: print(message, flush=True))
    configure_threads(config.threads)
    device = resolve_device(config.device)
    checkpoint_dir = ensure_folder(checkpoint_dir)
    last_path, best_path = last_checkpoint(checkpoint_dir), best_checkpoint(checkpoint_dir)
    set_seed(config.seed)
    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, eps=config.adam_eps)
    num_items = model.config.num_items
    sampler = None
    if config.negatives > 0 or num_items > config.full_softmax_max_items:
        sampler = NegativeSampler(num_items, config.sampler, item_counts(train, num_items))
    negatives = config.negatives or 1000
    rng = np.random.default_rng(config.seed)

    state = {"epoch": 0, "iteration": 0, "best_score": -1.0, "best_metrics": {}, "bad": 0, "curve": [], "train_seconds": 0.0}
    if resume and last_path.is_file():
        saved = torch.load(local_copy(last_path), map_location=device, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
        rng.bit_generator.state = saved["numpy_rng"]
        torch.set_rng_state(saved["torch_rng"])
        log(f"resumed from {last_path} after epoch {state['epoch']} (iteration {state['iteration']})")
    start_epoch = state["epoch"]
    started = time.monotonic() - state["train_seconds"]
    stop = False
    epoch_seconds: list[float] = []

    def validate() -> bool:
        metrics = evaluate(model, val, config.eval_batch_size, device, config.amp, config.ks)
        elapsed = time.monotonic() - started
        state["curve"].append({"iteration": state["iteration"], "seconds": elapsed, **metrics})
        # no validation rows (a tiny fine-tuning set): keep the latest weights
        score = metrics.get(config.best_metric, float(state["iteration"])) if len(val) else float(state["iteration"])
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_metrics=metrics, bad=0)
            torch_save_atomic({"model": model.state_dict(), "config": model.config.to_dict(), "metrics": metrics}, best_path)
        else:
            state["bad"] += 1
        log(
            f"val it={state['iteration']} t={elapsed:.0f}s NDCG@10={metrics.get('NDCG@10', 0):.4f} "
            f"Recall@10={metrics.get('Recall@10', 0):.4f}{' *' if improved else ''}"
        )
        return state["bad"] >= config.patience

    def out_of_time() -> bool:
        return config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes

    if state["iteration"] == 0 and not last_path.is_file():
        stop = validate()
    for epoch in range(start_epoch, config.epochs):
        if stop:
            break
        model.train()
        epoch_start = time.monotonic()
        total_loss, steps = 0.0, 0
        bar = tqdm(
            batches(train, config.batch_size, rng),
            total=math.ceil(len(train) / config.batch_size),
            desc=f"epoch {epoch + 1}",
            disable=not config.progress,
            mininterval=5,
        )
        for tokens, labels in bar:
            tokens, labels = tokens.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, config.amp):
                loss = next_item_loss(model, tokens, labels, sampler, negatives)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            state["iteration"] += 1
            total_loss += float(loss.detach())
            steps += 1
            if config.val_every and state["iteration"] % config.val_every == 0:
                stop = validate() or out_of_time()
                if stop:
                    break
            elif out_of_time():
                stop = True
                break
        epoch_seconds.append(time.monotonic() - epoch_start)
        state["epoch"] = epoch + 1
        if not config.val_every and not stop:
            stop = validate()
        elif stop and (not state["curve"] or state["curve"][-1]["iteration"] != state["iteration"]):
            validate()  # stopped by the time budget: the weights trained since the last validation compete too
        state["train_seconds"] = time.monotonic() - started
        torch_save_atomic(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state,
                "config": model.config.to_dict(),
                "train_config": config.to_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
            },
            last_path,
        )
        log(f"epoch {epoch + 1} loss={total_loss / max(steps, 1):.4f} {epoch_seconds[-1]:.1f}s")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, dict(state))
    return TrainResult(
        best_metrics=state["best_metrics"],
        best_checkpoint=best_path if best_path.is_file() else None,
        last_checkpoint=last_path if last_path.is_file() else None,
        epochs_run=state["epoch"] - start_epoch,
        iterations=state["iteration"],
        start_epoch=start_epoch,
        seconds_per_epoch=float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        stopped_early=stop,
        curve=state["curve"],
        full_softmax=sampler is None,
    )


def load_best(model, checkpoint_dir: str | Path):
    """Load ``best.pt`` weights into ``model`` (text buffers are not stored; they come with the model)."""
    import torch

    saved = torch.load(local_copy(best_checkpoint(checkpoint_dir)), map_location="cpu", weights_only=False)
    model.load_state_dict(saved["model"])
    return model


def run_key(*parts) -> str:
    """12 hex digits naming a training run by its inputs and settings (its checkpoint folder)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_stamp(path: Path) -> list:
    """A file's identity for a run key: path, size and modification time (an object's: URI, size and ETag)."""
    if is_remote(path):
        return [str(path), fingerprint(path)]
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]
