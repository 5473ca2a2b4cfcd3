"""Device check: an alignment round (rollout -> DPO/GRPO optimisation -> gate) runs on CUDA.

Run on a machine with a GPU (torch with CUDA, polars): ``python benchmarks/alignment_cuda.py``.

1. The learning-signal case of tests/test_alignment_round.py on cuda: a deterministic ranker that always
   puts one film first makes GRPO and DPO move that film up, with every parameter on the GPU.
2. Timing at the mirror's size (82,521 films, hidden 64, 2 blocks; 1,865 training turns, G = 8 sets of
   20, 3 epochs with fresh rollouts each, batch 32): one GRPO round on cuda, then one optimisation epoch
   on cuda and on the CPU.
   The ranker is deterministic, so this times the retriever's side of a round only.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import torch  # noqa: E402

from training.alignment_round import RoundConfig, run_round  # noqa: E402
from training.alignment_turns import AlignmentTurn, turn_logits  # noqa: E402
from training.generator.base import Generator, RankResult  # noqa: E402
from training.lrurec import LRURec, LRURecConfig  # noqa: E402
from training.rollouts import stored_rollouts  # noqa: E402
from training.round_optimisation import _rollout_tensors, optimise_epoch  # noqa: E402

FAVOURITE = 7


class PreferOneFilm(Generator):
    """Deterministic ranker: the favourite film first, the others in the retriever's order."""

    name = "prefer-one"

    def __init__(self, favourite: str):
        super().__init__()
        self.favourite = favourite

    def _rank_batch(self, requests):
        self.stats.add(calls=len(requests))
        return [RankResult(tuple(sorted(r.candidate_ids, key=lambda m: m != self.favourite)), "model")
                for r in requests]


def setup(n_items: int, hidden: int, blocks: int, n_turns: int, history: int, seed: int = 0):
    """A fresh LRURec and random turns; small tables target the favourite, large ones a random film."""
    torch.manual_seed(seed)
    model = LRURec(LRURecConfig(num_items=n_items, hidden=hidden, blocks=blocks, dropout=0.0, attn_dropout=0.0))
    item_ids = ["<pad>"] + [f"m{i}" for i in range(1, n_items + 1)]
    draws = torch.Generator().manual_seed(seed)
    turns = []
    for t in range(n_turns):
        past = [int(i) for i in torch.randint(1, n_items + 1, (history,), generator=draws) if int(i) != FAVOURITE]
        target = FAVOURITE if n_items < 100 else int(torch.randint(1, n_items + 1, (1,), generator=draws))
        targets = [target] if target not in past else [FAVOURITE]
        turns.append(AlignmentTurn(f"d/{t}/1", ({"role": "user", "text": "hi"},), past, targets))
    return model, item_ids, turns


def favourite_log_prob(model, turns) -> float:
    with torch.no_grad():
        return torch.log_softmax(turn_logits(model, turns, 10), -1)[:, FAVOURITE].mean().item()


def learning_signal_on_cuda(work: Path) -> None:
    for objective in ("grpo", "dpo"):
        model, item_ids, turns = setup(30, 16, 1, 48, history=3)
        model = model.cuda()
        before = favourite_log_prob(model, turns)
        config = RoundConfig(objective=objective, num_sets=4, set_size=5, nll_weight=0.0, lr=1e-2, epochs=4,
                             batch_size=16, rollout_batch=16, dpo_beta=1.0)
        result = run_round(model, item_ids, turns[:40], turns[40:], PreferOneFilm(item_ids[FAVOURITE]),
                           lambda ids: {}, config, work / objective, log=lambda m: None)
        after = favourite_log_prob(model, turns)
        on_cuda = all(p.is_cuda for p in model.parameters())
        print(f"{objective}: favourite log-prob {before:.3f} -> {after:.3f} ({after - before:+.3f}); reward "
              f"{result.reward_mean_before:.3f} -> {result.reward_mean_after:.3f}; parameters on cuda: {on_cuda}",
              flush=True)
        assert after > before + 0.2 and on_cuda


def mirror_sized_timing(work: Path) -> None:
    model, item_ids, turns = setup(82_521, 64, 2, 1865 + 472, history=4)
    train, gate = turns[:1865], turns[1865:]
    config = RoundConfig(objective="grpo", num_sets=8, set_size=20, temperature=0.2, lr=1e-3, epochs=3)
    model = model.cuda()
    started = time.time()
    run_round(model, item_ids, train, gate, PreferOneFilm(item_ids[FAVOURITE]), lambda ids: {}, config,
              work / "mirror", log=lambda m: None)
    torch.cuda.synchronize()
    print(f"mirror-sized GRPO round on cuda (rollout + 3 epochs + gate): {time.time() - started:.1f} s", flush=True)
    rollouts = stored_rollouts(work / "mirror" / "rollouts").filter(pl.col("rollout") == 1)
    for device, threads in (("cuda", None), ("cpu", 16), ("cpu", 2)):
        if threads:
            torch.set_num_threads(threads)
        policy, reference = copy.deepcopy(model).to(device), copy.deepcopy(model).to(device)
        tensors = [t.to(device) for t in _rollout_tensors(rollouts, train, config)]
        optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr)
        started = time.time()
        optimise_epoch(policy, reference, train, *tensors, optimizer, config, epoch=0)
        if device == "cuda":
            torch.cuda.synchronize()
        where = device if threads is None else f"cpu, {threads} threads"
        print(f"one optimisation epoch (1,865 turns x 8 sets, 82,521 films) on {where}: {time.time() - started:.1f} s",
              flush=True)


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    print(torch.__version__, torch.cuda.get_device_name(0), flush=True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        learning_signal_on_cuda(Path(tmp))
        mirror_sized_timing(Path(tmp))


if __name__ == "__main__":
    main()
