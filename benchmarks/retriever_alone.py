"""Retriever checkpoints on their own (no generator): what a round changed in the retriever itself.

Beside ``alignment_gain.py`` (retriever top 20 re-ranked by a generator), this scores each checkpoint's own
order on every ReDial test turn under the zero-shot CRS protocol: NDCG@10, Recall@20, and where the first
target sits in the top 20 when it is there (the generator sees the list in this order). No LLM call, seconds.

    export RAR_HOME=/tmp/rar_sft/home   # the tables and checkpoints of the alignment_gain runs
    python benchmarks/retriever_alone.py $RAR_HOME/retriever/sft/retriever.pt \\
        $RAR_HOME/benchmarks/alignment_gain/*/retriever.pt

The first checkpoint is the baseline of the relative figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATASET = "redial/test"
CANDIDATES = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    from rar_pipeline.settings import get_settings
    from training.evaluation_protocol import Protocol, per_turn_results
    from training.evaluation_report import evaluation_sets, retriever_rankings
    from training.retriever import Retriever

    torch.set_num_threads(args.threads)
    s = get_settings()
    turns = pl.read_parquet(s.table_path("conversation_turns"))
    item_set = set(pl.read_parquet(s.table_path("movie_corpus"), columns=["movie_id"])["movie_id"].to_list())
    [test] = [e for e in evaluation_sets(turns, None, 10**9, s.seed) if e.name == DATASET]
    targets = test.turns["target_movie_ids"].to_list()
    protocol = Protocol(exclude_mentioned=True, in_corpus_only=True)
    print(f"{test.turns.height} {DATASET} turns; 'turns' below: those with a target left under the protocol")
    print("| checkpoint | turns | NDCG@10 | vs first | Recall@20 | top-20 lists holding a target | "
          "mean first-target position (0 = first) |")
    print("|---|---|---|---|---|---|---|")
    baseline = None
    for path in args.checkpoints:
        top = retriever_rankings(Retriever.from_checkpoint(path), test.turns, CANDIDATES)
        scored = per_turn_results(test.turns, top, "retriever", item_set=item_set, protocol=protocol)
        ndcg = float(scored["ndcg@10"].mean())
        baseline = baseline or ndcg
        positions = np.array([min(c.index(t) for t in ts if t in c) for ts, c in zip(targets, top) if set(ts) & set(c)])
        print(f"| {path.parent.name} | {scored.height} | {ndcg:.4f} | {ndcg / baseline - 1:+.1%} | "
              f"{scored[f'recall@{CANDIDATES}'].mean():.4f} | {len(positions)} | {positions.mean():.2f} |")


if __name__ == "__main__":
    main()
