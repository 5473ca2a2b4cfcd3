"""benchmarks/alignment_proof.py end to end on a tiny home: its figures agree with the retrievers it wrote,
and a second run reuses every finished round without a generator call."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from corpus_build.schema import CONVERSATION_TURNS_SCHEMA
from training.layout import benchmark_dir, checkpoint_path
from training.lrurec import LRURec, LRURecConfig
from training.retriever import Retriever, export_retriever

REPO = Path(__file__).resolve().parents[1]
N_FILMS = 30
DRAMAS = {f"m{i}" for i in range(1, 11)}  # the preference generator's trait: genre=Drama


def _tiny_home(home: Path) -> None:
    rng = np.random.default_rng(0)
    films = [f"m{i}" for i in range(1, N_FILMS + 1)]

    def turn(split: str, i: int) -> dict:
        history, target = rng.choice(films, 4, replace=False).tolist()[:3], str(rng.choice(films[5:20]))
        return {"dataset": "redial", "split": split, "dialog_id": f"{split}-{i}", "turn_index": 1,
                "context": [{"role": "seeker", "text": "something good"}], "history_movie_ids": history,
                "target_movie_ids": [target], "target_mentioned_before": [target in history]}

    rows = [turn("train", i) for i in range(240)] + [turn("test", i) for i in range(40)]
    (home / "tables").mkdir(parents=True)
    pl.DataFrame(rows, schema=CONVERSATION_TURNS_SCHEMA).write_parquet(home / "tables" / "conversation_turns.parquet")
    pl.DataFrame({"movie_id": films, "title": films, "year": [1990] * N_FILMS,
                  "genres": [["Drama"] if m in DRAMAS else ["Comedy"] for m in films]}
                 ).write_parquet(home / "tables" / "movie_corpus.parquet")
    torch.manual_seed(0)
    model = LRURec(LRURecConfig(num_items=N_FILMS, hidden=16, blocks=1, dropout=0.1, attn_dropout=0.1))
    export_retriever(model, films, checkpoint_path(home, "sft"), max_len=20)


def _run(home: Path, out: Path) -> tuple[dict, str]:
    env = {**os.environ, "RAR_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "alignment_proof.py"), "--seeds", "1", "--max-turns", "200",
         "--epochs", "1", "--num-sets", "2", "--k", "5", "--n-boot", "200", "--threads", "1", "--parent", "sft", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow
def test_proof_figures_match_its_retrievers_and_a_rerun_costs_no_generator_call(tmp_path):
    home = tmp_path / "home"
    _tiny_home(home)
    first, printed = _run(home, tmp_path / "first.json")

    rows = {row["retriever"]: row for row in first["rows"]}
    assert list(rows) == ["sft", "grpo-seed1", "dpo-seed1", "nll-seed1"]
    # 40 test turns, minus those whose target was mentioned before (the protocol leaves them out)
    assert {row["turns"] for row in rows.values()} == {sum(1 for row in _test_turns(home) if not row["mentioned"])}
    assert all(row["generator_calls"] > 0 for name, row in rows.items() if name != "sft")

    # the trait share is the share of dramas in each retriever's own top K of the test turns
    test = pl.read_parquet(home / "tables" / "conversation_turns.parquet").filter(pl.col("split") == "test")
    rounds = benchmark_dir(home, "alignment_proof")
    for name, row in rows.items():
        path = checkpoint_path(home, "sft") if name == "sft" else next(rounds.glob(f"preference-sft-{name}-*")) / "retriever.pt"
        top = Retriever.from_checkpoint(path).retrieve_batch(test["history_movie_ids"].to_list(), 5)
        ids = [m for hits in top for m, _ in hits]
        assert row["trait_share"] == pytest.approx(sum(m in DRAMAS for m in ids) / len(ids))

    versus = {(v["objective"], v["against"]): v for v in first["versus"]}
    assert set(versus) == {("grpo", "nll control"), ("grpo", "sft"), ("dpo", "nll control"), ("dpo", "sft")}
    for (objective, against), v in versus.items():
        base = rows["nll-seed1" if against == "nll control" else "sft"]["pipeline_ndcg@10"]
        assert v["difference"] == pytest.approx(rows[f"{objective}-seed1"]["pipeline_ndcg@10"] - base)
        assert v["difference_lo"] <= v["difference"] <= v["difference_hi"]
    for objective in ("grpo", "dpo"):
        beats = versus[(objective, "nll control")]["difference_lo"] > 0
        falls = rows[f"{objective}-seed1"]["trait_share"] < rows["sft"]["trait_share"]
        assert first["acceptance"][objective] == {"beats_control_every_seed": beats, "trait_share_falls": falls}
    assert "Acceptance:" in printed and "| redial/test | grpo-seed1 |" in printed

    second, printed = _run(home, tmp_path / "second.json")
    assert "already finished: reusing its record (no generator calls)" in printed
    assert all(row["generator_calls"] == 0 for row in second["rows"] if row["retriever"] != "sft")
    assert [r["pipeline_ndcg@10"] for r in second["rows"]] == [r["pipeline_ndcg@10"] for r in first["rows"]]


def _test_turns(home: Path) -> list[dict]:
    turns = pl.read_parquet(home / "tables" / "conversation_turns.parquet").filter(pl.col("split") == "test")
    return [{"mentioned": mentioned[0]} for mentioned in turns["target_mentioned_before"].to_list()]


def test_the_default_parent_needs_movie_vectors_and_says_so(tmp_path):
    home = tmp_path / "home"
    _tiny_home(home)  # no movie_vectors: the SFT-fold dialogue parent cannot be trained
    env = {**os.environ, "RAR_HOME": str(home), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "alignment_proof.py"), "--seeds", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == ("movie_vectors not found: the dialogue-aware retriever matches "
                                                    "dialogues against the films' text vectors; materialise "
                                                    "movie_vectors first (or pass --parent sft)")
