"""Generator benchmark: prompts/s of each local backend and NDCG@10 of the generator's order vs the
retriever's order, on ReDial test turns with 20 candidates.

    python benchmarks/generator.py --turns 100 --candidates 20 --backends embedding,llama_cpp

Turns: recommender turns of ReDial's official test split (../shared/data/redial/test_data.jsonl)
that recommend a film not mentioned before; the context is every earlier message, "@id" replaced
by the film's name. A seeded sample of ``--turns`` of them.

Candidates: no trained retriever is read here (the turns are in ReDial ids); the candidate set of a
turn is its target plus ``--candidates - 1`` films drawn at random (seeded) from the 500 most
mentioned ReDial films (never a film already mentioned), and the "retriever order" is popularity
(ReDial mention counts). Film metadata: ReDial's "Title (Year)" enriched with genres, cast and plot
from the Wikipedia movie data (exact title key + year). ``llama_cpp`` is also scored with contextual
calibration (its label prior subtracted), computed from the same forward passes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpus_build.linking import split_title_year  # noqa: E402
from corpus_build.movie_text import title_key  # noqa: E402
from training.evaluation_protocol import turn_metrics  # noqa: E402
from training.generator.base import RankRequest  # noqa: E402
from training.generator.prompt import LABELS  # noqa: E402

DATA = Path(os.environ.get("RAR_TEST_DATA", REPO.parent / "shared" / "data"))
MENTION = re.compile(r"@(\d+)")


def load_movies(data: Path) -> tuple[dict[str, dict], dict[str, int]]:
    """ReDial movie id -> metadata row (Wikipedia genres/cast/plot when matched), and mention counts."""
    wiki: dict[tuple[str, int], dict] = {}
    for path in sorted((data / "wikipedia-movie-data").glob("movies-*.json")):
        for film in json.loads(path.read_text()):
            wiki.setdefault((title_key(film["title"]), film.get("year")), film)
    movies, counts = {}, {}
    with open(data / "redial" / "movies_with_mentions.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            title, year = split_title_year(row["movieName"])
            film = wiki.get((title_key(title), year), {})
            movies[row["movieId"]] = {"title": title, "year": year, "genres": film.get("genres") or [],
                                      "cast": film.get("cast") or [], "plot": film.get("extract")}
            counts[row["movieId"]] = int(row["nbMentions"])
    return movies, counts


def load_turns(data: Path, movies: dict[str, dict]) -> list[dict]:
    """Every recommender turn that recommends a film not mentioned before, with its context."""
    turns = []
    with open(data / "redial" / "test_data.jsonl") as handle:
        for line in handle:
            dialog = json.loads(line)
            names = dialog.get("movieMentions") or {}
            context, seen = [], []
            for message in dialog["messages"]:
                ids = MENTION.findall(message["text"])
                role = "user" if message["senderWorkerId"] == dialog["initiatorWorkerId"] else "assistant"
                new = [i for i in ids if i not in seen and i in movies]
                if role == "assistant" and new and context:
                    turns.append({"dialog": dialog["conversationId"], "context": list(context),
                                  "history": list(seen), "targets": new})
                text = MENTION.sub(lambda m, names=names: (names.get(m.group(1)) or movies.get(m.group(1), {}).get("title")
                                              or "a movie").strip(), message["text"])
                context.append({"role": role, "text": text})
                seen += [i for i in ids if i not in seen]
    return turns


def candidate_requests(turns, movies, counts, n_candidates: int, seed: int) -> list[tuple[RankRequest, list[str]]]:
    """(request with candidates in popularity order, targets) per turn."""
    rng = random.Random(seed)
    pool = sorted((m for m in counts if movies[m]["year"]), key=lambda m: (-counts[m], m))[:500]
    out = []
    for turn in turns:
        target = turn["targets"][0]
        blocked = set(turn["history"]) | set(turn["targets"])
        negatives = rng.sample([m for m in pool if m not in blocked], n_candidates - 1)
        ids = sorted([target, *negatives], key=lambda m: (-counts.get(m, 0), m))
        request = RankRequest(turn["context"], ids, {m: movies[m] for m in ids})
        out.append((request, [target]))
    return out


def ndcg(rankings, targets) -> float:
    return sum(turn_metrics(r, t, ks=(10,))["ndcg@10"] for r, t in zip(rankings, targets)) / len(targets)


def run_embedding(requests):
    from training.generator.embedding_backend import EmbeddingGenerator

    generator = EmbeddingGenerator()
    generator.rank_batch(requests[:1])  # load the model outside the timing
    generator.stats.seconds = 0.0
    started = time.perf_counter()
    results = generator.rank_batch(requests)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    generator.rank_batch(requests)  # again: every film vector cached, as in later RL rounds
    return {"rankings": [r.ranking for r in results], "seconds": seconds, "failures": generator.stats.failures,
            "seconds_warm": time.perf_counter() - started}


def run_llama_cpp(requests, n_ctx: int, threads: int):
    from training.generator.llama_cpp_backend import LlamaCppGenerator

    generator = LlamaCppGenerator(n_ctx=n_ctx, n_threads=threads)
    generator.label_prior(len(requests[0].candidate_ids))  # loads the model; the prior is reused
    rankings, calibrated, seconds = [], [], 0.0
    for i, request in enumerate(requests):
        started = time.perf_counter()
        [result] = generator.rank_batch([request])
        seconds += time.perf_counter() - started
        rankings.append(result.ranking)
        prior = generator.label_prior(len(request.candidate_ids))
        label = {m: LABELS[j] for j, m in enumerate(request.candidate_ids)}
        scores = dict(zip(result.ranking, result.scores or ()))
        order = {m: j for j, m in enumerate(request.candidate_ids)}
        calibrated.append(tuple(sorted(request.candidate_ids,
                                       key=lambda m: (-(scores.get(m, -1e9) - prior[label[m]]), order[m]))))
        if (i + 1) % 10 == 0:
            print(f"  llama_cpp {i + 1}/{len(requests)} prompts, {seconds / (i + 1):.2f} s/prompt", flush=True)
    stats = generator.stats
    return {"rankings": rankings, "calibrated": calibrated, "seconds": seconds, "failures": stats.failures,
            "prompt_tokens_mean": stats.prompt_tokens / max(1, stats.calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--backends", default="embedding,llama_cpp")
    parser.add_argument("--n-ctx", type=int, default=1024, help="llama_cpp context (prompt budget = n_ctx - 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    movies, counts = load_movies(DATA)
    turns = load_turns(DATA, movies)
    sample = random.Random(args.seed).sample(turns, min(args.turns, len(turns)))
    pairs = candidate_requests(sample, movies, counts, args.candidates, args.seed)
    requests, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    enriched = sum(1 for m in {m for r in requests for m in r.candidate_ids} if movies[m]["plot"])
    print(f"{len(requests)} ReDial test turns (of {len(turns)}), {args.candidates} candidates each "
          f"(target + {args.candidates - 1} popular films; retriever order = popularity); "
          f"{enriched} of {len({m for r in requests for m in r.candidate_ids})} candidate films have a Wikipedia plot")
    figures = {"turns": len(requests), "candidates": args.candidates,
               "ndcg@10 retriever order (popularity)": ndcg([r.candidate_ids for r in requests], targets)}
    for backend in args.backends.split(","):
        print(f"running {backend} ...", flush=True)
        out = run_embedding(requests) if backend == "embedding" else run_llama_cpp(requests, args.n_ctx, args.threads)
        figures[f"{backend} prompts/s"] = len(requests) / out["seconds"]
        if "seconds_warm" in out:
            figures[f"{backend} prompts/s (film vectors cached)"] = len(requests) / out["seconds_warm"]
        figures[f"{backend} ndcg@10"] = ndcg(out["rankings"], targets)
        figures[f"{backend} failures"] = out["failures"]
        if "calibrated" in out:
            figures[f"{backend} (calibrated) ndcg@10"] = ndcg(out["calibrated"], targets)
            figures[f"{backend} mean prompt tokens"] = out["prompt_tokens_mean"]
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
