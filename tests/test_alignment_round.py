"""An alignment round end to end on a tiny LRURec: the learning signal, resume after an outage, no repeat calls."""

import pytest
import torch

from training.alignment_round import (
    AlignmentTurn, GeneratorUnavailable, RoundConfig, run_round, turn_logits,
)
from training.generator.base import Generator, RankResult, fallback
from training.lrurec import LRURec, LRURecConfig

N_ITEMS = 30
FAVOURITE = 7  # the film the deterministic ranker always puts first


class PreferOneFilm(Generator):
    """A deterministic black-box ranker: the favourite film first, the others in the retriever's order."""

    name = "prefer-one"

    def __init__(self, favourite: str, fail_after: int | None = None):
        super().__init__()
        self.favourite, self.fail_after, self.seen = favourite, fail_after, []

    def _rank_batch(self, requests):
        results = []
        for request in requests:
            self.seen.append(request.candidate_ids)
            if self.fail_after is not None and len(self.seen) > self.fail_after:
                results.append(fallback(request, "service unavailable"))
                continue
            ids = list(request.candidate_ids)
            ranking = sorted(ids, key=lambda m: m != self.favourite)
            results.append(RankResult(tuple(ranking), "model"))
        self.stats.add(calls=len(requests))
        return results


def _setup(seed=0):
    torch.manual_seed(seed)
    model = LRURec(LRURecConfig(num_items=N_ITEMS, hidden=16, blocks=1, dropout=0.0, attn_dropout=0.0))
    item_ids = ["<pad>"] + [f"m{i}" for i in range(1, N_ITEMS + 1)]
    gen = torch.Generator().manual_seed(seed)
    turns = []
    for t in range(48):
        history = [int(i) for i in torch.randint(1, N_ITEMS + 1, (3,), generator=gen) if int(i) != FAVOURITE]
        turns.append(AlignmentTurn(f"d/{t}/1", ({"role": "user", "text": "hi"},), history, [FAVOURITE]))
    return model, item_ids, turns


def _favourite_log_prob(model, turns):
    with torch.no_grad():
        return torch.log_softmax(turn_logits(model, turns, 10), -1)[:, FAVOURITE].mean().item()


@pytest.mark.parametrize("objective", ["dpo", "grpo"])
def test_round_moves_the_generators_favourite_up(tmp_path, objective):
    torch.set_num_threads(1)
    model, item_ids, turns = _setup()
    before = _favourite_log_prob(model, turns)
    config = RoundConfig(objective=objective, num_sets=4, set_size=5, nll_weight=0.0, lr=1e-2, epochs=4,
                         batch_size=16, rollout_batch=16, dpo_beta=1.0)
    generator = PreferOneFilm(item_ids[FAVOURITE])
    result = run_round(model, item_ids, turns[:40], turns[40:], generator, lambda ids: {}, config, tmp_path)
    after = _favourite_log_prob(model, turns)
    assert after > before + 0.2
    assert result.reward_mean_after > result.reward_mean_before
    assert len(result.loss_curve) == 4


def _calls_at_rollout_batches(model, item_ids, turns, config, tmp_path) -> dict[int | str, int]:
    """A healthy dry run: the generator's request count after the gate and after each rollout batch
    (sets without a target are never sent, so the counts depend on the draws)."""
    healthy, marks = PreferOneFilm(item_ids[FAVOURITE]), {}

    def log(message):
        if message.startswith("rollout batch "):
            marks[int(message.split()[2].split("/")[0])] = len(healthy.seen)
        if message.startswith("gate NDCG@10 before"):
            marks["gate"] = len(healthy.seen)

    run_round(model, item_ids, turns[:40], turns[40:], healthy, lambda ids: {}, config, tmp_path, log)
    return marks | {"total": len(healthy.seen)}


def test_outage_keeps_finished_batches_and_rerun_makes_no_new_rollout_calls(tmp_path):
    torch.set_num_threads(1)
    model, item_ids, turns = _setup(1)
    config = RoundConfig(num_sets=2, set_size=8, epochs=1, rollout_batch=8)
    marks = _calls_at_rollout_batches(_setup(1)[0], item_ids, turns, config, tmp_path / "dry-run")
    assert marks[3] > marks[2]  # batch 3 sends something, so the outage below interrupts it
    # the service goes down once the first two rollout batches are answered
    flaky = PreferOneFilm(item_ids[FAVOURITE], fail_after=marks[2])
    with pytest.raises(GeneratorUnavailable, match="service unavailable"):
        run_round(model, item_ids, turns[:40], turns[40:], flaky, lambda ids: {}, config, tmp_path)
    parts = sorted((tmp_path / "rollouts").glob("part-*.parquet"))
    assert len(parts) == 2

    healthy = PreferOneFilm(item_ids[FAVOURITE])
    model2, _, _ = _setup(1)
    run_round(model2, item_ids, turns[:40], turns[40:], healthy, lambda ids: {}, config, tmp_path)
    # the rerun asked again only for the gate and the probes; rollouts resumed at batch 3 of 5
    assert len(healthy.seen) == marks["total"] - (marks[2] - marks["gate"])
    assert len(sorted((tmp_path / "rollouts").glob("part-*.parquet"))) == 5


def test_round_from_tables_records_gate_and_a_finished_round_costs_no_calls(tmp_path):
    import polars as pl

    from corpus_build.schema import CONVERSATION_TURNS_SCHEMA
    from training.alignment_round import align_from_tables
    from training.retriever import Retriever, export_retriever

    torch.set_num_threads(1)
    model, item_ids, turns = _setup(2)
    parent = export_retriever(model, item_ids[1:], tmp_path / "parent.pt", max_len=20)
    rows = [{
        "dataset": "redial", "split": "train", "dialog_id": f"d{i}", "turn_index": 1,
        "context": [{"role": "seeker", "text": "something fun"}],
        "history_movie_ids": [item_ids[h] for h in t.history], "target_movie_ids": [item_ids[FAVOURITE]],
        "target_mentioned_before": [False],
    } for i, t in enumerate(turns)]
    turns_path = tmp_path / "turns.parquet"
    pl.DataFrame(rows, schema=CONVERSATION_TURNS_SCHEMA).write_parquet(turns_path)
    corpus_path = tmp_path / "corpus.parquet"
    pl.DataFrame({"movie_id": item_ids[1:], "title": item_ids[1:]}).write_parquet(corpus_path)
    config = RoundConfig(num_sets=2, set_size=4, epochs=1, rollout_batch=16)
    args = (tmp_path / "round-1", parent, "sft", turns_path, corpus_path)
    generator = PreferOneFilm(item_ids[FAVOURITE])
    record = align_from_tables(*args, generator, config, ["redial"], 0.25, 100, log=lambda m: None)
    assert record["parent_round"] == "sft" and record["train_turns"] + record["gate_turns"] == 48
    assert record["gate_turns"] > 0 and isinstance(record["gate_passed"], bool)
    assert record["gate_passed"] == (record["gate_ndcg_after"] >= record["gate_ndcg_before"])
    aligned = Retriever.from_checkpoint(tmp_path / "round-1" / "retriever.pt")
    assert aligned.movie_ids == item_ids[1:]
    again = PreferOneFilm(item_ids[FAVOURITE])
    assert align_from_tables(*args, again, config, ["redial"], 0.25, 100, log=lambda m: None) == record
    assert again.seen == []


def test_nll_control_trains_only_the_supervised_term(tmp_path):
    """The 'nll' objective (the control run): no RL term in any step, the targets still move up."""
    torch.set_num_threads(1)
    with pytest.raises(ValueError, match="nll_weight must be > 0"):
        RoundConfig(objective="nll", nll_weight=0.0)
    model, item_ids, turns = _setup()
    config = RoundConfig(objective="nll", num_sets=4, set_size=5, nll_weight=1.0, lr=1e-2, epochs=2,
                         batch_size=16, rollout_batch=16)
    before = _favourite_log_prob(model, turns)  # the favourite is also every turn's target here
    result = run_round(model, item_ids, turns[:40], turns[40:], PreferOneFilm(item_ids[FAVOURITE]), lambda ids: {},
                       config, tmp_path)
    assert [row["rl"] for row in result.loss_curve] == [0.0, 0.0]
    assert result.loss_curve[-1]["nll"] < result.loss_curve[0]["nll"]
    assert _favourite_log_prob(model, turns) > before


def test_a_rerun_of_a_round_gives_the_same_retriever_with_dropout(tmp_path):
    """Dropout masks are seeded from the round's seed, on a forked RNG: same retriever, caller's RNG untouched."""
    import copy

    torch.set_num_threads(1)
    _, item_ids, turns = _setup()
    torch.manual_seed(3)
    model = LRURec(LRURecConfig(num_items=N_ITEMS, hidden=16, blocks=1, dropout=0.3, attn_dropout=0.3))
    config = RoundConfig(num_sets=4, set_size=5, lr=1e-2, epochs=2, batch_size=16, rollout_batch=16)
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    state = torch.random.get_rng_state()
    run_round(first, item_ids, turns[:40], turns[40:], PreferOneFilm(item_ids[FAVOURITE]), lambda ids: {}, config, tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), state)
    run_round(second, item_ids, turns[:40], turns[40:], PreferOneFilm(item_ids[FAVOURITE]), lambda ids: {}, config, tmp_path / "b")
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), model.state_dict().values()))


def test_sets_without_a_target_are_never_sent_to_the_generator(tmp_path):
    import polars as pl

    torch.set_num_threads(1)
    model, item_ids, turns = _setup(3)
    config = RoundConfig(num_sets=4, set_size=5, epochs=1, rollout_batch=16)
    generator = PreferOneFilm(item_ids[FAVOURITE])
    run_round(model, item_ids, turns[:40], turns[40:], generator, lambda ids: {}, config, tmp_path)
    assert generator.seen and all(item_ids[FAVOURITE] in ids for ids in generator.seen)
    rollouts = pl.read_parquet(tmp_path / "rollouts" / "*.parquet")
    unsent = rollouts.filter(~pl.col("generator_asked"))
    assert unsent.height > 0 and unsent["reward"].max() == 0.0
    assert (unsent["ranking"] == unsent["item_ids"]).all()  # the retriever's order, kept
    assert rollouts.filter(pl.col("generator_asked"))["reward"].min() > 0.0
    assert generator.stats.skipped_no_target >= unsent.height
    assert generator.stats.requests == len(generator.seen)


def test_rank_scored_sends_only_requests_holding_a_target():
    from training.generator.base import RankRequest

    generator = PreferOneFilm("m2")
    requests = [RankRequest.from_text("hi", ["m1", "m2", "m3"]), RankRequest.from_text("hi", ["m4", "m5"])]
    results = generator.rank_scored(requests, [{"m3"}, {"m9"}])
    assert [r.source for r in results] == ["model", "skipped"]
    assert results[0].ranking == ("m2", "m1", "m3") and results[1].ranking == ("m4", "m5")
    assert generator.seen == [("m1", "m2", "m3")] and generator.stats.skipped_no_target == 1
    with pytest.raises(ValueError, match="target sets"):
        generator.rank_scored(requests, [{"m3"}])
