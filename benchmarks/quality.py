"""Recommendation quality on the mirror data: every retriever the pipeline builds, and two training-free /
lightly trained baselines, each alone and re-ranked by the `embedding` generator.

    export RAR_HOME=/work/cache/quality/home RAR_PROFILE=full RAR_SOURCE_MIRROR=/work/shared/data \\
           DAGSTER_HOME=/work/cache/quality/dghome
    python benchmarks/quality.py [--json quality.json] [--pretraining-epochs 8] [--max-minutes M] [--threads 2]

From a clean RAR_HOME it first materialises, through Dagster, everything the systems need (the corpus,
movie_vectors, user_sequences, conversation_turns, lrurec_pretrained, lrurec_sft, dialogue_retriever);
what is already materialised is reused (delete RAR_HOME to measure from scratch). Pretraining runs a fixed
number of epochs (``--pretraining-epochs``, RAR_RETRIEVER_EPOCHS; the full profile's own cap, 200 with early
stopping, would take hours here), so two runs train the same steps; the other stages stop early on their
validation slices. ``--max-minutes`` caps each training stage by wall time (RAR_RETRIEVER_MAX_MINUTES) for a
quick look: the steps it allows vary with the machine's load, and so do the figures.

Systems (every ReDial test turn and every INSPIRED dev turn, zero-shot CRS protocol: targets mentioned
earlier and targets outside the corpus excluded; a turn left without a target drops out):

- ``popularity``: the most mentioned films of the conversations the retrievers learn from (the
  learning pool minus the promotion gate's slice), mentioned films removed;
- ``dense+pop`` (training-free): the last six utterances embedded with the corpus encoder, cosine
  against every film's movie_vectors vector, plus 0.1 x log(1 + the film's mentions in the learning pool);
- ``query-adapter``: a linear 384x384 adapter on that embedding (identity at the start), scored against the
  fixed film vectors plus a per-film bias initialised at 0.1 x log popularity; full softmax over every
  film, 6 epochs (AdamW, lr 1e-2: at 1e-3 six epochs do not recover from the first steps) on the
  dialogue retriever's training turns, the best epoch on its validation slice;
- ``lrurec``: the paper's history-only LRURec (``lrurec_sft``);
- ``dialogue``: the dialogue-aware retriever (``dialogue_retriever``), the pipeline's default;
- ``dialogue-no-co-mentions``: the same checkpoint without its co-mention prior (weight 0): what the prior adds;
- each ``+embedding``: the generator re-orders the system's top K (RAR_ALIGNMENT_SET_SIZE, 20), fused with
  the system's order at RAR_PIPELINE_GENERATOR_WEIGHT (1: the generator's order alone); the rest keep the
  system's order, so Recall@K and beyond are the system's own.

Metrics: NDCG@10, Recall@10/20/50, mean with a bootstrap 95% CI, and the paired bootstrap 95% CI of the
difference to ``lrurec`` (the same turns resampled jointly).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EVAL_SETS = ("redial/test", "inspired/validation")
METRICS = ("ndcg@10", "recall@10", "recall@20", "recall@50")
REFERENCE = "lrurec"
NO_PRIOR = "dialogue-no-co-mentions"  # the dialogue retriever's checkpoint with its co-mention prior off
GENERATOR = "embedding"  # the backend that re-ranks every system's top K
ASSETS = ["movie_corpus", "movie_vectors", "user_sequences", "conversation_turns", "lrurec_pretrained", "lrurec_sft",
          "dialogue_retriever"]
DENSE_UTTERANCES, DENSE_POPULARITY_WEIGHT, ADAPTER_EPOCHS, ADAPTER_LR = 6, 0.1, 6, 1e-2
PRETRAINING_EPOCHS = 8  # 75 iterations each over the mirror's MovieLens histories: 10.4 min on 2 idle cores


def materialise(log) -> dict[str, float]:
    """Materialise what the systems need, skipping assets whose output exists; seconds per asset."""
    import dagster as dg

    from rar_pipeline.definitions import defs
    from rar_pipeline.settings import get_settings
    from training.layout import checkpoint_path

    s = get_settings()
    done = {
        "movie_corpus": s.table_path("movie_corpus").is_file(),
        "movie_vectors": _vectors_complete(s),
        "user_sequences": s.table_path("user_sequences").is_file(),
        "conversation_turns": s.table_path("conversation_turns").is_file(),
        "lrurec_pretrained": checkpoint_path(s.home, "pretrained").is_file(),
        "lrurec_sft": checkpoint_path(s.home, "sft").is_file(),
        "dialogue_retriever": checkpoint_path(s.home, "dialogue").is_file(),
    }
    seconds = {}
    instance = dg.DagsterInstance.get()
    for asset in ASSETS:
        if done[asset]:
            log(f"{asset}: already materialised, reused")
            continue
        selection = f"{asset}" if asset != "movie_corpus" else "group:corpus and not key:movie_vectors"
        started = time.monotonic()
        log(f"{asset}: materialising (load {os.getloadavg()[0]:.1f})")
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=_keys(defs, selection), raise_on_error=False)
        if not result.success:
            raise SystemExit(f"{asset} failed: see the Dagster run {result.run_id} in {instance.root_directory}")
        seconds[asset] = time.monotonic() - started
        log(f"{asset}: {seconds[asset] / 60:.1f} min")
    return seconds


def training_budget(pretraining_epochs: int, max_minutes: float | None) -> dict[str, str]:
    """The settings (RAR_* variables) that bound the training stages."""
    budget = {"RAR_RETRIEVER_EPOCHS": str(pretraining_epochs)}
    if max_minutes:
        budget["RAR_RETRIEVER_MAX_MINUTES"] = str(max_minutes)
    return budget


def training_steps() -> dict[str, dict]:
    """The epochs (and iterations) each training stage ran, from its latest materialisation's metadata."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    steps = {}
    for asset in ("lrurec_pretrained", "lrurec_sft", "dialogue_retriever"):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        steps[asset] = {key: metadata[key].value for key in ("epochs_run", "iterations", "best_epoch") if key in metadata}
    return steps


def _keys(defs, selection: str):
    import dagster as dg

    return sorted(dg.AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph()))


def _vectors_complete(s) -> bool:
    from corpus_build.vector_store import VectorStore

    store = VectorStore(s.vector_db_uri)
    if not store.exists() or not s.table_path("movie_corpus").is_file():
        return False
    return store.count() == pl.scan_parquet(s.table_path("movie_corpus")).select(pl.len()).collect().item()


# ----------------------------------------------------------------------------------- the two baselines


class ScoredThroughQuery:
    """The retriever interface the pipeline scores with (``score_items``), for a baseline's query/logits."""

    reads_dialogue = True

    def score_items(self, tokens, text):
        return self.logits(self.query(tokens, text))


class DenseBaseline(ScoredThroughQuery):
    """Training-free: cosine(conversation, film text) + w * log(1 + mentions in the learning pool)."""

    def __init__(self, text, log_popularity, weight: float = DENSE_POPULARITY_WEIGHT):
        import torch

        self.config = SimpleNamespace(max_utterances=DENSE_UTTERANCES, roles=False)
        self.text, self.bias = text, weight * torch.from_numpy(log_popularity)

    def query(self, tokens, text):
        return text.float()

    def logits(self, query):
        return query @ self.text.t() + self.bias


def query_adapter_model(text, log_popularity):
    """A linear adapter on the conversation's vector against the fixed film vectors, plus a film bias."""
    import torch
    from torch import nn

    class QueryAdapter(ScoredThroughQuery, nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(max_utterances=DENSE_UTTERANCES, roles=False)
            self.register_buffer("text", text, persistent=False)
            self.adapter = nn.Linear(text.shape[1], text.shape[1])
            self.bias = nn.Parameter(DENSE_POPULARITY_WEIGHT * torch.from_numpy(log_popularity))
            with torch.no_grad():
                self.adapter.weight.copy_(torch.eye(text.shape[1]))
                self.adapter.bias.zero_()

        def query(self, tokens, text):
            return self.adapter(text.float())

        def logits(self, query):
            return query @ self.text.t() + self.bias

    return QueryAdapter()


def baselines(s, vocab, text_encoder, threads: int, log) -> dict:
    """The dense+pop and query-adapter systems as Retrievers (the adapter is trained here)."""

    from corpus_build.vector_store import VectorStore
    from training.dialogue_training import DialogueTrainConfig, encode_turns, fit, log_popularity
    from training.retriever import Retriever, item_text_matrix

    turns = pl.read_parquet(s.table_path("conversation_turns"))
    pools = s.learning_folds().split(turns, s.alignment_datasets)
    learned = pl.concat([pools["sft_train"], pools["rl"], pools["sft_validation"]])
    popularity = log_popularity(learned, vocab)
    text = item_text_matrix(VectorStore(s.vector_db_uri).load_vectors(vocab.movie_ids), len(vocab))
    dense = DenseBaseline(text, popularity)
    adapter = query_adapter_model(text, popularity)
    config = SimpleNamespace(max_utterances=DENSE_UTTERANCES, roles=False, text_dim=text.shape[1])
    train = encode_turns(pl.concat([pools["sft_train"], pools["rl"]]), vocab, text_encoder, config, 50, True)
    val = encode_turns(pools["sft_validation"], vocab, text_encoder, config, 50, False)
    started = time.monotonic()
    adapter_config = DialogueTrainConfig(lr=ADAPTER_LR, epochs=ADAPTER_EPOCHS, patience=ADAPTER_EPOCHS + 1, threads=threads,
                                         seed=s.seed, average_weights=False)  # the baseline as specified: its best epoch
    fit(adapter, train, val, adapter_config, log=lambda m: log(f"  query-adapter {m}"))
    log(f"query-adapter: trained in {(time.monotonic() - started) / 60:.1f} min")
    return {
        "dense+pop": Retriever(dense, vocab.movie_ids, 50, text_encoder=text_encoder),
        "query-adapter": Retriever(adapter.eval(), vocab.movie_ids, 50, text_encoder=text_encoder),
    }


# ----------------------------------------------------------------------------------- evaluation


def paired_difference_ci(base: np.ndarray, new: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap CI of mean(new - base), the same turns resampled jointly."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(base), size=(n_boot, len(base)))
    diffs = (new[idx] - base[idx]).mean(axis=1)
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def summary_rows(per_turn: pl.DataFrame, n_boot: int, seed: int) -> list[dict]:
    from training.evaluation_protocol import bootstrap_ci

    rows = []
    keys = ["dataset", "dialog_id", "turn_index"]
    for (dataset, system), group in per_turn.group_by(["dataset", "system"], maintain_order=True):
        row = {"dataset": dataset, "system": system, "turns": group.height}
        reference = per_turn.filter((pl.col("dataset") == dataset) & (pl.col("system") == _reference_of(system)))
        joined = group.join(reference, on=keys, suffix="_ref") if reference.height else None
        for metric in METRICS:
            values = group[metric].to_numpy()
            row[metric] = float(values.mean())
            row[f"{metric}_ci"] = bootstrap_ci(values, n_boot=n_boot, seed=seed)
            if joined is not None and _reference_of(system) != system:
                row[f"{metric}_vs_{REFERENCE}"] = float((joined[metric] - joined[f"{metric}_ref"]).mean())
                row[f"{metric}_vs_{REFERENCE}_ci"] = paired_difference_ci(
                    joined[f"{metric}_ref"].to_numpy(), joined[metric].to_numpy(), n_boot, seed)
        rows.append(row)
    return rows


def _split(system: str) -> tuple[str, str | None]:
    """(retrieval system, generator or None): ``dense+pop+embedding`` is ``dense+pop`` re-ranked."""
    base, _, generator = system.rpartition("+")
    return (base, generator) if generator == GENERATOR else (system, None)


def _reference_of(system: str) -> str:
    """Systems with the generator are compared with lrurec + the generator, the others with lrurec alone."""
    generator = _split(system)[1]
    return f"{REFERENCE}+{generator}" if generator else REFERENCE


def markdown(rows: list[dict]) -> str:
    header = ("| dataset | system | turns | NDCG@10 [95% CI] | vs lrurec [paired CI] | Recall@10 | Recall@20 "
              "[95% CI] | vs lrurec [paired CI] | Recall@50 |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]

    def ci(row, metric):
        low, high = row[f"{metric}_ci"]
        return f"{row[metric]:.4f} [{low:.3f}, {high:.3f}]"

    def versus(row, metric):
        key = f"{metric}_vs_{REFERENCE}"
        if key not in row:
            return "-"
        low, high = row[f"{key}_ci"]
        return f"{row[key]:+.4f} [{low:+.3f}, {high:+.3f}]"

    for row in rows:
        lines.append(f"| {row['dataset']} | {row['system']} | {row['turns']} | {ci(row, 'ndcg@10')} | "
                     f"{versus(row, 'ndcg@10')} | {row['recall@10']:.4f} | {ci(row, 'recall@20')} | "
                     f"{versus(row, 'recall@20')} | {row['recall@50']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument("--pretraining-epochs", type=int, default=PRETRAINING_EPOCHS,
                        help="lrurec_pretrained's epochs (a fixed budget: reproducible figures).")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="Wall-time budget per training stage (quick looks; figures vary with load).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine is shared).")
    parser.add_argument("--max-turns", type=int, default=None, help="Evaluate a seeded sample of turns per set.")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    os.environ.update(training_budget(args.pretraining_epochs, args.max_minutes))
    os.environ.setdefault("RAR_RETRIEVER_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from rar_pipeline.resources import GeneratorResource
    from rar_pipeline.settings import get_settings
    from training.evaluation_report import evaluate_systems, evaluation_sets, popularity_counts
    from training.layout import checkpoint_path, text_vectors_dir
    from training.retriever import Retriever
    from training.sequences import ItemVocab
    from training.text_cache import TextVectorCache
    from training.turn_pools import CorpusLookup

    started = time.monotonic()
    loads = [os.getloadavg()[0]]

    def log(message: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:5.1f} min] {message}", flush=True)

    s = get_settings()
    if s.profile != "full":
        log(f"warning: RAR_PROFILE={s.profile}; the figures below are not the mirror's")
    build_seconds = materialise(log)
    loads.append(os.getloadavg()[0])
    turns = pl.read_parquet(s.table_path("conversation_turns"))
    lookup = CorpusLookup.from_parquet(s.table_path("movie_corpus"))
    vocab = ItemVocab(lookup.corpus["movie_id"].to_list())
    text_encoder = TextVectorCache(s.embedder(), text_vectors_dir(s.home))
    t_baselines = time.monotonic()
    retrievers = baselines(s, vocab, text_encoder, args.threads, log)
    baseline_seconds = time.monotonic() - t_baselines
    for name, system in ((REFERENCE, "sft"), ("dialogue", "dialogue"), (NO_PRIOR, "dialogue")):
        retrievers[name] = Retriever.from_checkpoint(checkpoint_path(s.home, system), text_encoder=text_encoder)
    retrievers[NO_PRIOR].model.config.co_mention_weight = 0.0
    sets = [e for e in evaluation_sets(turns, None, args.max_turns or 10**9, s.seed) if e.name in EVAL_SETS]
    generator = GeneratorResource(backend=GENERATOR).make_generator()
    t_eval = time.monotonic()
    try:
        per_turn = evaluate_systems(sets, retrievers, generator, lookup,
                                    popularity_counts(turns, s.alignment_datasets, s.learning_folds()),
                                    set(vocab.movie_ids), candidates=s.alignment_set_size, log=log,
                                    generator_weight=s.pipeline_generator_weight, rerank_popularity=True)
    finally:
        generator.close()
    eval_seconds = time.monotonic() - t_eval
    loads.append(os.getloadavg()[0])
    order = ["popularity", "dense+pop", "query-adapter", REFERENCE, NO_PRIOR, "dialogue"]
    rank = {name: i for i, name in enumerate(order)}
    rows = sorted(summary_rows(per_turn, args.n_boot, s.seed),
                  key=lambda r: (EVAL_SETS.index(r["dataset"]), _split(r["system"])[1] is not None,
                                 rank.get(_split(r["system"])[0], 99)))
    total = time.monotonic() - started
    steps = training_steps()
    print()
    print(markdown(rows))
    print()
    print("training: " + "; ".join(f"{asset} " + ", ".join(f"{k} {v}" for k, v in ran.items())
                                   for asset, ran in steps.items()))
    print(f"K (generator candidates) = {s.alignment_set_size}; generator weight {s.pipeline_generator_weight:g}; learning datasets {s.alignment_datasets}; "
          f"build {sum(build_seconds.values()) / 60:.1f} min ({', '.join(f'{k} {v / 60:.1f}' for k, v in build_seconds.items()) or 'all reused'}), "
          f"baselines {baseline_seconds / 60:.1f} min, evaluation {eval_seconds / 60:.1f} min, total {total / 60:.1f} min; "
          f"load average {', '.join(f'{x:.1f}' for x in loads)} (start, after build, end) on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({
            "rows": rows, "k": s.alignment_set_size, "generator_weight": s.pipeline_generator_weight, "datasets": list(s.alignment_datasets),
            "seconds": {"build": build_seconds, "baselines": baseline_seconds, "evaluation": eval_seconds, "total": total},
            "load_average": loads, "cores": os.cpu_count(), "max_minutes": args.max_minutes,
            "pretraining_epochs": args.pretraining_epochs, "training": steps,
        }, indent=2))
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
