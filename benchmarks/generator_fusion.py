"""Choose the generator's weight in the pipeline's fused order (RAR_GENERATOR_WEIGHT) on validation turns.

    export RAR_HOME=... RAR_PROFILE=full DAGSTER_HOME=...   # a home where dialogue_retriever is materialised
    python benchmarks/generator_fusion.py [--json fusion.json] [--threads 2]

The retriever (default the dialogue-aware ``dialogue`` checkpoint) ranks each turn; the generator
(``--generator``, default ``embedding``) re-orders its top K (RAR_ALIGNMENT_SET_SIZE); the two orders are
fused (``training.fusion.fuse_rankings``) for every weight of ``--weights``. The weight with the best
NDCG@10 on the dialogue retriever's validation slice (``sft_validation``: learning-pool dialogues it never
trained on) is chosen there, never on the evaluation sets; the script then prints every weight on the
promotion gate's slice and on the held-out evaluation sets (ReDial test, INSPIRED dev), with the paired
bootstrap CI of the chosen weight against the retriever alone (weight 0) and the generator alone (1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.quality import EVAL_SETS, paired_difference_ci  # noqa: E402

DEFAULT_WEIGHTS = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"
METRICS = ("ndcg@10", "recall@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retriever", default="dialogue", help="Checkpoint system (dialogue, sft, aligned).")
    parser.add_argument("--generator", default="embedding")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="Comma-separated generator weights in [0, 1].")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from rar_pipeline.resources import GeneratorResource
    from rar_pipeline.settings import get_settings
    from training.evaluation_protocol import Protocol, per_turn_results
    from training.evaluation_report import evaluation_sets, generator_rankings, retriever_rankings
    from training.fusion import fuse_rankings
    from training.layout import checkpoint_path, text_vectors_dir
    from training.retriever import Retriever
    from training.turn_pools import CorpusLookup

    s = get_settings()
    k = s.alignment_set_size
    weights = [float(w) for w in args.weights.split(",")]
    turns = pl.read_parquet(s.table_path("conversation_turns"))
    lookup = CorpusLookup.from_parquet(s.table_path("movie_corpus"))
    items = set(lookup.corpus["movie_id"].to_list())
    folds = s.learning_folds().split(turns, s.alignment_datasets)
    sets = {"sft_validation": folds["sft_validation"], "gate": folds["gate"]}
    sets |= {e.name: e.turns for e in evaluation_sets(turns, None, 10**9, s.seed) if e.name in EVAL_SETS}
    retriever = Retriever.from_checkpoint(checkpoint_path(s.home, args.retriever), text_cache_dir=text_vectors_dir(s.home))
    generator = GeneratorResource(backend=args.generator).make_generator()
    protocol = Protocol(exclude_mentioned=True, in_corpus_only=True)
    results: dict[str, dict[float, pl.DataFrame]] = {}
    try:
        for name, frame in sets.items():
            top = retriever_rankings(retriever, frame, 50)
            ranked = generator_rankings(generator, frame, [t[:k] for t in top], lookup)
            results[name] = {
                w: per_turn_results(frame, [fuse_rankings(t[:k], g, w) + t[k:] for t, g in zip(top, ranked, strict=True)],
                                    f"w={w:g}", item_set=items, protocol=protocol)
                for w in weights
            }
            print(f"{name}: {frame.height} turns ranked", flush=True)
    finally:
        generator.close()
    chosen = max(weights, key=lambda w: (results["sft_validation"][w]["ndcg@10"].mean(), -w))
    report = {"retriever": args.retriever, "generator": args.generator, "k": k, "chosen_weight": chosen, "sets": {}}
    print(f"\nchosen on sft_validation: generator weight {chosen:g} (K = {k})\n")
    print("| set | turns | " + " | ".join(f"w={w:g}" for w in weights) + " | chosen - retriever [paired CI] | chosen - generator [paired CI] |")
    print("|---|---|" + "---|" * (len(weights) + 2))
    for name, by_weight in results.items():
        row = {"turns": by_weight[chosen].height}
        for metric in METRICS:
            row[metric] = {f"{w:g}": float(by_weight[w][metric].mean()) for w in weights}
            for other, label in ((0.0, "retriever"), (1.0, "generator")):
                if other in by_weight:
                    base, new = by_weight[other][metric].to_numpy(), by_weight[chosen][metric].to_numpy()
                    row[f"{metric}_vs_{label}"] = float((new - base).mean())
                    row[f"{metric}_vs_{label}_ci"] = paired_difference_ci(base, new, args.n_boot, s.seed)
        report["sets"][name] = row
        cells = " | ".join(f"{row['ndcg@10'][f'{w:g}']:.4f}" for w in weights)
        versus = " | ".join(_versus(row, f"ndcg@10_vs_{label}") for label in ("retriever", "generator"))
        print(f"| {name} | {row['turns']} | {cells} | {versus} |")
    print("\n(NDCG@10 per generator weight; Recall@10 is in the JSON)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _versus(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    low, high = row[f"{key}_ci"]
    return f"{row[key]:+.4f} [{low:+.3f}, {high:+.3f}]"


if __name__ == "__main__":
    main()
