"""An alignment round end to end on a tiny LRURec: the learning signal, resume after an outage, no repeat calls."""

import math

import pytest
import torch

from training.alignment_round import RoundConfig, run_round
from training.alignment_turns import AlignmentTurn, turn_logits
from training.generator.base import Generator, RankResult, fallback
from training.lrurec import LRURec, LRURecConfig
from training.rollouts import GeneratorUnavailable

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


def round_tables(tmp_path):
    """The files a round reads, for the tiny fixture: (item ids, parent checkpoint, turns, corpus)."""
    import polars as pl

    from corpus_build.schema import CONVERSATION_TURNS_SCHEMA
    from training.retriever import export_retriever

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
    return item_ids, parent, turns_path, corpus_path


def test_round_from_tables_records_gate_and_a_finished_round_costs_no_calls(tmp_path):
    from training.alignment_round import align_from_tables
    from training.promotion import GateRule
    from training.retriever import Retriever
    from training.turn_pools import Folds

    torch.set_num_threads(1)
    item_ids, parent, turns_path, corpus_path = round_tables(tmp_path)
    config = RoundConfig(num_sets=2, set_size=4, epochs=1, rollout_batch=16)
    args = (tmp_path / "round-1", parent, "sft", turns_path, corpus_path)
    generator = PreferOneFilm(item_ids[FAVOURITE])
    pools = (["redial"], Folds(gate_fraction=0.25, rl_share=1.0), 100, GateRule(min_turns=1))  # no SFT fold here
    record = align_from_tables(*args, generator, config, *pools, log=lambda m: None)
    assert record["parent_round"] == "sft" and record["train_turns"] + record["gate_turns"] == 48
    assert record["gate_turns"] > 0 and isinstance(record["gate_passed"], bool)
    assert record["gate_gain"] == pytest.approx(record["gate_ndcg_after"] - record["gate_ndcg_before"])
    assert record["gate_passed"] == (record["gate_gain_lower"] >= 0.0) and record["gate_reason"]
    aligned = Retriever.from_checkpoint(tmp_path / "round-1" / "retriever.pt")
    assert aligned.movie_ids == item_ids[1:]
    again = PreferOneFilm(item_ids[FAVOURITE])
    assert align_from_tables(*args, again, config, *pools, log=lambda m: None) == record
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


def _run(model, item_ids, turns, generator, config, round_dir, log=lambda m: None):
    """A round on the first 40 turns, gated on the other 8, with no corpus metadata."""
    return run_round(model, item_ids, turns[:40], turns[40:], generator, lambda ids: {}, config, round_dir, log)


def _dropout_model():
    torch.manual_seed(3)
    return LRURec(LRURecConfig(num_items=N_ITEMS, hidden=16, blocks=1, dropout=0.3, attn_dropout=0.3))


@pytest.mark.parametrize("objective", ["grpo", "dpo"])
def test_policy_equals_sampler_and_reference_at_step_zero_despite_dropout(tmp_path, objective):
    """Before any update the policy is the sampler and the reference: every GRPO ratio is 1, every DPO
    margin 0, so GRPO's surrogate averages to 0 and DPO's loss is log 2 (with lr 0 for the whole epoch)."""
    torch.set_num_threads(1)
    _, item_ids, turns = _setup()
    config = RoundConfig(objective=objective, num_sets=4, set_size=5, lr=0.0, weight_decay=0.0, epochs=1,
                         batch_size=16, rollout_batch=16, nll_weight=0.0, dpo_beta=1.0, grpo_kl=0.0)
    result = _run(_dropout_model(), item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]), config, tmp_path)
    [epoch] = result.loss_curve
    assert epoch["rl"] == pytest.approx(0.0 if objective == "grpo" else math.log(2), abs=1e-5)
    assert epoch["max_ratio_deviation"] < 1e-4 and epoch["clip_fraction"] == 0.0 and epoch["kl"] < 1e-8
    if objective == "dpo":
        assert epoch["max_abs_dpo_margin"] < 1e-4

    # With a real learning rate, the first step of the round still starts from ratio 1 / margin 0.
    moving = RoundConfig(**{**config.to_dict(), "lr": 1e-2, "epochs": 2})
    result = _run(_dropout_model(), item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]), moving, tmp_path / "moving")
    first = result.loss_curve[0]
    assert first["first_step_max_ratio_deviation"] < 1e-4
    assert first.get("first_step_max_abs_dpo_margin", 0.0) < 1e-4
    assert result.loss_curve[-1]["kl"] > 0  # and then it moves away from the reference


def test_rollouts_are_on_policy_and_report_drift_per_epoch(tmp_path):
    """Fresh rollouts each epoch, drawn by the retriever as updated so far: the favourite (every turn's
    target, always ranked first) is drawn more and more often, so the rollout reward rises epoch by epoch."""
    import polars as pl

    torch.set_num_threads(1)
    model, item_ids, turns = _setup()
    config = RoundConfig(objective="grpo", num_sets=4, set_size=5, nll_weight=0.0, lr=1e-2, epochs=6,
                         batch_size=16, rollout_batch=16)
    result = _run(model, item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]), config, tmp_path)
    assert [row["rollout"] for row in result.loss_curve] == [1, 2, 3, 4, 5, 6] and result.rollout_phases == 6
    assert result.rollouts == 6 * 40 * 4
    rewards = [row["rollout_reward"] for row in result.loss_curve]
    assert rewards[-1] > rewards[0] + 0.3 and rewards[-1] == max(rewards)  # measured: 0.24 -> 0.74
    kl = [row["kl"] for row in result.loss_curve]
    assert kl == sorted(kl) and kl[0] > 0  # drifting away from the reference, epoch by epoch
    assert all(0 <= row["clip_fraction"] < 0.5 for row in result.loss_curve)
    stored = pl.read_parquet(tmp_path / "rollouts" / "*.parquet")
    assert sorted(stored["rollout"].unique()) == [1, 2, 3, 4, 5, 6]
    # one rollout for the whole round: the old behaviour, fewer generator calls
    single = RoundConfig(**{**config.to_dict(), "epochs": 3, "rollout_every": 3})
    result = _run(_setup()[0], item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]), single, tmp_path / "single")
    assert [row["rollout"] for row in result.loss_curve] == [1, 1, 1] and result.rollouts == 40 * 4


def test_an_interrupted_on_policy_round_resumes_to_the_same_retriever(tmp_path):
    """An outage in the second epoch's rollout: the rerun loads the first epoch's retriever and optimiser,
    keeps the finished batches, and ends with the same weights as a run that never stopped."""
    torch.set_num_threads(1)
    _, item_ids, turns = _setup(1)
    config = RoundConfig(num_sets=2, set_size=8, epochs=2, lr=1e-2, rollout_batch=8)
    clean = _setup(1)[0]
    healthy = PreferOneFilm(item_ids[FAVOURITE])
    _run(clean, item_ids, turns, healthy, config, tmp_path / "clean")
    marks = {}

    def log(message):
        if message.startswith("rollout batch 2/5 done (rollout 2/2)"):
            marks["second"] = len(counting.seen)

    counting = PreferOneFilm(item_ids[FAVOURITE])
    _run(_setup(1)[0], item_ids, turns, counting, config, tmp_path / "count", log)
    flaky = PreferOneFilm(item_ids[FAVOURITE], fail_after=marks["second"])
    with pytest.raises(GeneratorUnavailable):
        _run(_setup(1)[0], item_ids, turns, flaky, config, tmp_path / "r")
    assert (tmp_path / "r" / "epochs" / "last.pt").is_file()
    assert len(list((tmp_path / "r" / "rollouts").glob("part-p001-*.parquet"))) == 2
    resumed = _setup(1)[0]
    again = PreferOneFilm(item_ids[FAVOURITE])
    logs = []
    _run(resumed, item_ids, turns, again, config, tmp_path / "r", logs.append)
    assert "resuming after epoch 1 of 2" in logs
    assert len(again.seen) < len(counting.seen)  # finished batches and the first epoch were not asked again
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_rollouts_every_step_are_drawn_by_the_policy_each_step_updates(tmp_path):
    """rollout_steps=1: each step's turns are drawn just before it by the policy it updates, so no step's
    ratio leaves 1 (nothing clipped) even at a learning rate that moves the policy far within an epoch; every
    turn is still drawn once per epoch (the generator cost of rollouts every epoch), and it still learns."""
    import polars as pl

    torch.set_num_threads(1)
    model, item_ids, turns = _setup()
    config = RoundConfig(objective="grpo", num_sets=4, set_size=5, nll_weight=0.0, lr=1e-2, epochs=3,
                         batch_size=8, rollout_batch=16, rollout_steps=1)
    before = _favourite_log_prob(model, turns)
    result = _run(model, item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]), config, tmp_path)
    assert _favourite_log_prob(model, turns) > before + 0.2
    assert all(row["max_ratio_deviation"] < 1e-4 and row["clip_fraction"] == 0.0 for row in result.loss_curve)
    assert [row["rollout"] for row in result.loss_curve] == [1, 2, 3]
    stored = pl.read_parquet(tmp_path / "rollouts" / "*.parquet")
    assert result.rollouts == stored.height == 3 * 40 * 4
    assert stored.group_by("rollout", "turn_key").len()["len"].unique().to_list() == [4]  # each turn once a draw
    assert len(list((tmp_path / "rollouts").glob("part-p000-c*.parquet"))) == 5  # 40 turns / 8 per step
    assert config.planned_requests(40, 8, 8) == RoundConfig(**{**config.to_dict(), "rollout_steps": None}
                                                            ).planned_requests(40, 8, 8)
    # the same round drawing once per epoch: its steps drift from their sampler, so ratios leave 1
    per_epoch = _run(_setup()[0], item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]),
                     RoundConfig(**{**config.to_dict(), "rollout_steps": None}), tmp_path / "per-epoch")
    assert max(row["max_ratio_deviation"] for row in per_epoch.loss_curve) > 0.2


def test_a_round_drawing_every_few_steps_resumes_to_the_same_retriever(tmp_path):
    """An outage in the middle of the second epoch: the rerun replays that epoch from its stored chunks and
    draws the rest, ending with the weights of a run that never stopped."""
    torch.set_num_threads(1)
    _, item_ids, turns = _setup(1)
    config = RoundConfig(num_sets=2, set_size=8, epochs=2, lr=1e-2, batch_size=8, rollout_steps=2)
    clean, counting, marks = _setup(1)[0], PreferOneFilm(item_ids[FAVOURITE]), {}

    def log(message):
        if message.startswith(("epoch 1:", "epoch 2:")):
            marks[message[:7]] = len(counting.seen)

    _run(clean, item_ids, turns, counting, config, tmp_path / "clean", log)
    flaky = PreferOneFilm(item_ids[FAVOURITE], fail_after=(marks["epoch 1"] + marks["epoch 2"]) // 2)
    with pytest.raises(GeneratorUnavailable):
        _run(_setup(1)[0], item_ids, turns, flaky, config, tmp_path / "r")
    assert (tmp_path / "r" / "epochs" / "last.pt").is_file()
    assert 0 < len(list((tmp_path / "r" / "rollouts").glob("part-p001-c*.parquet"))) < 3  # of 40 / 16 chunks
    resumed, logs = _setup(1)[0], []
    _run(resumed, item_ids, turns, PreferOneFilm(item_ids[FAVOURITE]), config, tmp_path / "r", logs.append)
    assert "resuming after epoch 1 of 2" in logs
    for (name, a), b in zip(clean.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_rollout_steps_is_checked():
    with pytest.raises(ValueError, match="rollout_steps must be >= 1"):
        RoundConfig(rollout_steps=0)
    with pytest.raises(ValueError, match="rollout_every left at 1"):
        RoundConfig(rollout_steps=2, rollout_every=2)


def test_dpo_pairs_is_checked():
    with pytest.raises(ValueError, match="dpo_pairs must be 'extremes' or 'all'"):
        RoundConfig(objective="dpo", dpo_pairs="best")


class FirstShownFirst(PreferOneFilm):
    """A generator with pure position bias: it ranks the candidates in the order it is shown them."""

    def _rank_batch(self, requests):
        self.seen.extend(r.candidate_ids for r in requests)
        self.stats.add(calls=len(requests))
        return [RankResult(tuple(r.candidate_ids), "model") for r in requests]


def test_the_generator_sees_each_set_in_a_seeded_order_that_ignores_the_draw_order(tmp_path):
    import polars as pl

    from training.rollouts import shown_order

    torch.set_num_threads(1)
    model, item_ids, turns = _setup()
    config = RoundConfig(num_sets=4, set_size=5, epochs=1, rollout_batch=16)
    first = FirstShownFirst(item_ids[FAVOURITE])
    _run(model, item_ids, turns, first, config, tmp_path / "a")
    rollouts = pl.read_parquet(tmp_path / "a" / "rollouts" / "*.parquet").filter(pl.col("generator_asked"))
    assert (rollouts["ranking"] == rollouts["shown"]).all()  # this generator returns what it was shown
    assert (rollouts["shown"] != rollouts["item_ids"]).mean() > 0.5  # ... which is not the retriever's draw order
    assert all(sorted(s) == sorted(i) for s, i in zip(rollouts["shown"].to_list(), rollouts["item_ids"].to_list()))
    # the same films for the same turn are shown the same way whatever order they came in (cache hits)
    ids = ["m1", "m2", "m3", "m4", "m5"]
    assert shown_order(ids, "d/1/1", 7) == shown_order(ids[::-1], "d/1/1", 7) != shown_order(ids, "d/1/1", 8)
    second = FirstShownFirst(item_ids[FAVOURITE])
    _run(_setup()[0], item_ids, turns, second, config, tmp_path / "b")
    assert second.seen == first.seen
    plain = FirstShownFirst(item_ids[FAVOURITE])
    unshuffled = RoundConfig(**{**config.to_dict(), "shuffle_candidates": False})
    _run(_setup()[0], item_ids, turns, plain, unshuffled, tmp_path / "c")
    rollouts = pl.read_parquet(tmp_path / "c" / "rollouts" / "*.parquet").filter(pl.col("generator_asked"))
    assert (rollouts["shown"] == rollouts["item_ids"]).all()


def test_reward_baseline_is_the_same_set_in_the_retrievers_order(tmp_path):
    import polars as pl

    from training.alignment import ndcg_of_ranking
    from training.round_optimisation import _rollout_tensors

    torch.set_num_threads(1)
    model, item_ids, turns = _setup()
    config = RoundConfig(num_sets=4, set_size=5, epochs=1, lr=0.0, rollout_batch=16)
    run_round(model, item_ids, turns[:40], turns[40:], PreferOneFilm(item_ids[FAVOURITE]), lambda ids: {}, config,
              tmp_path, log=lambda m: None)
    rollouts = pl.read_parquet(tmp_path / "rollouts" / "*.parquet")
    with torch.no_grad():
        logits = turn_logits(model, turns[:40], 10)
    row_of = {t.key: i for i, t in enumerate(turns[:40])}
    for row in rollouts.iter_rows(named=True):
        scores = logits[row_of[row["turn_key"]], row["items"]]
        by_score = [row["item_ids"][i] for i in scores.argsort(descending=True).tolist()]
        assert row["retriever_order_reward"] == pytest.approx(ndcg_of_ranking(by_score, {item_ids[FAVOURITE]}, 5))
    # this generator puts the target first: it adds exactly what the retriever's order left out
    assert (rollouts["reward"] >= rollouts["retriever_order_reward"]).all()
    assert (rollouts["reward"] > rollouts["retriever_order_reward"]).any()
    _, _, plain = _rollout_tensors(rollouts, turns[:40], config)
    baseline = RoundConfig(**{**config.to_dict(), "reward_baseline": "retriever"})
    _, _, relative = _rollout_tensors(rollouts, turns[:40], baseline)
    assert torch.all(relative <= plain) and torch.all(relative >= 0)


def test_a_round_over_its_generator_budget_stops_before_any_call(tmp_path):
    from training.alignment_round import OverBudget

    model, item_ids, turns = _setup()
    config = RoundConfig(num_sets=4, set_size=5, epochs=3, rollout_batch=16, max_generator_requests=100)
    assert config.planned_requests(40, 8, 8) == 3 * 40 * 4 + 2 * 8 + 2 * 8 * 4
    generator = PreferOneFilm(item_ids[FAVOURITE])
    with pytest.raises(OverBudget, match="over the limit of 100"):
        _run(model, item_ids, turns, generator, config, tmp_path)
    assert generator.seen == []
