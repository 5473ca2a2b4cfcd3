"""LRURec speed: seconds per training iteration and per full-ranking validation, ours vs the official code.

Training iteration: batch 128, length 200, hidden 64, 2 blocks, 3,416 items, full softmax;
forward + backward + gradient clipping + AdamW step. Validation: full ranking over all items with the
history masked, for the 6,040 ML-1M users. Both implementations get the same batches (real ML-1M
training windows) and run interleaved, iteration by iteration, so a busy machine slows both alike.

    python benchmarks/lrurec_speed.py [--official-repo /path/to/LRURec] [--iterations 10] [--out r.json]

The official repository (github.com/yueqirex/LRURec) is imported from --official-repo, never copied;
its trivial ``wandb`` / ``pytorch_lightning`` imports are stubbed when those packages are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # transparent huge pages for torch's CPU allocator
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "movielens" / "ml-1m-leave-one-out"
MAX_LEN, BATCH, HIDDEN, BLOCKS = 200, 128, 64, 2


def load_data(folder: Path):
    from training.sequences import eval_set, left_pad, load_leave_one_out, next_item_windows

    train, val, _test, num_items = load_leave_one_out(folder)
    windows = next_item_windows(train, MAX_LEN)
    tokens = left_pad([w[:-1] for w in windows], MAX_LEN)
    labels = left_pad([w[1:] for w in windows], MAX_LEN)
    return tokens, labels, eval_set(train, [[v] for v in val], MAX_LEN), num_items


class Ours:
    name = "ours"

    def __init__(self, num_items: int, amp: bool):
        import torch

        from training.lrurec import LRURec, LRURecConfig, parameter_groups

        torch.manual_seed(0)
        self.model = LRURec(LRURecConfig(num_items=num_items, hidden=HIDDEN, blocks=BLOCKS))
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, 0.01), lr=1e-3, eps=1e-9)
        self.amp = amp

    def train_step(self, tokens, labels) -> float:
        import torch

        from training.fit import next_item_loss
        from training.sequences import trim_left_padding

        self.model.train()
        tokens, labels = trim_left_padding(torch.from_numpy(tokens), torch.from_numpy(labels))
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.amp):
            loss = next_item_loss(self.model, tokens, labels, None, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.optimizer.step()
        return float(loss)

    def validate(self, data) -> dict:
        from training.fit import evaluate

        return evaluate(self.model, data, batch_size=512, amp=self.amp, ks=(10, 20))


class Official:
    name = "official"

    def __init__(self, repo: Path, num_items: int):
        import torch

        for missing in ("wandb", "pytorch_lightning"):
            try:
                __import__(missing)
            except ImportError:
                stub = types.ModuleType(missing)
                stub.seed_everything = lambda seed: None
                sys.modules[missing] = stub
        sys.path.insert(0, str(repo))
        argv, sys.argv = sys.argv, [sys.argv[0], "--dataset_code", "ml-1m"]  # its config parses argv
        try:
            import datasets  # noqa: F401  (its train.py imports datasets before config: circular otherwise)
            from config import args as official_args
            from config import set_template
            from model.lru import LRU
            from trainer.base import BaseTrainer
            from trainer.lru import LRUTrainer
        finally:
            sys.argv = argv
        set_template(official_args)
        official_args.num_items = num_items
        official_args.device = "cpu"
        torch.manual_seed(0)
        self.args = official_args
        # The trainer's own methods, bound to a light namespace (its __init__ opens loggers/writers).
        self.ns = types.SimpleNamespace(
            args=official_args,
            model=LRU(official_args),
            ce=torch.nn.CrossEntropyLoss(ignore_index=0),
            metric_ks=[10, 20],
        )
        self.ns.optimizer = BaseTrainer._create_optimizer(self.ns)
        self.trainer = LRUTrainer

    def train_step(self, tokens, labels) -> float:
        import torch

        self.ns.model.train()
        batch = (torch.from_numpy(tokens), torch.from_numpy(labels))
        self.ns.optimizer.zero_grad()
        loss = self.trainer.calculate_loss(self.ns, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.ns.model.parameters(), self.args.max_grad_norm)
        self.ns.optimizer.step()
        return float(loss)

    def validate(self, data) -> dict:
        import torch

        self.ns.model.eval()
        sums, count = {}, 0
        with torch.no_grad():
            for start in range(0, len(data), self.args.val_batch_size):
                seqs = torch.from_numpy(data.tokens[start : start + self.args.val_batch_size])
                answers = torch.from_numpy(data.targets[start : start + self.args.val_batch_size])
                metrics = self.trainer.calculate_metrics(self.ns, (seqs, answers))
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value * len(seqs)
                count += len(seqs)
        return {key: value / count for key, value in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--official-repo", type=Path, default=None)
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per implementation")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for ours (CPU with bf16)")
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    options = parser.parse_args()

    import torch

    from training.fit import configure_threads

    configure_threads(options.threads)
    tokens, labels, val, num_items = load_data(options.data)
    print(f"{len(tokens)} training windows, {len(val)} validation users, {num_items} items, "
          f"{torch.get_num_threads()} threads", flush=True)
    impls = [Ours(num_items, options.amp)]
    if options.official_repo:
        impls.append(Official(options.official_repo, num_items))
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {impl.name: [] for impl in impls}
    cpu_times: dict[str, list[float]] = {impl.name: [] for impl in impls}
    for it in range(options.warmup + options.iterations):
        idx = rng.choice(len(tokens), BATCH, replace=False)
        for impl in impls:  # interleaved: the same batch, back to back
            start, cpu_start = time.perf_counter(), time.process_time()
            loss = impl.train_step(tokens[idx], labels[idx])
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
            if it >= options.warmup:
                times[impl.name].append(seconds)
                cpu_times[impl.name].append(cpu_seconds)
            print(f"iter {it} {impl.name}: {seconds:.3f}s wall, {cpu_seconds:.3f}s CPU, loss {loss:.3f}", flush=True)
    result: dict = {"threads": torch.get_num_threads(), "amp": options.amp, "iterations": options.iterations}
    for impl in impls:
        result[f"{impl.name}_seconds_per_iteration"] = statistics.median(times[impl.name])
        result[f"{impl.name}_cpu_seconds_per_iteration"] = statistics.median(cpu_times[impl.name])
    if not options.skip_validation:
        for impl in impls:
            start, cpu_start = time.perf_counter(), time.process_time()
            metrics = impl.validate(val)
            result[f"{impl.name}_seconds_per_validation"] = time.perf_counter() - start
            result[f"{impl.name}_cpu_seconds_per_validation"] = time.process_time() - cpu_start
            print(f"validation {impl.name}: {result[f'{impl.name}_seconds_per_validation']:.1f}s "
                  f"(untrained model, NDCG@10 {metrics.get('NDCG@10', float('nan')):.4f})", flush=True)
    if options.official_repo:
        result["iteration_ratio_official_over_ours"] = (
            result["official_seconds_per_iteration"] / result["ours_seconds_per_iteration"]
        )
        result["cpu_iteration_ratio_official_over_ours"] = (
            result["official_cpu_seconds_per_iteration"] / result["ours_cpu_seconds_per_iteration"]
        )
        if not options.skip_validation:
            result["validation_ratio_official_over_ours"] = (
                result["official_seconds_per_validation"] / result["ours_seconds_per_validation"]
            )
    print(json.dumps(result, indent=2), flush=True)
    if options.out:
        options.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
