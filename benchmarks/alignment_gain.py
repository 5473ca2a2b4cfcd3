"""Alignment gain: pipeline NDCG@10 with the aligned retriever vs the SFT-only retriever, same generator.

Prerequisites (the documented Dagster way, on the mirror data; RAR_HOME outside the repo)::

    export RAR_HOME=/tmp/rar_g/home RAR_PROFILE=full RAR_SOURCE_MIRROR=/work/shared/data \\
           RAR_ALIGNMENT_DATASETS='["redial"]' RAR_RETRIEVER_TEXT_INIT=false
    dagster asset materialize -m rar_pipeline.definitions --select 'group:corpus and not key:movie_vectors'
    dagster asset materialize -m rar_pipeline.definitions \\
        --select 'user_sequences,conversation_turns,lrurec_pretrained,lrurec_sft'

Then::

    python benchmarks/alignment_gain.py --generators embedding,llama_cpp --objectives grpo,dpo,nll

For each generator, seed and objective: ``--rounds`` alignment rounds in a row from the SFT checkpoint
(:func:`training.alignment_round.align_from_tables`, ReDial validation turns, the hashed gate slice kept
apart), each in its own folder under ``$RAR_HOME/benchmarks/alignment_gain/``, then both retrievers'
top-20 re-ranked by the same generator on a seeded sample of ReDial test turns and of INSPIRED dev
turns (never learned from), scored under the zero-shot CRS protocol with :mod:`training.evaluation_report`.
Bootstrap 95% CIs per system; the relative gain's CI is a paired bootstrap over the same turns.

Objective ``nll`` is the control: the same round with the RL term switched off (continued supervised
training on the same turns), so a gain of DPO/GRPO over it is what the generator's feedback adds; when
it is among ``--objectives``, a second table gives each RL objective's paired gain over it.

Generator answers are memoised in memory for the run (both backends are deterministic), so the two
objectives share the SFT rollouts and the SFT evaluation instead of asking the generator twice.
Rounds are resumable and a finished round is reused (delete its folder to rerun it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.generator.base import Generator  # noqa: E402

EVAL_SETS = ("redial/test", "inspired/validation")
METRIC = "ndcg@10"
CONTROL = "nll"  # the objective without an RL term


class MemoGenerator(Generator):
    """Answers of a deterministic generator remembered by (context, candidates); failures are not kept."""

    def __init__(self, inner: Generator):
        super().__init__()
        self.inner, self.name, self.memo = inner, inner.name, {}

    def _rank_batch(self, requests):
        keys = [(json.dumps(r.context, sort_keys=True), tuple(r.candidate_ids)) for r in requests]
        missing = {k: r for k, r in zip(keys, requests) if k not in self.memo}
        if missing:
            for key, result in zip(missing, self.inner.rank_batch(list(missing.values()))):
                if result.source != "fallback":
                    self.memo[key] = result
                else:
                    self.stats.add(failures=1)
                    self.memo.setdefault(("fallback",) + key, result)
        self.stats.add(cache_hits=len(keys) - len(missing))
        return [self.memo.get(k) or self.memo[("fallback",) + k] for k in keys]

    def close(self):
        self.inner.close()


def paired_gain_ci(base: np.ndarray, new: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap CI of mean(new) / mean(base) - 1, resampling turns jointly."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(n_boot, len(base)))
    b, n = base[idx].mean(axis=1), new[idx].mean(axis=1)
    gains = np.where(b > 0, n / np.maximum(b, 1e-12) - 1, np.nan)
    return float(np.nanquantile(gains, 0.025)), float(np.nanquantile(gains, 0.975))


def make_backend(name: str, prompt_tokens: int) -> Generator:
    from training.generator import make_generator

    return make_generator(name, prompt_tokens=prompt_tokens)


def evaluate(retrievers: dict, generator, lookup, sets, popularity, item_set, n_boot: int, seed: int):
    """Per-turn and summary frames of '<retriever>+<generator>' for each retriever on each set."""
    from training.evaluation_protocol import summarise
    from training.evaluation_report import evaluate_systems

    per_turn = evaluate_systems(sets, retrievers, generator, lookup, popularity, item_set, candidates=20, log=lambda m: None)
    per_turn = per_turn.filter(pl.col("system").str.ends_with(f"+{generator.name}"))
    return per_turn, summarise(per_turn, [METRIC], n_boot=n_boot, seed=seed)


def run(args) -> tuple[list[dict], list[dict]]:
    from rar_pipeline.settings import get_settings
    from training.alignment_round import RoundConfig, align_from_tables
    from training.evaluation_report import evaluation_sets, popularity_counts
    from training.layout import benchmark_dir, checkpoint_path, exported_checkpoint
    from training.promotion import GateRule
    from training.retriever import Retriever
    from training.turn_pools import CorpusLookup

    s = get_settings()
    turns_path, corpus_path = s.table_path("conversation_turns"), s.table_path("movie_corpus")
    sft_path = args.parent or checkpoint_path(s.home, "sft")
    if not sft_path.is_file():
        raise SystemExit(f"{sft_path} not found: materialise lrurec_sft first (see this script's docstring)")
    turns = pl.read_parquet(turns_path)
    lookup = CorpusLookup.from_parquet(corpus_path)
    item_set = set(lookup.corpus["movie_id"].to_list())
    popularity = popularity_counts(turns, ["redial"], s.learning_folds())
    sft = Retriever.from_checkpoint(sft_path)
    out_root = benchmark_dir(s.home, "alignment_gain")
    versus_control: list[dict] = []
    # Rounds from another parent get their own folders (a short hash of its path keeps the names short).
    parent_tag = f"from-{hashlib.md5(str(args.parent.resolve()).encode()).hexdigest()[:8]}-" if args.parent else ""
    rows = []
    for backend in args.generators:
        small = backend != "embedding"
        max_turns = args.llm_max_turns if small else args.max_turns
        eval_turns = args.llm_eval_turns if small else args.eval_turns
        num_sets = args.llm_num_sets if small else args.num_sets
        seeds = args.seeds[:1] if small else args.seeds
        generator = MemoGenerator(make_backend(backend, args.llm_prompt_tokens if small else s.generator_prompt_tokens))
        cache_file = args.embedding_cache if backend == "embedding" else None
        if cache_file and cache_file.is_file():
            print(f"  embedding cache: {generator.inner.load_cache(cache_file)} texts from {cache_file}", flush=True)
        try:
            for seed in seeds:
                all_sets = evaluation_sets(turns, None, eval_turns, seed)
                sets = [e for e in all_sets if e.name in EVAL_SETS]
                aligned_turns: dict[str, pl.DataFrame] = {}  # objective -> its aligned retriever's per-turn results
                for objective in args.objectives:
                    started = time.monotonic()
                    parent, parent_name = sft_path, (args.parent.parent.name if args.parent else "sft")
                    for round_number in range(1, args.rounds + 1):
                        # Each round starts from the previous one (as promoted nightly rounds do), with fresh draws.
                        config = RoundConfig(
                            objective=objective, num_sets=num_sets, set_size=20, epochs=args.epochs, lr=args.lr,
                            nll_weight=args.nll_weight, temperature=args.temperature, seed=seed + round_number - 1,
                            probe_turns=args.llm_probe_turns if small else None,
                        )
                        round_dir = out_root / (f"{parent_tag}{backend}-{objective}-seed{seed}-t{max_turns}-T{args.temperature:g}"
                                                f"-G{num_sets}-lr{args.lr:g}-e{args.epochs}-nll{args.nll_weight:g}-r{round_number}")
                        record = align_from_tables(
                            round_dir, parent, parent_name, turns_path, corpus_path, generator, config, ["redial"],
                            s.learning_folds(), max_turns, GateRule(min_turns=s.alignment_gate_min_turns),
                            log=lambda m, name=round_dir.name: print(f"  [{name}] {m}", flush=True),
                        )
                        parent, parent_name = exported_checkpoint(round_dir), round_dir.name
                        print(f"  [{round_dir.name}] gate NDCG@10 {record['gate_ndcg_before']:.4f} -> "
                              f"{record['gate_ndcg_after']:.4f}, held-out reward {record['reward_mean_before']:.4f} -> "
                              f"{record['reward_mean_after']:.4f}", flush=True)
                    aligned = Retriever.from_checkpoint(parent)
                    t_eval = time.monotonic()
                    per_turn, summary = evaluate({"sft": sft, "aligned": aligned}, generator, lookup, sets,
                                                 popularity, item_set, args.n_boot, seed)
                    if cache_file:
                        generator.inner.save_cache(cache_file)
                    aligned_turns[objective] = per_turn.filter(pl.col("system") == f"aligned+{backend}")
                    for eval_set in sets:
                        rows.append(result_row(backend, objective, seed, eval_set.name, per_turn, summary, record,
                                               time.monotonic() - started, time.monotonic() - t_eval, args.n_boot))
                        print(format_row(rows[-1]), flush=True)
                versus_control.extend(control_rows(backend, seed, aligned_turns, [e.name for e in sets], args.n_boot))
        finally:
            generator.close()
    return rows, versus_control


def control_rows(backend: str, seed: int, aligned_turns: dict, datasets: list[str], n_boot: int) -> list[dict]:
    """Each RL objective against the nll control of the same seed: what the generator's feedback adds."""
    if CONTROL not in aligned_turns:
        return []
    out = []
    for objective, frame in aligned_turns.items():
        if objective == CONTROL:
            continue
        for dataset in datasets:
            base, new = paired_turns(aligned_turns[CONTROL], frame, dataset)
            gain = new.mean() / base.mean() - 1 if base.mean() else float("nan")
            lo, hi = paired_gain_ci(base, new, n_boot, seed)
            out.append({"generator": backend, "objective": objective, "seed": seed, "dataset": dataset,
                        "turns": len(base), "control": float(base.mean()), "aligned": float(new.mean()),
                        "gain": gain, "gain_lo": lo, "gain_hi": hi})
            print(format_control_row(out[-1]), flush=True)
    return out


def paired_turns(base: pl.DataFrame, new: pl.DataFrame, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-turn METRIC of two systems' frames on the same turns of ``dataset`` (base, new)."""
    keys = ["dialog_id", "turn_index"]
    left = base.filter(pl.col("dataset") == dataset).select(*keys, pl.col(METRIC).alias("base"))
    right = new.filter(pl.col("dataset") == dataset).select(*keys, pl.col(METRIC).alias("new"))
    joined = left.join(right, on=keys, how="inner")
    return joined["base"].to_numpy(), joined["new"].to_numpy()


def result_row(backend, objective, seed, dataset, per_turn, summary, record, total_s, eval_s, n_boot) -> dict:
    def system(name):
        return summary.filter((pl.col("dataset") == dataset) & (pl.col("system") == f"{name}+{backend}")).row(0, named=True)

    base, new = paired_turns(per_turn.filter(pl.col("system") == f"sft+{backend}"),
                             per_turn.filter(pl.col("system") == f"aligned+{backend}"), dataset)
    sft_row, aligned_row = system("sft"), system("aligned")
    gain = aligned_row[METRIC] / sft_row[METRIC] - 1 if sft_row[METRIC] else float("nan")
    lo, hi = paired_gain_ci(base, new, n_boot, seed)
    return {
        "generator": backend, "objective": objective, "seed": seed, "dataset": dataset, "turns": len(base),
        "sft": sft_row[METRIC], "sft_lo": sft_row[f"{METRIC}_lo"], "sft_hi": sft_row[f"{METRIC}_hi"],
        "aligned": aligned_row[METRIC], "aligned_lo": aligned_row[f"{METRIC}_lo"], "aligned_hi": aligned_row[f"{METRIC}_hi"],
        "gain": gain, "gain_lo": lo, "gain_hi": hi,
        "reward_before": record["reward_mean_before"], "reward_after": record["reward_mean_after"],
        "gate_before": record["gate_ndcg_before"], "gate_after": record["gate_ndcg_after"],
        "gate_passed": record["gate_passed"], "train_turns": record["train_turns"], "gate_turns": record["gate_turns"],
        "train_seconds": record["seconds"], "eval_seconds": eval_s, "total_seconds": total_s,
    }


HEADER = ("| generator | objective | seed | dataset | turns | SFT NDCG@10 [CI] | aligned NDCG@10 [CI] | "
          "relative gain [paired CI] | reward before -> after | gate NDCG@10 before -> after | train turns | round s |")


def format_row(r: dict) -> str:
    return (f"| {r['generator']} | {r['objective']} | {r['seed']} | {r['dataset']} | {r['turns']} | "
            f"{r['sft']:.4f} [{r['sft_lo']:.3f}, {r['sft_hi']:.3f}] | "
            f"{r['aligned']:.4f} [{r['aligned_lo']:.3f}, {r['aligned_hi']:.3f}] | "
            f"{r['gain']:+.1%} [{r['gain_lo']:+.1%}, {r['gain_hi']:+.1%}] | "
            f"{r['reward_before']:.4f} -> {r['reward_after']:.4f} | {r['gate_before']:.4f} -> {r['gate_after']:.4f} | "
            f"{r['train_turns']} | {r['train_seconds']:.0f} |")


CONTROL_HEADER = "| generator | objective | seed | dataset | turns | nll control NDCG@10 | aligned NDCG@10 | gain over the control [paired CI] |"


def format_control_row(r: dict) -> str:
    return (f"| {r['generator']} | {r['objective']} | {r['seed']} | {r['dataset']} | {r['turns']} | {r['control']:.4f} | "
            f"{r['aligned']:.4f} | {r['gain']:+.1%} [{r['gain_lo']:+.1%}, {r['gain_hi']:+.1%}] |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generators", default="embedding,llama_cpp", type=lambda v: v.split(","))
    parser.add_argument("--objectives", default="grpo,dpo", type=lambda v: v.split(","))
    parser.add_argument("--seeds", default="1234", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--max-turns", type=int, default=1000, help="embedding: training turns per round")
    parser.add_argument("--eval-turns", type=int, default=500, help="embedding: evaluation turns per dataset")
    parser.add_argument("--num-sets", type=int, default=4, help="embedding: G candidate sets per turn")
    parser.add_argument("--llm-max-turns", type=int, default=16, help="llama_cpp: training turns per round")
    parser.add_argument("--llm-eval-turns", type=int, default=20, help="llama_cpp: evaluation turns per dataset")
    parser.add_argument("--llm-num-sets", type=int, default=2, help="llama_cpp: G candidate sets per turn")
    parser.add_argument("--llm-probe-turns", type=int, default=128,
                        help="llama_cpp: held-out turns of the reward before/after probe (G calls each per retriever)")
    parser.add_argument("--llm-prompt-tokens", type=int, default=768, help="llama_cpp: prompt budget in tokens")
    parser.add_argument("--temperature", type=float, default=0.2,
                        help="sampling temperature of the candidate sets (1.0, the library default, almost never "
                        "draws a target from a diffuse retriever over ~82k films: every reward is 0)")
    parser.add_argument("--parent", type=Path, help="the baseline retriever the rounds start from and are "
                        "compared with (default: the SFT checkpoint under $RAR_HOME)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds in a row, each from the previous one")
    parser.add_argument("--embedding-cache", type=Path,
                        help="embedding backend: keep its text vectors in this .npz between runs (speed only: a cold "
                        "2,000-turn round embeds ~20k films once, ~20 minutes on 2 cores)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--nll-weight", type=float, default=1.0)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    rows, versus_control = run(args)
    print("\nSummary\n" + HEADER + "\n" + "|" + "---|" * (HEADER.count(" | ") + 1))
    for row in rows:
        print(format_row(row))
    if versus_control:
        print("\nAgainst the nll control (same parent, seed and steps)\n" + CONTROL_HEADER)
        print("|" + "---|" * (CONTROL_HEADER.count(" | ") + 1))
        for row in versus_control:
            print(format_control_row(row))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "versus_control": versus_control}, indent=2))


if __name__ == "__main__":
    main()
