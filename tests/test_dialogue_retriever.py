"""The dialogue-aware retriever, text-tied checkpoints of both retriever kinds, the text-vector cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.alignment_round import AlignmentTurn, turn_logits
from training.dialogue_retriever import DialogueRetriever, DialogueRetrieverConfig, conversation_text
from training.dialogue_training import DialogueTrainConfig, evaluate, fit, turn_examples
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
