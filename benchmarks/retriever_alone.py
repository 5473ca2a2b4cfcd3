"""Retriever checkpoints on their own (no generator): what a round changed in the retriever itself.

Beside ``alignment_gain.py`` (retriever top 20 re-ranked by a generator), this scores each checkpoint's own
order on every turn of ReDial test (``--datasets`` for others, e.g. inspired/validation) under the
zero-shot CRS protocol: NDCG@10, Recall@10/20/50, and where the first target sits in the top 20 when it
is there (the generator sees the list in this order). No LLM call, seconds.

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

CANDIDATES = 20  # the generator's list: where the first target sits in it
RANKED = 50  # films ranked per turn (Recall@50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--datasets", default="redial/test", help="comma-separated evaluation sets")
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
    wanted = args.datasets.split(",")
    sets = {e.name: e for e in evaluation_sets(turns, None, 10**9, s.seed) if e.name in wanted}
    if missing := [name for name in wanted if name not in sets]:
        parser.error(f"no evaluation set {missing} in {s.table_path('conversation_turns')}; it has {sorted(sets)}")
    protocol = Protocol(exclude_mentioned=True, in_corpus_only=True)
    retrievers = [(path, Retriever.from_checkpoint(path)) for path in args.checkpoints]
    for name in wanted:
        test = sets[name]
        targets = test.turns["target_movie_ids"].to_list()
        print(f"\n{test.turns.height} {name} turns; 'turns' below: those with a target left under the protocol")
        print("| checkpoint | turns | NDCG@10 | vs first | Recall@10 | Recall@20 | Recall@50 | "
              "top-20 lists holding a target | mean first-target position (0 = first) |")
        print("|---|---|---|---|---|---|---|---|---|")
        baseline = None
        for path, retriever in retrievers:
            top = retriever_rankings(retriever, test.turns, RANKED)
            scored = per_turn_results(test.turns, top, "retriever", item_set=item_set, protocol=protocol)
            ndcg = float(scored["ndcg@10"].mean())
            baseline = baseline or ndcg
            heads = [c[:CANDIDATES] for c in top]
            positions = np.array([min(c.index(t) for t in ts if t in c) for ts, c in zip(targets, heads) if set(ts) & set(c)])
            recalls = " | ".join(f"{scored[f'recall@{k}'].mean():.4f}" for k in (10, 20, 50))
            print(f"| {path.parent.name} | {scored.height} | {ndcg:.4f} | {ndcg / baseline - 1:+.1%} | {recalls} | "
                  f"{len(positions)} | {positions.mean():.2f} |")


if __name__ == "__main__":
    main()
