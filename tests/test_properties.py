"""Properties that hold for any input (hypothesis): the ranking metrics (any ranking, any target set) and
the generator's answer parser (any answer text)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.evaluation_protocol import turn_metrics
from training.generator.base import RankRequest
from training.generator.parse import parse_ranking, ranking_from_scores
from training.generator.prompt import LABELS, build_prompt
from training.ranking_metrics import mean_metrics, ranking_metrics

KS = (1, 3, 5, 10)
settings.register_profile("rar", max_examples=100, deadline=None, derandomize=True, database=None)
settings.load_profile("rar")

films = st.integers(min_value=1, max_value=40).map(lambda i: f"m{i}")
rankings = st.lists(films, max_size=25, unique=True)
target_sets = st.lists(films, min_size=1, max_size=12, unique=True)


@given(rankings, target_sets)
def test_turn_metrics_lie_in_unit_interval_and_recall_grows_with_k(ranking, targets):
    m = turn_metrics(ranking, targets, KS)
    assert all(0.0 <= value <= 1.0 + 1e-12 for value in m.values())
    recalls = [m[f"recall@{k}"] for k in KS]
    assert recalls == sorted(recalls)
    hits = [rank for rank, item in enumerate(ranking) if item in targets]
    assert m["mrr"] == (1 / (hits[0] + 1) if hits else 0.0)
    for k in KS:
        hits_at_k = sum(1 for rank in hits if rank < k)
        assert m[f"recall@{k}"] == pytest.approx(hits_at_k / len(targets))
        assert (m[f"ndcg@{k}"] == 0.0) == (hits_at_k == 0)


@given(target_sets, st.lists(films, max_size=10, unique=True), st.randoms(use_true_random=False))
def test_a_perfect_ranking_scores_one(targets, others, random):
    ideal = random.sample(targets, len(targets)) + [m for m in others if m not in targets]
    m = turn_metrics(ideal, targets, KS)
    for k in KS:
        assert m[f"ndcg@{k}"] == pytest.approx(1.0)
        assert m[f"recall@{k}"] == pytest.approx(min(len(targets), k) / len(targets))
    assert m["mrr"] == 1.0


@given(rankings, target_sets)
def test_moving_a_target_up_never_lowers_ndcg(ranking, targets):
    """Swapping a target with the non-target just above it can only raise NDCG@k."""
    before = turn_metrics(ranking, targets, KS)
    for rank in range(1, len(ranking)):
        if ranking[rank] in targets and ranking[rank - 1] not in targets:
            swapped = ranking[: rank - 1] + [ranking[rank], ranking[rank - 1]] + ranking[rank + 1:]
            after = turn_metrics(swapped, targets, KS)
            assert all(after[f"ndcg@{k}"] >= before[f"ndcg@{k}"] - 1e-12 for k in KS)
            break


@st.composite
def scored_batches(draw):
    """Distinct scores over N items (column 0 = padding) and 1..T targets per row (0 = padded target)."""
    items = draw(st.integers(min_value=2, max_value=30))
    rows = draw(st.integers(min_value=1, max_value=4))
    scores, targets = [], []
    for _ in range(rows):
        perm = draw(st.permutations(list(range(1, items + 1))))
        scores.append([0.0] + [float(p) for p in perm])  # distinct: no ties
        chosen = draw(st.lists(st.integers(1, items), min_size=1, max_size=min(6, items), unique=True))
        targets.append(chosen)
    width = max(len(t) for t in targets)
    padded = [t + [0] * (width - len(t)) for t in targets]
    return torch.tensor(scores), torch.tensor(padded), targets


@given(scored_batches())
def test_tensor_metrics_agree_with_the_per_turn_metrics(batch):
    """Two implementations, one definition: NDCG@k identical; Recall@k counts the same hits (the tensor
    version divides by min(k, |T|), the per-turn one by |T|); MRR identical."""
    scores, targets, target_lists = batch
    per_row = ranking_metrics(scores, targets, ks=KS)
    for row, chosen in enumerate(target_lists):
        order = sorted(range(1, scores.shape[1]), key=lambda i: -scores[row, i].item())
        reference = turn_metrics(order, chosen, KS)
        for k in KS:
            assert per_row[f"NDCG@{k}"][row].item() == pytest.approx(reference[f"ndcg@{k}"], abs=1e-6)
            hits = reference[f"recall@{k}"] * len(chosen)
            assert per_row[f"Recall@{k}"][row].item() == pytest.approx(hits / min(k, len(chosen)), abs=1e-6)
        assert per_row["MRR"][row].item() == pytest.approx(reference["mrr"], abs=1e-6)
    means = mean_metrics(per_row)
    assert all(0.0 <= value <= 1.0 + 1e-6 for value in means.values())


@given(scored_batches())
def test_tensor_metrics_of_targets_ranked_first_are_one(batch):
    scores, targets, target_lists = batch
    boosted = scores.clone()
    for row, chosen in enumerate(target_lists):
        boosted[row, chosen] += 1000.0  # every target above every other film
    means = mean_metrics(ranking_metrics(boosted, targets, ks=KS))
    assert all(value == pytest.approx(1.0) for value in means.values())


# --- the generator's answer parser ---------------------------------------------------------------

candidate_lists = st.lists(st.integers(1, 99).map(lambda i: f"tt{i:07d}"), min_size=1, max_size=len(LABELS), unique=True)
answers = st.text(alphabet=st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ abcxyz,.>()-:'\n0123456789")), max_size=80)


def _movies(candidates):
    return {m: {"title": f"Film number {m[-3:]}", "year": 2000} for m in candidates}


@given(candidate_lists, answers | st.text(max_size=60))
def test_parse_ranking_is_always_a_permutation_of_the_candidates(candidates, answer):
    request = RankRequest.from_text("something fun", candidates, _movies(candidates))
    prompt = build_prompt(request, "chat")
    ranking, named = parse_ranking(answer, prompt, candidates, request.movies)
    assert sorted(ranking) == sorted(candidates)  # never an id outside the set, none lost, none twice
    assert 0 <= named <= len(candidates)


@given(candidate_lists, st.data())
def test_an_answer_naming_every_label_in_some_order_is_taken_as_is(candidates, data):
    request = RankRequest.from_text("hi", candidates, _movies(candidates))
    prompt = build_prompt(request, "chat")
    order = data.draw(st.permutations(list(range(len(candidates)))))
    answer = ", ".join(LABELS[i] for i in order)
    ranking, named = parse_ranking(answer, prompt, candidates, request.movies)
    assert ranking == tuple(candidates[i] for i in order) and named == len(candidates)


@given(candidate_lists, st.dictionaries(st.sampled_from(list(LABELS) + ["a", "?", "AA"]),
                                         st.floats(-50, 0, allow_nan=False), max_size=30))
def test_ranking_from_scores_is_a_permutation_sorted_by_score(candidates, label_scores):
    prompt = build_prompt(RankRequest.from_text("hi", candidates), "completion")
    ranking, scores = ranking_from_scores(label_scores, prompt, candidates)
    assert sorted(ranking) == sorted(candidates)
    label_of = prompt.label_of()
    scored = [label_scores[label] for label in label_of if label in label_scores]
    if scores is not None:
        assert len(scores) == len(candidates) and list(scores) == sorted(scores, reverse=True)
    else:
        assert len(scored) < len(candidates)
    known = {label_of[label]: s for label, s in label_scores.items() if label in label_of}
    prefix = ranking[: len(known)]
    assert [known[m] for m in prefix] == sorted(known.values(), reverse=True)
