"""A trained retriever over movie_ids: candidates for the generator, scores for the RL rounds.

Two kinds share one checkpoint format and one interface (``query(tokens, text)`` then ``logits(query)``):

- ``lrurec``: the paper's LRURec, reading only the films mentioned so far;
- ``dialogue``: :class:`training.dialogue_retriever.DialogueRetriever`, which also reads the conversation
  (its text embedded with the ``movie_vectors`` model, cached by text hash).

A checkpoint (``export_retriever``) holds the kind, the model config and weights, the movie_id of every
item row, the maximum history length, the metrics it was saved with, and, for a text-tied item table,
the film text vectors (float16) and the name of the model that embedded them: items stay "projection of
their text + residual" through pretraining, fine-tuning and every alignment round, so a film no training
turn ever named keeps a representation near its text instead of a frozen, baked vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from corpus_build.atomic import torch_save_atomic
from corpus_build.storage import local_copy
from training.lrurec import LRURec, LRURecConfig
from training.sequences import ItemVocab, left_pad

KINDS = ("lrurec", "dialogue")


def item_text_matrix(vectors: np.ndarray, num_items: int | None = None) -> torch.Tensor:
    """[N + 1, dim] float32 film text vectors with a zero padding row, rounded through float16 (the
    precision checkpoints store them in, so a saved model scores exactly as the trained one)."""
    vectors = np.asarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)
    if num_items is not None and vectors.shape[0] != num_items:
        raise ValueError(f"text vectors have {vectors.shape[0]} rows for {num_items} items")
    return torch.from_numpy(np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors]))


def model_kind(model) -> str:
    return "dialogue" if getattr(model, "reads_dialogue", False) else "lrurec"


def export_retriever(model, movie_ids: Sequence[str], path: str | Path, max_len: int, metrics: dict | None = None,
                     text_model: str | None = None) -> Path:
    """Write a retriever checkpoint atomically (weights as trained: a text-tied item table stays tied).

    ``text_model``: the sentence-transformers model the film (and, for the dialogue kind, dialogue)
    vectors come from; a checkpoint being re-exported (an alignment round) keeps its parent's."""
    if len(movie_ids) != model.config.num_items:
        raise ValueError(f"{len(movie_ids)} movie_ids for a model of {model.config.num_items} items")
    text = getattr(model.items, "text", None)
    text_model = text_model or getattr(model, "text_model", None)
    if model_kind(model) == "dialogue" and not text_model:
        raise ValueError("a dialogue-aware retriever needs the name of its text model to be exported")
    saved = {
        "kind": model_kind(model),
        "config": model.config.to_dict(),
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "item_text": None if text is None else text[1:].detach().cpu().to(torch.float16).clone(),
        "text_model": text_model,
        "movie_ids": list(movie_ids),
        "max_len": max_len,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    return torch_save_atomic(saved, path)


def checkpoint_problems(path: Path) -> list[str]:
    """What keeps a retriever checkpoint from serving: missing, unreadable, weights that are not finite, or
    film ids that do not match its item table; an empty list when it loads and is sound (``path``: a local or
    object-store path from :mod:`training.layout`)."""
    if not path.is_file():
        return [f"{path} does not exist"]
    try:
        saved = torch.load(local_copy(path), map_location="cpu", weights_only=False)
        model = load_model(saved)
    except Exception as error:  # noqa: BLE001 - any failure to load is the finding
        return [f"{path} does not load: {type(error).__name__}: {error}"]
    problems = [f"{name}: {int((~torch.isfinite(tensor)).sum())} values not finite"
                for name, tensor in saved["state"].items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if len(saved["movie_ids"]) != model.config.num_items:
        problems.append(f"{len(saved['movie_ids'])} movie_ids for {model.config.num_items} items")
    return problems


def load_model(saved: Mapping):
    """The model of a loaded checkpoint dict (any kind; checkpoints from before the kinds are LRURec)."""
    text = saved.get("item_text")
    if text is not None:
        text = torch.cat([torch.zeros(1, text.shape[1]), text.float()])
    if saved.get("kind", "lrurec") == "dialogue":
        from training.dialogue_retriever import DialogueRetriever, DialogueRetrieverConfig

        model = DialogueRetriever(DialogueRetrieverConfig(**saved["config"]), text)
        # checkpoints from before the co-mention prior load without it
        state = {"co_mention_index": model.co_mention_index, "co_mention_value": model.co_mention_value, **saved["state"]}
    else:
        model = LRURec(LRURecConfig(**saved["config"]), text)
        state = saved["state"]
    model.load_state_dict(state)
    model.text_model = saved.get("text_model")
    return model


class Retriever:
    """Ranks the whole item table for a turn (films mentioned so far, and the conversation when the
    retriever reads it); mentioned films are masked by default.

    ``text_encoder``: texts -> unit vectors with the checkpoint's text model, for the dialogue kind
    (default: a :class:`training.text_cache.TextVectorCache` over an :class:`corpus_build.embed.Embedder`
    of that model, persisted under ``text_cache_dir`` when given)."""

    def __init__(self, model, movie_ids: Sequence[str], max_len: int = 200, metrics: dict | None = None,
                 text_encoder=None, text_cache_dir: str | Path | None = None):
        self.model = model
        self.vocab = ItemVocab(movie_ids)
        self.max_len = max_len
        self.metrics = metrics or {}
        self._text_encoder = text_encoder
        self.text_cache_dir = text_cache_dir

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", text_encoder=None,
                        text_cache_dir: str | Path | None = None) -> Retriever:
        saved = torch.load(local_copy(path), map_location="cpu", weights_only=False)
        model = load_model(saved).to(device).eval()
        return cls(model, saved["movie_ids"], saved["max_len"], saved.get("metrics"), text_encoder, text_cache_dir)

    @property
    def kind(self) -> str:
        return model_kind(self.model)

    @property
    def reads_dialogue(self) -> bool:
        return self.kind == "dialogue"

    @property
    def movie_ids(self) -> list[str]:
        return self.vocab.movie_ids

    @property
    def device(self) -> torch.device:
        return self.model.bias.device

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            from corpus_build.embed import Embedder
            from training.text_cache import TextVectorCache

            self._text_encoder = TextVectorCache(Embedder(self.model.text_model), self.text_cache_dir)
        return self._text_encoder

    def context_vectors(self, contexts: Sequence[Sequence[Mapping]]) -> np.ndarray:
        """[len(contexts), dim] dialogue vectors (the dialogue kind's text input)."""
        from training.dialogue_retriever import conversation_text

        config = self.model.config
        return self.text_encoder.encode([conversation_text(c, config.max_utterances, config.roles) for c in contexts])

    def _encode(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        rows = [self.vocab.encode(h) for h in histories]
        return torch.from_numpy(left_pad(rows, self.max_len)).to(self.device)

    def scores(self, histories: Sequence[Sequence[str]], contexts: Sequence[Sequence[Mapping]] | None = None) -> torch.Tensor:
        """[len(histories), N] scores over the item table, in ``movie_ids`` order (no masking).

        ``contexts`` (one conversation per history, ``[{role, text}, ...]``) is required by the dialogue
        kind and ignored by LRURec. Differentiable when called with grad enabled (the RL rounds); an
        LRURec turn with an empty or all-unknown history gets the item bias alone."""
        tokens = self._encode(histories)
        text = None
        if self.reads_dialogue:
            if contexts is None or len(contexts) != len(histories):
                raise ValueError("a dialogue-aware retriever needs one conversation context per history")
            text = torch.from_numpy(self.context_vectors(contexts)).to(self.device)
        return self.model.score_items(tokens, text)[:, 1:].float()

    def retrieve_batch(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Sequence[str]] | None = None,
        mask_history: bool = True,
        contexts: Sequence[Sequence[Mapping]] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (movie_id, score) per history, best first; history films and ``exclude`` never returned."""
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError("exclude needs one list per history")
        with torch.inference_mode():
            scores = self.scores(histories, contexts)
            masked_rows, masked_cols = [], []
            for row, history in enumerate(histories):
                banned = list(history) if mask_history else []
                banned += list(exclude[row]) if exclude is not None else []
                cols = [i - 1 for i in self.vocab.encode(banned)]
                masked_rows += [row] * len(cols)
                masked_cols += cols
            if masked_cols:
                scores[torch.tensor(masked_rows), torch.tensor(masked_cols)] = float("-inf")
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        results = []
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            results.append([(self.vocab.movie_ids[i], v) for i, v in zip(indices, values, strict=True) if v != float("-inf")])
        return results

    def retrieve(
        self, history_movie_ids: Sequence[str], k: int, exclude: Sequence[str] | None = None, mask_history: bool = True,
        context: Sequence[Mapping] | None = None,
    ) -> list[tuple[str, float]]:
        """Top-k (movie_id, score) for one history (and its conversation, for the dialogue kind), best first."""
        return self.retrieve_batch([history_movie_ids], k, None if exclude is None else [exclude], mask_history,
                                   None if context is None else [context])[0]
