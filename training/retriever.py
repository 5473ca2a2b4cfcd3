"""A trained LRURec as a retriever over movie_ids: candidates for the generator, scores for the RL rounds.

A retriever checkpoint (``export_retriever``) holds the model config, weights with the item table baked
into plain embeddings (a text-initialised table is projected once), the movie_id of every item row,
the maximum history length and the metrics it was saved with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from training.lrurec import LRURec, LRURecConfig
from training.sequences import ItemVocab, left_pad


def baked_state(model: LRURec) -> tuple[LRURecConfig, dict]:
    """Config and state dict of ``model`` with the item table as a plain embedding."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("items.text_proj.")}
    with torch.no_grad():
        state["items.token.weight"] = model.items.weight().detach().cpu().clone()
    config = LRURecConfig(**{**model.config.to_dict(), "text_dim": None})
    return config, state


def export_retriever(model: LRURec, movie_ids: Sequence[str], path: str | Path, max_len: int, metrics: dict | None = None) -> Path:
    """Write a retriever checkpoint atomically."""
    import os

    if len(movie_ids) != model.config.num_items:
        raise ValueError(f"{len(movie_ids)} movie_ids for a model of {model.config.num_items} items")
    config, state = baked_state(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(
        {"config": config.to_dict(), "state": state, "movie_ids": list(movie_ids), "max_len": max_len,
         "metrics": {k: float(v) for k, v in (metrics or {}).items()}},
        tmp,
    )
    os.replace(tmp, path)
    return path


class Retriever:
    """Ranks the whole item table for a history of movie_ids (history films masked by default)."""

    def __init__(self, model: LRURec, movie_ids: Sequence[str], max_len: int = 200, metrics: dict | None = None):
        self.model = model
        self.vocab = ItemVocab(movie_ids)
        self.max_len = max_len
        self.metrics = metrics or {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> Retriever:
        saved = torch.load(Path(path), map_location=device, weights_only=False)
        model = LRURec(LRURecConfig(**saved["config"]))
        model.load_state_dict(saved["state"])
        model.to(device).eval()
        return cls(model, saved["movie_ids"], saved["max_len"], saved.get("metrics"))

    @property
    def movie_ids(self) -> list[str]:
        return self.vocab.movie_ids

    @property
    def device(self) -> torch.device:
        return self.model.bias.device

    def _encode(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        rows = [self.vocab.encode(h) for h in histories]
        return torch.from_numpy(left_pad(rows, self.max_len)).to(self.device)

    def scores(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """[len(histories), N] scores over the item table, in ``movie_ids`` order (no masking).

        Differentiable when called with grad enabled (the RL rounds); an empty or all-unknown
        history gets the item bias alone.
        """
        tokens = self._encode(histories)
        hidden = torch.zeros(len(histories), self.model.config.hidden, device=self.device)
        has_history = tokens[:, -1] > 0
        if bool(has_history.any()):
            hidden = hidden.index_put((has_history.nonzero().squeeze(1),), self.model.encode_last(tokens[has_history]))
        weight = self.model.items.weight()
        return (hidden @ weight[1:].t() + self.model.bias[1:]).float()

    def retrieve_batch(
        self,
        histories: Sequence[Sequence[str]],
        k: int,
        exclude: Sequence[Sequence[str]] | None = None,
        mask_history: bool = True,
    ) -> list[list[tuple[str, float]]]:
        """Top-k (movie_id, score) per history, best first; history films and ``exclude`` never returned."""
        if exclude is not None and len(exclude) != len(histories):
            raise ValueError("exclude needs one list per history")
        with torch.inference_mode():
            scores = self.scores(histories)
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
        self, history_movie_ids: Sequence[str], k: int, exclude: Sequence[str] | None = None, mask_history: bool = True
    ) -> list[tuple[str, float]]:
        """Top-k (movie_id, score) for one history, best first."""
        return self.retrieve_batch([history_movie_ids], k, None if exclude is None else [exclude], mask_history)[0]
