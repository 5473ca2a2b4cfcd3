"""The evaluation report on a fixture small enough that every figure is worked out by hand.

Six films A..F (A 1975 and C 1978 are the only ones before 1980) and one film G outside the corpus.
Two real LRURec checkpoints rank by their item bias alone (tests/retriever_fixtures.py):
``pretrained`` A > B > C > D > E > F, ``sft`` F > E > D > C > B > A. The generator is the real
``preference`` backend with the trait ``year<1980``: it moves A and C to the front of the retriever's
top three (K = 3) and keeps the retriever's order otherwise; a top three that holds no target is not sent
to it. Every list ranks all films minus the history (at most 6), so every hit is within @5 = @10 = @20.

Dialogue popularity counts the learning pool (histories and targets of the train and validation turns
outside the held-out splits) minus the gate fold; with the default folds va1 is in the gate, so:
B 4, D 3, E 3, F 1 (A and C never), the list B, D, E, F minus the turn's history. MovieLens popularity
counts the train histories: A, D, F, B once each, in that order.

Every evaluated turn keeps exactly one target under the protocol, so the ideal DCG is 1 and a target
at 0-based rank r scores NDCG@k = 1 / log2(r + 2) when r < k, Recall@k = 1 when r < k, MRR = 1 / (r + 1).
"""

from __future__ import annotations

import math
from collections import Counter

import polars as pl
import pytest
from retriever_fixtures import fixed_order_checkpoint

from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, CORPUS_SCHEMA, USER_SEQUENCES_SCHEMA
from training.turn_pools import Folds

A, B, C, D, E, F, G = (f"tt000000{i}" for i in range(1, 8))  # G is not a corpus film
YEARS = {A: 1975, B: 1995, C: 1978, D: 2001, E: 2005, F: 2010}
PRETRAINED_ORDER, SFT_ORDER = [A, B, C, D, E, F], [F, E, D, C, B, A]
CANDIDATES = 3
DATASETS = ("redial", "inspired")  # the dialogue datasets popularity learns from

H = 1 / math.log2(3)  # NDCG of a hit at rank 1
Q = 1 / math.log2(4)  # NDCG of a hit at rank 2
T = 1 / math.log2(5)  # NDCG of a hit at rank 3
S = 1 / math.log2(6)  # NDCG of a hit at rank 4
# (ndcg@1, ndcg@k>=5, recall@1, recall@k>=5, mrr) of a single target at rank 0..4, or missed
RANK0, RANK1, RANK2, MISS = (1, 1, 1, 1, 1), (0, H, 0, 1, 1 / 2), (0, Q, 0, 1, 1 / 3), (0, 0, 0, 0, 0)
RANK3, RANK4 = (0, T, 0, 1, 1 / 4), (0, S, 0, 1, 1 / 5)


def _turn(dataset, split, dialog_id, history, targets, mentioned):
    return {"dataset": dataset, "split": split, "dialog_id": dialog_id, "turn_index": 1,
            "context": [{"role": "seeker", "text": f"turn {dialog_id}"}], "history_movie_ids": history,
            "target_movie_ids": targets, "target_mentioned_before": mentioned}


TURNS = [
    # learned from, never evaluated; they make the popularity counts
    _turn("redial", "train", "tr1", [B, D, E], [F], [False]),
    _turn("redial", "train", "tr2", [B, D], [E], [False]),
    _turn("redial", "train", "tr3", [B], [D], [False]),
    _turn("inspired", "train", "in-tr1", [B], [E], [False]),
    # redial has a test split: its validation split is learned from (va1 falls in the gate fold) and never evaluated
    _turn("redial", "validation", "va1", [], [A], [False]),
    # redial/test
    _turn("redial", "test", "te1", [A], [C, B], [False, True]),  # B was mentioned before: only C counts
    _turn("redial", "test", "te2", [], [G, E], [False, False]),  # G is outside the corpus: only E counts
    _turn("redial", "test", "te3", [D], [G], [False]),  # no target left: not evaluated
    _turn("redial", "test", "te4", [A], [F], [True]),  # no target left: not evaluated
    _turn("redial", "test", "te5", [B], [F], [False]),
    # inspired has no test split: its validation split is held out
    _turn("inspired", "validation", "in-va1", [E], [A], [False]),
]
SEQUENCES = [  # next-item history = train films + the validation film; target = the test film
    {"dataset": "ml-latest-small", "user_id": "u1", "movie_ids": [A, D, B, C], "train_movie_ids": [A, D],
     "val_movie_id": B, "test_movie_id": C},
    {"dataset": "ml-latest-small", "user_id": "u2", "movie_ids": [F, B, E, D], "train_movie_ids": [F, B],
     "val_movie_id": E, "test_movie_id": D},
]

# (evaluation set, system, turn) -> metrics, worked out by hand: the ranked lists are in the comments.
EXPECTED = {
    # in-va1: history E, target A
    ("inspired/validation", "popularity", "in-va1"): MISS,  # B D F
    ("inspired/validation", "pretrained", "in-va1"): RANK0,  # A B C D F
    ("inspired/validation", "pretrained+preference", "in-va1"): RANK0,  # A C B | D F
    ("inspired/validation", "sft", "in-va1"): RANK4,  # F D C B A
    ("inspired/validation", "sft+preference", "in-va1"): RANK4,  # F D C | B A (no target in the top 3: not sent)
    # te1: history A, target C
    ("redial/test", "popularity", "te1"): MISS,  # B D E F
    ("redial/test", "pretrained", "te1"): RANK1,  # B C D E F
    ("redial/test", "pretrained+preference", "te1"): RANK0,  # C B D | E F: C is from 1978
    ("redial/test", "sft", "te1"): RANK3,  # F E D C B
    ("redial/test", "sft+preference", "te1"): RANK3,  # F E D | C B (not sent)
    # te2: no history, target E
    ("redial/test", "popularity", "te2"): RANK2,  # B D E F
    ("redial/test", "pretrained", "te2"): RANK4,  # A B C D E F
    ("redial/test", "pretrained+preference", "te2"): RANK4,  # A B C | D E F (not sent)
    ("redial/test", "sft", "te2"): RANK1,  # F E D C B A
    ("redial/test", "sft+preference", "te2"): RANK1,  # F E D | C B A: none before 1980
    # te5: history B, target F
    ("redial/test", "popularity", "te5"): RANK2,  # D E F
    ("redial/test", "pretrained", "te5"): RANK4,  # A C D E F
    ("redial/test", "pretrained+preference", "te5"): RANK4,  # A C D | E F (not sent)
    ("redial/test", "sft", "te5"): RANK0,  # F E D C A
    ("redial/test", "sft+preference", "te5"): RANK0,  # F E D | C A
    # u1: history A D B, target C
    ("ml-latest-small/test", "popularity", "u1"): MISS,  # F (C was never seen)
    ("ml-latest-small/test", "pretrained", "u1"): RANK0,  # C E F
    ("ml-latest-small/test", "sft", "u1"): RANK2,  # F E C
    # u2: history F B E, target D
    ("ml-latest-small/test", "popularity", "u2"): RANK1,  # A D
    ("ml-latest-small/test", "pretrained", "u2"): RANK2,  # A C D
    ("ml-latest-small/test", "sft", "u2"): RANK0,  # D C A
}
TOP_LISTS = {  # the lists behind a few of the rows above
    ("redial/test", "pretrained+preference", "te1"): [C, B, D, E, F],
    ("redial/test", "popularity", "te5"): [D, E, F],
    ("ml-latest-small/test", "pretrained", "u1"): [C, E, F],
    ("ml-latest-small/test", "popularity", "u1"): [F],
    ("ml-latest-small/test", "popularity", "u2"): [A, D],
    ("inspired/validation", "sft+preference", "in-va1"): [F, D, C, B, A],
}


def _write_tables(folder):
    corpus = pl.DataFrame(
        [{c: None for c in CORPUS_SCHEMA} | {"movie_id": m, "title": f"Film {m[-1]}", "year": y, "genres": [],
                                             "directors": [], "cast": [], "aliases": [], "sources": ["test"]}
         for m, y in YEARS.items()],
        schema=CORPUS_SCHEMA,
    )
    paths = {name: folder / f"{name}.parquet" for name in ("movie_corpus", "conversation_turns", "user_sequences")}
    corpus.write_parquet(paths["movie_corpus"])
    pl.DataFrame(TURNS, schema=CONVERSATION_TURNS_SCHEMA).write_parquet(paths["conversation_turns"])
    pl.DataFrame(SEQUENCES, schema=USER_SEQUENCES_SCHEMA).write_parquet(paths["user_sequences"])
    return paths


ROUNDS = {"round-1": 0.25, "round-2": 0.5}  # gate NDCG@10 after each finished alignment round
N_BOOT = 200


@pytest.fixture
def report(tmp_path):
    """(home, the report, its log lines). Built per test (~1 s): mutmut attributes what a shared fixture calls
    to the first test that uses it, so a module-wide report would leave the other tests out of every mutant."""
    from corpus_build.atomic import write_json_atomic
    from training.evaluation_report import report_from_tables
    from training.generator.preference_backend import PreferenceGenerator
    from training.layout import checkpoint_path, round_dir, round_record_path

    home = tmp_path
    paths = _write_tables(home)
    fixed_order_checkpoint(checkpoint_path(home, "pretrained"), list(YEARS), PRETRAINED_ORDER)
    fixed_order_checkpoint(checkpoint_path(home, "sft"), list(YEARS), SFT_ORDER)
    for name, ndcg in ROUNDS.items():
        write_json_atomic({"round": name, "gate_ndcg_after": ndcg}, round_record_path(round_dir(home, name)))
    log: list[str] = []
    out = report_from_tables(
        home, paths["conversation_turns"], paths["user_sequences"], paths["movie_corpus"],
        lambda: PreferenceGenerator("year<1980"), home / "evaluation_turns.parquet",
        max_turns=100, seed=0, candidates=CANDIDATES, datasets=DATASETS, folds=Folds(), n_boot=N_BOOT, log=log.append,
    )
    return home, out, log


def test_every_per_turn_figure_matches_the_hand_computed_table(report):
    _, out, _ = report
    rows = {(r["dataset"], r["system"], r["dialog_id"]): r for r in out.per_turn.iter_rows(named=True)}
    assert set(rows) == set(EXPECTED)  # no validation turn of redial, no train turn, no turn without a target
    for key, (ndcg1, ndcg_k, recall1, recall_k, mrr) in EXPECTED.items():
        row = rows[key]
        assert row["n_targets"] == 1, key
        assert row["ndcg@1"] == pytest.approx(ndcg1), key
        assert row["recall@1"] == pytest.approx(recall1), key
        assert row["mrr"] == pytest.approx(mrr), key
        for k in (5, 10, 20):
            assert row[f"ndcg@{k}"] == pytest.approx(ndcg_k), (key, k)
            assert row[f"recall@{k}"] == pytest.approx(recall_k), (key, k)
    for key, top in TOP_LISTS.items():
        assert rows[key]["top10"] == top, key
    assert pl.read_parquet(out.turns_path).height == len(EXPECTED)


def test_summary_means_turn_counts_and_headline_by_hand(report):
    _, out, _ = report
    summary = {(r["dataset"], r["system"]): r for r in out.summary.iter_rows(named=True)}
    expected_ndcg10 = {
        ("inspired/validation", "popularity"): 0.0, ("inspired/validation", "pretrained"): 1.0,
        ("inspired/validation", "pretrained+preference"): 1.0, ("inspired/validation", "sft"): S,
        ("inspired/validation", "sft+preference"): S,
        ("redial/test", "popularity"): (0 + Q + Q) / 3, ("redial/test", "pretrained"): (H + S + S) / 3,
        ("redial/test", "pretrained+preference"): (1 + S + S) / 3, ("redial/test", "sft"): (T + H + 1) / 3,
        ("redial/test", "sft+preference"): (T + H + 1) / 3,
        ("ml-latest-small/test", "popularity"): H / 2, ("ml-latest-small/test", "pretrained"): (1 + Q) / 2,
        ("ml-latest-small/test", "sft"): (Q + 1) / 2,
    }
    assert set(summary) == set(expected_ndcg10)
    for key, value in expected_ndcg10.items():
        row = summary[key]
        assert row["turns"] == {"inspired/validation": 1, "redial/test": 3, "ml-latest-small/test": 2}[key[0]]
        assert row["ndcg@10"] == pytest.approx(value), key
        assert row["ndcg@10_lo"] - 1e-9 <= row["ndcg@10"] <= row["ndcg@10_hi"] + 1e-9, key
    assert summary[("redial/test", "popularity")]["mrr"] == pytest.approx(2 / 9)
    assert summary[("redial/test", "sft")]["recall@1"] == pytest.approx(1 / 3)
    one_turn = summary[("inspired/validation", "pretrained")]
    assert one_turn["ndcg@10_lo"] == one_turn["ndcg@10_hi"] == 1.0  # one turn: every resample is that turn
    # the headline: the most trained system with the generator on the largest dialogue set
    assert out.headline["dataset"] == "redial/test" and out.headline["system"] == "sft+preference"
    assert out.headline["value"] == pytest.approx((T + H + 1) / 3)
    assert out.generator_name == "preference"
    row = next(r for r in out.markdown.splitlines() if r.startswith("| redial/test | sft+preference | 3 | "))
    cells = [cell.strip(" |") for cell in row.split(" | ")[3:]]  # ndcg@10 [95% CI], recall@10/20/50, mrr
    assert cells[0].startswith("0.6872 [") and len(cells) == 5
    recalls_mrr = ("recall@10", "recall@20", "recall@50", "mrr")
    assert cells[1:] == [f"{summary[('redial/test', 'sft+preference')][m]:.4f}" for m in recalls_mrr]


def test_report_cis_are_the_seeded_bootstrap_of_each_systems_per_turn_values(report):
    """Every CI is the percentile bootstrap (the caller's ``n_boot``, seed 0) of that system's per-turn values on
    that set, in turn order: the same tables give the same report."""
    from training.evaluation_protocol import bootstrap_ci
    from training.evaluation_report import REPORT_METRICS

    _, out, _ = report
    for row in out.summary.iter_rows(named=True):
        turns = out.per_turn.filter((pl.col("dataset") == row["dataset"]) & (pl.col("system") == row["system"]))
        for metric in REPORT_METRICS:
            low, high = bootstrap_ci(turns[metric].to_numpy(), n_boot=N_BOOT, seed=0)
            assert (row[f"{metric}_lo"], row[f"{metric}_hi"]) == (low, high), (row["dataset"], row["system"], metric)
    redial_sft = out.summary.filter((pl.col("dataset") == "redial/test") & (pl.col("system") == "sft")).row(0, named=True)
    assert redial_sft["ndcg@10_lo"] < redial_sft["ndcg@10_hi"]  # three different turns: a real interval


def test_report_writes_its_chart_with_the_rounds_curve_under_home(report):
    from training.evaluation_protocol import chart_png
    from training.layout import evaluation_chart_path

    home, out, _ = report
    assert out.chart_path == evaluation_chart_path(home)
    # the headline metric per system and set, then the gate's NDCG@10 after each finished round
    assert out.chart_path.read_bytes() == out.png == chart_png(out.summary, "ndcg@10", ROUNDS)
    assert out.png != chart_png(out.summary, "ndcg@10")


def test_without_user_sequences_only_the_dialogue_sets_are_evaluated(tmp_path):
    from training.evaluation_report import report_from_tables
    from training.generator.preference_backend import PreferenceGenerator
    from training.layout import checkpoint_path

    paths = _write_tables(tmp_path)
    paths["user_sequences"].unlink()
    fixed_order_checkpoint(checkpoint_path(tmp_path, "pretrained"), list(YEARS), PRETRAINED_ORDER)
    out = report_from_tables(tmp_path, paths["conversation_turns"], paths["user_sequences"], paths["movie_corpus"],
                             lambda: PreferenceGenerator("year<1980"), tmp_path / "turns.parquet", max_turns=100,
                             seed=0, candidates=CANDIDATES, datasets=DATASETS, folds=Folds(), n_boot=50, log=lambda _: None,
                             generator_weight=0.0)
    assert sorted(out.summary["dataset"].unique()) == ["inspired/validation", "redial/test"]
    # popularity without the MovieLens histories: B 4, D 3, E 3, F 1 (A no longer counted)
    te2 = out.per_turn.filter((pl.col("system") == "popularity") & (pl.col("dialog_id") == "te2"))
    assert te2["top10"].item()[0] == B and A not in te2["top10"].item()
    # generator weight 0: the generator's order counts for nothing, te1 keeps pretrained's B C D (not C B D)
    lists = {(r["system"], r["dialog_id"]): r["top10"] for r in out.per_turn.iter_rows(named=True)}
    assert lists[("pretrained+preference", "te1")] == lists[("pretrained", "te1")] == [B, C, D, E, F]


def test_no_retriever_checkpoint_is_a_clear_error(tmp_path):
    from training.evaluation_report import NoRetrieverError, report_from_tables
    from training.generator.preference_backend import PreferenceGenerator

    paths = _write_tables(tmp_path)
    with pytest.raises(NoRetrieverError, match="^no retriever checkpoint found: materialise lrurec_pretrained first$"):
        report_from_tables(tmp_path, paths["conversation_turns"], paths["user_sequences"], paths["movie_corpus"],
                           lambda: PreferenceGenerator("year<1980"), tmp_path / "turns.parquet", max_turns=100,
                           seed=0, candidates=CANDIDATES, datasets=DATASETS, folds=Folds())


def test_systems_appear_least_trained_first_then_each_with_the_generator_and_each_set_is_logged(report):
    _, out, log = report
    redial = out.summary.filter(pl.col("dataset") == "redial/test")["system"].to_list()
    assert redial == ["popularity", "pretrained", "pretrained+preference", "sft", "sft+preference"]
    assert out.summary["dataset"].unique(maintain_order=True).to_list() == [
        "inspired/validation", "redial/test", "ml-latest-small/test"]
    assert log == ["inspired/validation: 1 turns, 5 systems", "redial/test: 5 turns, 5 systems",
                   "ml-latest-small/test: 2 turns, 3 systems"]  # no generator without a dialogue


def test_evaluation_sets_sample_at_most_max_turns_and_skip_datasets_without_a_held_out_split():
    from training.evaluation_report import evaluation_sets

    turns = pl.DataFrame(TURNS + [_turn("reddit", "train", "rd1", [A], [B], [False])], schema=CONVERSATION_TURNS_SCHEMA)
    sequences = pl.DataFrame(SEQUENCES, schema=USER_SEQUENCES_SCHEMA)
    full = evaluation_sets(turns, sequences, max_turns=100, seed=0)
    assert [(s.name, s.turns.height, s.has_dialogue) for s in full] == [
        ("inspired/validation", 1, True), ("redial/test", 5, True), ("ml-latest-small/test", 2, False)]
    sampled = evaluation_sets(turns, sequences, max_turns=2, seed=0)
    assert [s.turns.height for s in sampled] == [1, 2, 2]
    assert set(sampled[1].turns["dialog_id"]) <= {"te1", "te2", "te3", "te4", "te5"}
    assert sampled[1].turns.equals(evaluation_sets(turns, sequences, max_turns=2, seed=0)[1].turns)  # seeded
    next_item = full[2].turns
    assert next_item["history_movie_ids"].to_list() == [[A, D, B], [F, B, E]]
    assert next_item["target_movie_ids"].to_list() == [[C], [D]] and next_item["dialog_id"].to_list() == ["u1", "u2"]


def test_retriever_rankings_do_not_depend_on_the_batch(tmp_path):
    from training.evaluation_report import retriever_rankings
    from training.retriever import Retriever

    retriever = Retriever.from_checkpoint(fixed_order_checkpoint(tmp_path / "r.pt", list(YEARS), SFT_ORDER))
    turns = pl.DataFrame(TURNS, schema=CONVERSATION_TURNS_SCHEMA)
    whole = retriever_rankings(retriever, turns, 3)
    assert retriever_rankings(retriever, turns, 3, batch=2) == whole and len(whole) == turns.height
    assert whole[0] == [F, C, A]  # tr1: history B, D, E


def test_rounds_curve_reads_each_finished_round_in_order(tmp_path):
    from corpus_build.atomic import write_json_atomic
    from training.evaluation_report import rounds_curve
    from training.layout import round_dir, round_record_path, rounds_dir

    for name, ndcg in (("round-2", 0.3), ("round-1", 0.2)):
        write_json_atomic({"round": name, "gate_ndcg_after": ndcg}, round_record_path(round_dir(tmp_path, name)))
    assert list(rounds_curve(rounds_dir(tmp_path)).items()) == [("round-1", 0.2), ("round-2", 0.3)]
    assert rounds_curve(tmp_path / "none") == {}


def test_headline_falls_back_to_the_most_trained_system_without_a_dialogue_set():
    from training.evaluation_report import headline

    summary = pl.DataFrame({
        "dataset": ["ml-1m/test"] * 3, "system": ["popularity", "pretrained", "sft"], "turns": [9, 9, 9],
        "ndcg@10": [0.1, 0.2, 0.3], "ndcg@10_lo": [0.0, 0.1, 0.2], "ndcg@10_hi": [0.2, 0.3, 0.4]})
    assert headline(summary, []) == {"dataset": "ml-1m/test", "system": "sft", "value": 0.3, "lo": 0.2, "hi": 0.4}
    with pytest.raises(ValueError, match="^empty summary$"):
        headline(summary.with_columns(pl.lit("other").alias("system")), [])


def test_evaluate_systems_says_when_no_turn_keeps_a_target(tmp_path):
    from training.evaluation_report import EvaluationSet, evaluate_systems

    turns = pl.DataFrame([_turn("redial", "test", "te3", [D], [G], [False])], schema=CONVERSATION_TURNS_SCHEMA)
    with pytest.raises(ValueError, match="^no evaluation set has a turn with a target left under the protocol$"):
        evaluate_systems([EvaluationSet("redial/test", turns, True)], {}, None, None, Counter({A: 1}), set(YEARS),
                         log=lambda _: None)


@pytest.mark.parametrize(("weight", "top"), [(0.0, [B, C, D, E, F]), (0.5, [B, C, D, E, F]), (0.6, [C, B, D, E, F]),
                                             (1.0, [C, B, D, E, F]), (None, [C, B, D, E, F])])  # default: the generator's
def test_the_generator_order_is_fused_with_the_retrievers_at_the_weight(tmp_path, weight, top):
    """te1 (history A, target C): ``pretrained``'s top three B C D, the generator's C B D. Fused scores
    (1 - w) x retriever rank + w x generator rank: B = w, C = 1 - w, D = 2; at w = 0.5 B and C tie and keep
    the retriever's order; from w = 0.6 C leads."""
    from training.evaluation_report import EvaluationSet, evaluate_systems
    from training.generator.preference_backend import PreferenceGenerator
    from training.retriever import Retriever
    from training.turn_pools import CorpusLookup

    paths = _write_tables(tmp_path)
    fixed_order_checkpoint(tmp_path / "pretrained.pt", list(YEARS), PRETRAINED_ORDER)
    turns = pl.DataFrame([t for t in TURNS if t["dialog_id"] == "te1"], schema=CONVERSATION_TURNS_SCHEMA)
    per_turn = evaluate_systems(
        [EvaluationSet("redial/test", turns, True)], {"pretrained": Retriever.from_checkpoint(tmp_path / "pretrained.pt")},
        PreferenceGenerator("year<1980"), CorpusLookup.from_parquet(paths["movie_corpus"]), Counter({B: 1}),
        set(YEARS), candidates=CANDIDATES, log=lambda _: None, **({} if weight is None else {"generator_weight": weight}))
    row = per_turn.filter(pl.col("system") == "pretrained+preference").row(0, named=True)
    assert row["top10"] == top
    assert row["ndcg@10"] == pytest.approx(1.0 if top[0] == C else H)


def test_the_popularity_list_is_re_ranked_only_when_asked(tmp_path):
    """te1 (history A, target C): the popularity list B C D ...; the generator puts C (1978) first."""
    from training.evaluation_report import EvaluationSet, evaluate_systems
    from training.generator.preference_backend import PreferenceGenerator
    from training.turn_pools import CorpusLookup

    paths = _write_tables(tmp_path)
    turns = pl.DataFrame([t for t in TURNS if t["dialog_id"] == "te1"], schema=CONVERSATION_TURNS_SCHEMA)

    def systems(**options):
        per_turn = evaluate_systems(
            [EvaluationSet("redial/test", turns, True)], {}, PreferenceGenerator("year<1980"),
            CorpusLookup.from_parquet(paths["movie_corpus"]), Counter({B: 3, C: 2, D: 1}), set(YEARS),
            candidates=CANDIDATES, log=lambda _: None, **options)
        return {row["system"]: row["top10"][:3] for row in per_turn.iter_rows(named=True)}

    assert systems() == {"popularity": [B, C, D]}
    assert systems(rerank_popularity=True) == {"popularity": [B, C, D], "popularity+preference": [C, B, D]}


def test_samples_are_seeded_and_keep_the_tables_order():
    from training.evaluation_report import evaluation_sets

    turns = pl.DataFrame(TURNS, schema=CONVERSATION_TURNS_SCHEMA)
    sequences = pl.DataFrame([{"dataset": "ml-1m", "user_id": f"u{i:02d}", "movie_ids": [A, B, C, D],
                               "train_movie_ids": [A, B], "val_movie_id": C, "test_movie_id": D} for i in range(40)],
                             schema=USER_SEQUENCES_SCHEMA)

    def sampled(seed):
        return [s.turns["dialog_id"].to_list() for s in evaluation_sets(turns, sequences, max_turns=4, seed=seed)]

    first = sampled(3)
    assert [len(ids) for ids in first] == [1, 4, 4]
    assert sampled(3) == first and sampled(4) != first  # the seed, and only the seed, picks the sample
    assert all(ids == sorted(ids) for ids in first)  # te1..te5 and u00..u39 in the tables' order


def test_next_item_turns_are_conversation_turns_without_a_conversation():
    from training.evaluation_report import next_item_turns

    turns = next_item_turns(pl.DataFrame(SEQUENCES, schema=USER_SEQUENCES_SCHEMA))
    assert turns.schema == CONVERSATION_TURNS_SCHEMA
    assert turns.select("dataset", "split", "turn_index", "context", "target_mentioned_before").rows() == [
        ("ml-latest-small", "test", 0, [], [False])] * 2


def test_popularity_ranks_k_unseen_films_even_after_hundreds_of_popular_ones_were_seen():
    from training.evaluation_report import popularity_rankings

    counts = Counter({f"m{i:03d}": 1000 - i for i in range(400)})  # m000 most frequent, then m001, ...
    seen_300 = [f"m{i:03d}" for i in range(300)]  # a MovieLens user who rated the 300 most popular films
    turns = pl.DataFrame({"history_movie_ids": [seen_300, [], ["m001"]]})
    assert popularity_rankings(turns, counts, 3) == [["m300", "m301", "m302"], ["m000", "m001", "m002"],
                                                      ["m000", "m002", "m003"]]
    few = pl.DataFrame({"history_movie_ids": [["m000"]]})
    assert popularity_rankings(few, Counter({"m000": 2, "m001": 1}), 5) == [["m001"]]  # only what was counted


# the report's systems from most to least preferred for the headline (the generator is "preference" here)
HEADLINE_ORDER = ["aligned+preference", "dialogue+preference", "sft+preference", "pretrained+preference",
                  "aligned", "dialogue", "sft", "pretrained", "popularity"]


def _summary(rows):
    """A summary frame from (dataset, system, turns, ndcg@10); the CI is the value +- 0.01."""
    return pl.DataFrame([{"dataset": d, "system": s, "turns": n, "ndcg@10": v, "ndcg@10_lo": v - 0.01,
                          "ndcg@10_hi": v + 0.01} for d, s, n, v in rows])


@pytest.mark.parametrize("best", range(len(HEADLINE_ORDER)))
def test_headline_is_the_most_trained_system_with_the_generator_first(best):
    from training.evaluation_report import headline

    present = HEADLINE_ORDER[best:]
    values = {system: 0.1 + 0.05 * i for i, system in enumerate(HEADLINE_ORDER)}  # each system its own figure
    rows = [("redial/test", system, 900, values[system]) for system in reversed(present)]  # least trained first
    top = headline(_summary(rows), ["redial/test"])
    system = HEADLINE_ORDER[best]
    assert top == {"dataset": "redial/test", "system": system, "value": values[system],
                   "lo": values[system] - 0.01, "hi": values[system] + 0.01}


def test_headline_set_is_the_largest_dialogue_set_never_movielens_ties_alphabetical():
    from training.evaluation_report import headline

    summary = _summary([("ml-1m/test", "sft", 6000, 0.9), ("redial/test", "sft", 900, 0.2),
                        ("inspired/validation", "sft", 900, 0.3), ("inspired/test", "sft", 100, 0.4)])
    sets = ["redial/test", "inspired/validation", "inspired/test"]
    assert headline(summary, sets)["dataset"] == "inspired/validation"  # 900 turns each: the first by name
    assert headline(summary, ["redial/test"])["dataset"] == "redial/test"  # a larger MovieLens set does not count
    assert headline(summary, [])["dataset"] == "ml-1m/test"  # no dialogue set: the largest set
    two_generators = _summary([("redial/test", "sft+embedding", 900, 0.2), ("redial/test", "sft+preference", 900, 0.3)])
    assert headline(two_generators, ["redial/test"])["system"] == "sft+embedding"  # the first of equals listed


def test_a_dialogue_aware_retriever_ranks_each_turn_by_its_own_conversation_in_any_batch():
    """A real dialogue-aware retriever reading text alone (no LRU state, zero biases) whose film texts are unit
    vectors and whose text encoder reads a conversation as the film it names: each turn's first film is the
    film its conversation names, whatever the batch the turn falls in."""
    import numpy as np
    import torch

    from training.dialogue_retriever import DialogueRetriever, DialogueRetrieverConfig
    from training.evaluation_report import retriever_rankings
    from training.retriever import Retriever, item_text_matrix

    films = list(YEARS)  # A..F: tt0000001..tt0000006
    film_text = np.eye(len(films), dtype=np.float32)
    torch.manual_seed(0)
    model = DialogueRetriever(DialogueRetrieverConfig(num_items=len(films), text_dim=len(films), hidden=8, blocks=1,
                                                      history=False), item_text_matrix(film_text)).eval()
    with torch.no_grad():
        model.bias.zero_()

    class NamedFilmEncoder:  # "... like Film 3" reads exactly like film tt0000003
        def encode(self, texts):
            return np.stack([film_text[int(text[-1]) - 1] for text in texts])

    retriever = Retriever(model, films, text_encoder=NamedFilmEncoder())
    asked = [C, E, A, F, B]
    turns = pl.DataFrame([_turn("redial", "test", f"d{i}", [D] if film != D else [], [film], [False])
                          | {"context": [{"role": "seeker", "text": "hi"}, {"role": "seeker", "text": f"like Film {film[-1]}"}]}
                          for i, film in enumerate(asked)], schema=CONVERSATION_TURNS_SCHEMA)
    for batch in (2, 256):
        rankings = retriever_rankings(retriever, turns, 3, batch=batch)
        assert [ranking[0] for ranking in rankings] == asked, batch
        assert all(len(ranking) == 3 and D not in ranking for ranking in rankings)  # the history is masked


def test_build_report_summarises_with_the_callers_resamples_and_seed():
    import numpy as np

    from training.evaluation_protocol import bootstrap_ci
    from training.evaluation_report import build_report

    values = np.random.default_rng(1).random(40)  # 40 different turns: every resample count and seed shows
    per_turn = pl.DataFrame({"dataset": "redial/test", "system": "sft", "dialog_id": [f"d{i}" for i in range(40)],
                             **{m: values for m in ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "ndcg@50", "recall@1",
                                                    "recall@5", "recall@10", "recall@20", "recall@50", "mrr")}})
    summary, _, _ = build_report(per_turn, {}, n_boot=60, seed=5)
    row = summary.row(0, named=True)
    assert (row["ndcg@10_lo"], row["ndcg@10_hi"]) == bootstrap_ci(values, n_boot=60, seed=5)
    assert (row["ndcg@10_lo"], row["ndcg@10_hi"]) != bootstrap_ci(values, n_boot=1000, seed=0)


def test_current_retrievers_least_trained_first_caching_text_vectors_under_home(tmp_path):
    from training.evaluation_report import current_retrievers
    from training.layout import checkpoint_path, text_vectors_dir

    fixed_order_checkpoint(checkpoint_path(tmp_path, "sft"), list(YEARS), SFT_ORDER)
    fixed_order_checkpoint(checkpoint_path(tmp_path, "pretrained"), list(YEARS), PRETRAINED_ORDER)
    retrievers = current_retrievers(tmp_path)
    assert list(retrievers) == ["pretrained", "sft"]  # no dialogue or aligned checkpoint yet
    # a dialogue-aware retriever embeds each conversation once across reports
    assert {r.text_cache_dir for r in retrievers.values()} == {text_vectors_dir(tmp_path)}


def test_popularity_ranks_as_deep_as_the_retrievers_and_reports_without_counts(tmp_path):
    """Every system ranks ``depth`` films, so MRR compares like with like: a target at popularity rank 61 is
    a miss for popularity as it would be for a retriever. Without any count, popularity ranks nothing and
    scores 0 rather than stopping the report."""
    from training.evaluation_report import EvaluationSet, evaluate_systems
    from training.retriever import Retriever

    turns = pl.DataFrame([_turn("redial", "test", "te1", [], ["f60"], [False])], schema=CONVERSATION_TURNS_SCHEMA)
    counts = Counter({f"f{i:02d}": 100 - i for i in range(70)})  # f00 most frequent; f60 is 61st
    per_turn = evaluate_systems([EvaluationSet("redial/test", turns, True)], {}, None, None, counts, set(counts),
                                log=lambda _: None)
    assert per_turn["mrr"].to_list() == [0.0] and per_turn["recall@50"].to_list() == [0.0]

    retriever = Retriever.from_checkpoint(fixed_order_checkpoint(tmp_path / "r.pt", list(YEARS), PRETRAINED_ORDER))
    turns = pl.DataFrame([_turn("redial", "test", "te1", [A], [C], [False])], schema=CONVERSATION_TURNS_SCHEMA)
    per_turn = evaluate_systems([EvaluationSet("redial/test", turns, True)], {"pretrained": retriever}, None, None,
                                Counter(), set(YEARS), log=lambda _: None)
    rows = {r["system"]: r for r in per_turn.iter_rows(named=True)}
    assert rows["popularity"]["top10"] == [] and rows["popularity"]["mrr"] == 0.0
    assert rows["pretrained"]["top10"] == [B, C, D, E, F] and rows["pretrained"]["mrr"] == 0.5
