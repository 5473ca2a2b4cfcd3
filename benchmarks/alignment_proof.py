"""Alignment proof: do the RL rounds teach the retriever what its generator prefers, beyond supervised training?

Where the answer is known (the default): the ``preference`` generator
(:mod:`training.generator.preference_backend`) ranks films with a trait (``--trait``: Drama by default,
or e.g. from before 1980) above every other candidate, targets included. A set without such films puts the targets higher,
so it earns a higher reward; nothing in the targets tells the NLL term so. An aligned retriever must
learn to leave those films out of its top K; the ``nll`` control (the same round without the RL term)
has no reason to.

The rounds start (``--parent``) from the dialogue-aware retriever trained as the pipeline trains it but on
the SFT fold only (built here once per home, ~2 min), so they learn from turns their parent has never
seen; ``sft`` (lrurec_sft), ``dialogue`` (dialogue_retriever, which has also learnt the RL fold) or a
checkpoint file instead. The same script measures real generators (``--generator embedding`` or
``llama_cpp``, built as the pipeline builds them, answers remembered in ``responses.sqlite``); the trait
columns are then empty.

Prerequisites (the documented Dagster way, mirror data, RAR_HOME outside the repo; the settings are those
of the measured runs in docs/alignment.md)::

    export RAR_HOME=/work/cache/alignment/home DAGSTER_HOME=/work/cache/alignment/dghome RAR_PROFILE=full \
           RAR_SOURCE_MIRROR=/work/shared/data RAR_ALIGNMENT_DATASETS='["redial"]' RAR_RETRIEVER_TEXT_INIT=false \
           RAR_RETRIEVER_EPOCHS=3 RAR_RETRIEVER_MAX_MINUTES=6 RAR_RETRIEVER_THREADS=2
    dagster asset materialize -m rar_pipeline.definitions --select 'group:corpus'   # movie_vectors: ~30 min
    dagster asset materialize -m rar_pipeline.definitions \
        --select 'user_sequences,conversation_turns,lrurec_pretrained,lrurec_sft'

Then::

    python benchmarks/alignment_proof.py --seeds 1,2,3 --threads 1 --json proof.json

(GRPO's measured setting; DPO's: ``--objectives dpo,nll --dpo-pairs all --nll-weight 1``, docs/alignment.md.)

For each seed, one round per objective (``--objectives``, default grpo, dpo and the nll control) from
the parent on the RL fold of the ReDial learning pool
(:class:`training.turn_pools.Folds`), each in its own folder under ``$RAR_HOME/benchmarks/alignment_proof/`` (resumable; a finished round is
reused). Then every retriever (the parent and each round) on every turn of the evaluation sets (``--eval``,
default ReDial test; never learned from) under the zero-shot CRS protocol: pipeline NDCG@10 (the
retriever's top K re-ranked by the same generator, shown in the retriever's order), and for the
preference generator the share of trait films in the retriever's top K. Each RL objective is paired
with the nll control of the same seed (paired bootstrap over the same turns).

Acceptance (printed, on the first evaluation set): for both RL objectives, every seed beats its nll
control with a paired 95% CI of the NDCG@10 difference above zero, and the trait share in the top K falls
below the parent's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.generator.base import Generator, RankResult  # noqa: E402

METRIC = "ndcg@10"
CONTROL = "nll"
SFT_FOLD_PARENT = "dialogue-sft-fold"
DATASETS = ["redial"]


class RememberedGenerator(Generator):
    """A deterministic local generator's answers kept in SQLite by (backend, model, conversation, candidates
    in the order shown): the rounds' shared prompts (the parent's gate, the SFT evaluation) and a rerun
    after a crash never ask twice. Failures are not kept."""

    def __init__(self, inner: Generator, model: str, path: Path):
        from training.generator.cache import ResponseCache

        super().__init__()
        self.inner, self.name, self.model, self.cache = inner, inner.name, model, ResponseCache(path)

    def _key(self, request) -> str:
        from training.generator.cache import cache_key

        prompt = json.dumps([list(request.context), list(request.candidate_ids)], sort_keys=True)
        return cache_key(f"local:{self.inner.name}", self.model, prompt)

    def _rank_batch(self, requests):
        keys = [self._key(r) for r in requests]
        results = [None] * len(requests)
        for i, key in enumerate(keys):
            if (hit := self.cache.get(key)) is not None:
                results[i] = RankResult(tuple(hit["ranking"]), "cache")
        missing = [i for i, r in enumerate(results) if r is None]
        for i, answer in zip(missing, self.inner.rank_batch([requests[i] for i in missing]), strict=True):
            if answer.source == "model":
                self.cache.put(keys[i], self.model, {"ranking": list(answer.ranking)})
            results[i] = answer
        self.stats.add(cache_hits=len(requests) - len(missing), calls=len(missing))
        return results

    def close(self) -> None:
        self.inner.close()
        self.cache.close()


def sft_fold_parent(settings) -> Path:
    """The dialogue-aware retriever trained as the pipeline trains it but on the SFT fold only, so the rounds
    learn from turns their parent has never seen (``dialogue_retriever`` also learns from the RL fold: more
    NLL on turns it has fitted overfits them, and a control that loses to its parent proves nothing). Built
    once per home in the benchmark's folder and reused."""
    from assets.retriever import VectorsUnusable, train_dialogue_retriever
    from training.layout import benchmark_dir, exported_checkpoint

    out_dir = benchmark_dir(settings.home, "alignment_proof") / f"parent-{SFT_FOLD_PARENT}"
    if not exported_checkpoint(out_dir).is_file():
        print(f"training the {SFT_FOLD_PARENT} parent (dialogue-aware retriever, SFT fold only) in {out_dir}", flush=True)
        try:
            train_dialogue_retriever(out_dir, learn_from_rl_fold=False, log=lambda m: print(f"  {m}", flush=True))
        except VectorsUnusable as error:
            raise SystemExit(f"{error} (or pass --parent sft)") from error
    return exported_checkpoint(out_dir)


def make_generator(args, settings):
    """The generator under test. A real backend is built as the pipeline builds it (the generator resource:
    RAR_GENERATOR_* settings, movie_vectors' film vectors for ``embedding``), its answers remembered on disk."""
    if args.generator == "preference":
        from training.generator.preference_backend import PreferenceGenerator

        return PreferenceGenerator(args.trait)
    from rar_pipeline.resources import GeneratorResource
    from training.layout import benchmark_dir

    inner = GeneratorResource(backend=args.generator, model=args.model).make_generator()
    model = Path(args.model or settings.generator_model or "default").name
    return RememberedGenerator(inner, model, benchmark_dir(settings.home, "alignment_proof") / "responses.sqlite")


def paired_difference(base: np.ndarray, new: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean of new - base with its 95% percentile bootstrap CI (turns resampled jointly), and the
    relative gain new / base - 1."""
    diffs = new - base
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n_boot, len(diffs)))].mean(axis=1)
    return {
        "difference": float(diffs.mean()), "difference_lo": float(np.quantile(means, 0.025)),
        "difference_hi": float(np.quantile(means, 0.975)),
        "gain": float(new.mean() / base.mean() - 1) if base.mean() else float("nan"),
    }


def trait_share(rankings: list[list[str]], trait_films: set[str]) -> float:
    """Share of films with the generator's trait among the retrievers' top K lists."""
    flags = [movie_id in trait_films for ranking in rankings for movie_id in ranking]
    return float(np.mean(flags)) if flags else float("nan")


def round_config(args, objective: str, seed: int):
    from training.alignment_round import RoundConfig

    return RoundConfig(
        objective=objective, num_sets=args.num_sets, set_size=args.k, temperature=args.temperature, lr=args.lr,
        epochs=args.epochs, rollout_every=args.rollout_every, rollout_steps=args.rollout_steps or None,
        nll_weight=args.nll_weight,
        reward_baseline=args.reward_baseline, dpo_beta=args.dpo_beta, dpo_order=args.dpo_order,
        dpo_pairs=args.dpo_pairs, grpo_clip=args.grpo_clip, grpo_kl=args.grpo_kl,
        probe_turns=args.probe_turns, seed=seed,
    )


def round_dir_name(args, objective: str, seed: int, folds) -> str:
    """A folder per generator, parent, objective, seed and settings (a short hash of everything that changes
    the round: the parent checkpoint's bytes, the folds and the round's settings)."""
    config = round_config(args, objective, seed).to_dict()
    trait = args.trait if args.generator == "preference" else None
    key = json.dumps([args.generator, trait, args.model, args.max_turns, asdict(folds), args.parent_digest, config],
                     sort_keys=True)
    digest = hashlib.md5(key.encode()).hexdigest()[:8]
    return f"{args.generator}-{args.parent_name}-{objective}-seed{seed}-{digest}"


def learning_folds(args, settings):
    """The folds of the learning pool: the rounds learn from the RL fold, the gate decides on the gate fold."""
    from training.turn_pools import Folds

    return Folds(settings.alignment_gate_fraction, args.rl_share, settings.retriever_sft_validation_fraction)


def run_rounds(args, settings, generator, parent_path: Path, folds) -> dict[tuple[str, int], dict]:
    from training.alignment_round import align_from_tables
    from training.layout import benchmark_dir, text_vectors_dir
    from training.promotion import GateRule

    records = {}
    for seed in args.seeds:
        for objective in args.objectives:
            round_dir = benchmark_dir(settings.home, "alignment_proof") / round_dir_name(args, objective, seed, folds)
            calls_before = generator.stats.calls
            started = time.monotonic()
            record = align_from_tables(
                round_dir, parent_path, args.parent_name, settings.table_path("conversation_turns"),
                settings.table_path("movie_corpus"), generator, round_config(args, objective, seed), DATASETS,
                folds, args.max_turns, GateRule(min_turns=settings.alignment_gate_min_turns, seed=seed),
                log=lambda m, name=round_dir.name: print(f"  [{name}] {m}", flush=True),
                text_cache_dir=text_vectors_dir(settings.home),
            )
            record["benchmark_seconds"] = time.monotonic() - started
            record["benchmark_generator_calls"] = generator.stats.calls - calls_before
            records[(objective, seed)] = record | {"checkpoint": str(round_dir / "retriever.pt")}
            curve = " ".join(f"{r['rollout_reward']:.3f}" for r in record["loss_curve"])
            print(f"{objective} seed {seed}: gate NDCG@10 {record['gate_ndcg_before']:.4f} -> "
                  f"{record['gate_ndcg_after']:.4f} ({record['gate_reason']}); rollout reward per epoch {curve}; "
                  f"{record['benchmark_seconds']:.0f} s, {record['benchmark_generator_calls']} generator calls",
                  flush=True)
    return records


def evaluate(args, settings, generator, parent_path: Path, records: dict, folds) -> tuple[pl.DataFrame, dict]:
    """Per-turn pipeline results of every retriever on every evaluation set, and their top-K trait shares."""
    from training.evaluation_report import evaluate_systems, evaluation_sets, popularity_counts, retriever_rankings
    from training.layout import text_vectors_dir
    from training.retriever import Retriever
    from training.turn_pools import CorpusLookup

    turns = pl.read_parquet(settings.table_path("conversation_turns"))
    lookup = CorpusLookup.from_parquet(settings.table_path("movie_corpus"))
    item_set = set(lookup.corpus["movie_id"].to_list())
    sets = [e for e in evaluation_sets(turns, None, args.eval_turns, 0) if e.name in args.eval]
    missing = set(args.eval) - {e.name for e in sets}
    if missing:
        raise SystemExit(f"evaluation sets {sorted(missing)} are not in {settings.table_path('conversation_turns')}")
    text_cache = text_vectors_dir(settings.home)  # a dialogue-aware retriever's conversation vectors
    retrievers = {args.parent_name: Retriever.from_checkpoint(parent_path, text_cache_dir=text_cache)}
    for (objective, seed), record in records.items():
        retrievers[f"{objective}-seed{seed}"] = Retriever.from_checkpoint(record["checkpoint"], text_cache_dir=text_cache)
    per_turn = evaluate_systems(sets, retrievers, generator, lookup, popularity_counts(turns, DATASETS, folds), item_set,
                                candidates=args.k, log=lambda m: print(f"  evaluated {m}", flush=True))
    shares = {}
    if hasattr(generator, "has_trait"):
        trait_films = {row["movie_id"] for row in lookup.corpus.iter_rows(named=True) if generator.has_trait(row)}
        for eval_set in sets:
            for name, retriever in retrievers.items():
                top = retriever_rankings(retriever, eval_set.turns, args.k)
                shares[(eval_set.name, name)] = trait_share(top, trait_films)
    return per_turn, shares


def tables(args, per_turn: pl.DataFrame, shares: dict, records: dict) -> tuple[list[dict], list[dict]]:
    """Rows per retriever (alone and with the generator) and each RL objective against its control."""
    from training.evaluation_protocol import bootstrap_ci

    gen = args.generator
    rows, versus = [], []
    keys = ["dialog_id", "turn_index"]
    for dataset in args.eval:
        frame = per_turn.filter(pl.col("dataset") == dataset)

        def turns_of(system: str, frame: pl.DataFrame = frame) -> pl.DataFrame:
            return frame.filter(pl.col("system") == system).select(*keys, METRIC).sort(keys)

        for system in [args.parent_name, *[f"{o}-seed{s}" for s in args.seeds for o in args.objectives]]:
            pipeline, alone = turns_of(f"{system}+{gen}")[METRIC].to_numpy(), turns_of(system)[METRIC].to_numpy()
            lo, hi = bootstrap_ci(pipeline, n_boot=args.n_boot, seed=0)
            objective, _, seed = system.partition("-seed")
            record = records.get((objective, int(seed))) if seed else None
            rows.append({
                "dataset": dataset, "retriever": system, "objective": objective, "seed": int(seed) if seed else None,
                "turns": len(pipeline), "pipeline_ndcg@10": float(pipeline.mean()), "pipeline_lo": lo, "pipeline_hi": hi,
                "retriever_ndcg@10": float(alone.mean()), "trait_share": shares.get((dataset, system)),
                "gate_before": record["gate_ndcg_before"] if record else None,
                "gate_after": record["gate_ndcg_after"] if record else None,
                "gate_passed": record["gate_passed"] if record else None,
                "round_seconds": record["seconds"] if record else None,  # as recorded when the round ran
                "generator_calls": record["benchmark_generator_calls"] if record else None,
                "rollout_reward": [r["rollout_reward"] for r in record["loss_curve"]] if record else None,
                "kl": [r["kl"] for r in record["loss_curve"]] if record else None,
                "clip_fraction": [r["clip_fraction"] for r in record["loss_curve"]] if record else None,
            })
        parent = turns_of(f"{args.parent_name}+{gen}")
        for seed in args.seeds:
            if CONTROL not in args.objectives:
                break
            control = turns_of(f"{CONTROL}-seed{seed}+{gen}")
            for objective in args.objectives:
                if objective == CONTROL:
                    continue
                new = turns_of(f"{objective}-seed{seed}+{gen}")
                for against, base in (("nll control", control), (args.parent_name, parent)):
                    joined = base.join(new, on=keys, suffix="_new")
                    stats = paired_difference(joined[METRIC].to_numpy(), joined[f"{METRIC}_new"].to_numpy(),
                                              args.n_boot, seed)
                    versus.append({"dataset": dataset, "objective": objective, "seed": seed, "against": against,
                                   "turns": joined.height, **stats})
    return rows, versus


def acceptance(args, rows: list[dict], versus: list[dict]) -> dict:
    """For each RL objective: every seed's paired CI against its control above zero, and the trait share fallen."""
    out = {}
    for objective in [o for o in args.objectives if o != CONTROL]:
        dataset = args.eval[0]
        beats = [v for v in versus if v["objective"] == objective and v["against"] == "nll control"
                 and v["dataset"] == dataset]
        parent_share = next(r["trait_share"] for r in rows if r["retriever"] == args.parent_name and r["dataset"] == dataset)
        shares = [r["trait_share"] for r in rows if r["objective"] == objective and r["dataset"] == dataset]
        out[objective] = {
            "beats_control_every_seed": bool(beats) and all(v["difference_lo"] > 0 for v in beats),
            "trait_share_falls": None if parent_share is None else all(s < parent_share for s in shares),
        }
    return out


def print_tables(args, rows: list[dict], versus: list[dict], verdict: dict, header: dict) -> None:
    print(f"\n{header['generator']} generator; K = {args.k}; {header['load']}\n")
    print("| dataset | retriever | turns | pipeline NDCG@10 [95% CI] | retriever alone NDCG@10 | trait share in top K "
          "| gate NDCG@10 before -> after (passed) | rollout reward per epoch | round s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = "" if r["trait_share"] is None else f"{r['trait_share']:.3f}"
        gate = "" if r["gate_before"] is None else f"{r['gate_before']:.4f} -> {r['gate_after']:.4f} ({r['gate_passed']})"
        curve = "" if r["rollout_reward"] is None else " ".join(f"{x:.3f}" for x in r["rollout_reward"])
        seconds = "" if r["round_seconds"] is None else f"{r['round_seconds']:.0f}"
        print(f"| {r['dataset']} | {r['retriever']} | {r['turns']} | {r['pipeline_ndcg@10']:.4f} "
              f"[{r['pipeline_lo']:.4f}, {r['pipeline_hi']:.4f}] | {r['retriever_ndcg@10']:.4f} | {share} | {gate} "
              f"| {curve} | {seconds} |")
    print("\n| dataset | objective | seed | against | turns | NDCG@10 difference [paired 95% CI] | relative gain |")
    print("|---|---|---|---|---|---|---|")
    for v in versus:
        print(f"| {v['dataset']} | {v['objective']} | {v['seed']} | {v['against']} | {v['turns']} | "
              f"{v['difference']:+.4f} [{v['difference_lo']:+.4f}, {v['difference_hi']:+.4f}] | {v['gain']:+.1%} |")
    print("\nAcceptance:", json.dumps(verdict))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generator", default="preference", choices=["preference", "embedding", "llama_cpp"])
    parser.add_argument("--trait", default="genre=Drama",
                        help="preference generator: the films it ranks first (Drama: 31%% of the SFT's top 20 on "
                        "ReDial and 35%% of the targets, so the NLL term has no reason to push them down)")
    parser.add_argument("--objectives", default="grpo,dpo,nll", type=lambda v: v.split(","))
    parser.add_argument("--seeds", default="1,2,3", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--eval", default="redial/test", type=lambda v: v.split(","),
                        help="evaluation sets, e.g. redial/test,inspired/validation")
    parser.add_argument("--eval-turns", type=int, default=100_000, help="turns per evaluation set at most")
    parser.add_argument("--max-turns", type=int, default=1000, help="training turns per round (RL fold) at most")
    parser.add_argument("--rl-share", type=float, default=None, help="RL fold share (default: the setting)")
    parser.add_argument("--k", type=int, default=20, help="K: candidates per set and per pipeline list")
    parser.add_argument("--num-sets", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rollout-every", type=int, default=1)
    parser.add_argument("--rollout-steps", type=int, default=1,
                        help="fresh rollouts every this many steps (each step learns from its own policy's draws); "
                        "0: every --rollout-every epochs")
    parser.add_argument("--nll-weight", type=float, default=0.5)
    parser.add_argument("--reward-baseline", default="none", choices=["none", "retriever"])
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--dpo-order", default="likeliest", choices=["likeliest", "drawn"])
    parser.add_argument("--dpo-pairs", default="extremes", choices=["extremes", "all"],
                        help="DPO's pairs per turn: best vs worst set, or every pair with different rewards")
    parser.add_argument("--grpo-clip", type=float, default=0.2)
    parser.add_argument("--grpo-kl", type=float, default=0.04)
    parser.add_argument("--probe-turns", type=int, default=None)
    parser.add_argument("--model", help="llama_cpp: a GGUF file (default: RAR_GENERATOR_MODEL, else the packaged "
                        "Gemma-3-270M); other RAR_GENERATOR_* settings apply as in the pipeline")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parent", default=SFT_FOLD_PARENT, help="the retriever the rounds start from: "
                        f"{SFT_FOLD_PARENT} (the dialogue-aware retriever learning from the SFT fold only, built "
                        "here once), sft (lrurec_sft), dialogue (dialogue_retriever) or a checkpoint file")
    parser.add_argument("--json", type=Path, help="also write everything as JSON here")
    args = parser.parse_args()

    import torch

    from rar_pipeline.settings import get_settings
    from training.layout import SYSTEMS, checkpoint_path

    torch.set_num_threads(args.threads)
    settings = get_settings()
    args.rl_share = args.rl_share if args.rl_share is not None else settings.alignment_rl_share
    if args.parent == SFT_FOLD_PARENT:
        parent_path = sft_fold_parent(settings)
    else:
        parent_path = checkpoint_path(settings.home, args.parent) if args.parent in SYSTEMS else Path(args.parent)
    if not parent_path.is_file():
        raise SystemExit(f"{parent_path} not found: materialise lrurec_sft or dialogue_retriever first "
                         "(see this script's docstring)")
    args.parent_name = args.parent if args.parent in (*SYSTEMS, SFT_FOLD_PARENT) else "parent"
    args.parent_digest = hashlib.md5(parent_path.read_bytes()).hexdigest()
    load_start = os.getloadavg()
    started = time.monotonic()
    generator = make_generator(args, settings)
    try:
        folds = learning_folds(args, settings)
        records = run_rounds(args, settings, generator, parent_path, folds)
        rounds_s = time.monotonic() - started
        per_turn, shares = evaluate(args, settings, generator, parent_path, records, folds)
    finally:
        generator.close()
    rows, versus = tables(args, per_turn, shares, records)
    verdict = acceptance(args, rows, versus)
    total_s = time.monotonic() - started
    load = (f"load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
            f"rounds {rounds_s / 60:.1f} min, total {total_s / 60:.1f} min on {os.cpu_count()} cores")
    header = {"generator": args.generator + (f" ({args.trait})" if args.generator == "preference" else ""),
              "load": load}
    print_tables(args, rows, versus, verdict, header)
    if args.json:
        args.json.write_text(json.dumps({
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"cores": os.cpu_count(), "load_start": load_start, "load_end": os.getloadavg()},
            "seconds": {"rounds": rounds_s, "total": total_s}, "rows": rows, "versus": versus, "acceptance": verdict,
        }, indent=2))


if __name__ == "__main__":
    main()
