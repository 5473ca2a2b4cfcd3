"""The dialogue-aware retriever: what the user said, fused with the films mentioned so far.

A history-only LRURec sees only the mentioned films, so a turn that names none ("something scary for
tonight") gets the popularity list. This retriever also reads the conversation: its text (both sides'
utterances, mentioned films rendered as "Title (Year)") is embedded with the same sentence-transformers
model as ``movie_vectors`` and scored against every film's text vector. Films stay tied to their text:

    u   = the dialogue's text vector (unit length),            t_i = film i's text vector (movie_vectors)
    h   = LRURec state over the mentioned films (0 when none)  e_i = P t_i + r_i   (LRURec's item table)
    score_i = s * (u + D u) . t_i   +   (h + W u) . e_i   +   b_i   +   c * log(1 + sum_m cos(m, i))

- text match: ``s (I + D)`` is a query adapter on the fixed text space (D starts at 0, so training starts
  at the plain cosine); a film no training turn ever named keeps its own text vector;
- collaborative match: the LRU state of the mentioned films (the paper's retriever) plus the dialogue
  projected into the same space (``W``, starts at 0), against items that are a projection of their text
  plus a residual (``r_i`` starts at 0, weight-decayed, so unseen films stay near their text);
- ``b_i``: item bias, initialised from log popularity in the learning pool, plus ``w . f_i``: a learned
  weighting of fixed film features (log MovieLens popularity, release-year buckets), so a film no
  dialogue ever named is still placed by how widely watched and how recent it is;
- co-mentions: films named in the same conversations as the mentioned films m (cosine over the dialogues the
  retriever learned from), a fixed prior at weight ``c`` set after training (:func:`co_mention_cosines`). The
  history encoder sees the same dialogues but, 64 wide, does not hold these pairwise facts: on the mirror
  the prior lifts ReDial test Recall@20 from 0.229 to 0.251 (docs/evaluation.md).

The query is ``[s (u + D u), h + W u]`` and the item table ``[t_i, e_i]``, so ``logits(query)`` has the
same shape as LRURec's; :meth:`score_items` adds the co-mention prior, and the RL rounds score both
retrievers alike through it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from training.lrurec import LRURec, LRURecConfig

# How a conversation becomes the text that is embedded: the last utterances of both sides.
DEFAULT_MAX_UTTERANCES = 6
ROLE_PREFIX = {"seeker": "User", "user": "User", "recommender": "Recommender", "assistant": "Recommender"}


def conversation_text(context: Sequence[Mapping], max_utterances: int = DEFAULT_MAX_UTTERANCES, roles: bool = False) -> str:
    """The text of a conversation so far: its last ``max_utterances`` utterances, oldest first.

    Mentioned films are already rendered "Title (Year)" in ``conversation_turns`` contexts. Keeping the
    latest utterances (not the first) matters: the encoder truncates long inputs at the end."""
    kept = list(context)[-max_utterances:] if max_utterances else list(context)
    parts = []
    for turn in kept:
        text = (turn.get("text") or "").strip()
        if not text:
            continue
        role = ROLE_PREFIX.get(str(turn.get("role", "")).lower(), str(turn.get("role", "")))
        parts.append(f"{role}: {text}" if roles and role else text)
    return " ".join(parts) or "Any good movie?"


@dataclass
class DialogueRetrieverConfig:
    num_items: int
    text_dim: int = 384
    hidden: int = 64  # LRURec hidden size (the collaborative part)
    blocks: int = 2
    dropout: float = 0.2
    text_scale: float = 10.0  # initial s: cosine x 10 against log-popularity biases, as the dense baseline
    history: bool = True  # False: no LRU state (text and bias only; an ablation)
    max_utterances: int = DEFAULT_MAX_UTTERANCES
    roles: bool = False
    history_text: bool = False  # also match films against the mean text vector of the mentioned films
    text_dropout: float = 0.0  # dropout on the dialogue vector while training
    item_features: int = 0  # width of the fixed film features f_i (0: none)
    co_mention_weight: float = 8.0  # c; 0 leaves the prior out (best on the SFT validation slice and the gate)
    co_mention_pairs: int = 0  # stored (film, film) cosines; set by set_co_mentions

    def to_dict(self) -> dict:
        return asdict(self)

    def lrurec_config(self) -> LRURecConfig:
        return LRURecConfig(num_items=self.num_items, hidden=self.hidden, blocks=self.blocks, dropout=self.dropout,
                            attn_dropout=self.dropout, text_dim=self.text_dim)


class DialogueRetriever(nn.Module):
    reads_dialogue = True

    def __init__(self, config: DialogueRetrieverConfig, text_vectors: torch.Tensor,
                 item_features: torch.Tensor | None = None):
        """``text_vectors``: [num_items + 1, text_dim] film text vectors, row 0 (padding) zeros;
        ``item_features``: [num_items + 1, config.item_features] (see :func:`film_features`)."""
        super().__init__()
        self.config = config
        self.lru = LRURec(config.lrurec_config(), text_vectors)
        self.query_delta = nn.Linear(config.text_dim, config.text_dim, bias=False)  # D
        self.text_to_history = nn.Linear(config.text_dim, config.hidden, bias=False)  # W
        self.log_text_scale = nn.Parameter(torch.tensor(math.log(config.text_scale)))
        self.history_text = nn.Linear(config.text_dim, config.text_dim, bias=False) if config.history_text else None
        features = torch.zeros(config.num_items + 1, config.item_features) if item_features is None else item_features
        if features.shape != (config.num_items + 1, config.item_features):
            raise ValueError(f"item_features must be [{config.num_items + 1}, {config.item_features}], got {tuple(features.shape)}")
        self.register_buffer("item_features", features.float())
        self.feature_weights = nn.Parameter(torch.zeros(config.item_features))
        self.register_buffer("co_mention_index", torch.zeros(2, config.co_mention_pairs, dtype=torch.long))
        self.register_buffer("co_mention_value", torch.zeros(config.co_mention_pairs))
        with torch.no_grad():
            self.query_delta.weight.zero_()
            self.text_to_history.weight.zero_()
            if self.history_text is not None:
                self.history_text.weight.zero_()

    @property
    def items(self):
        return self.lru.items

    @property
    def bias(self) -> nn.Parameter:
        return self.lru.bias

    @property
    def text(self) -> torch.Tensor:
        return self.lru.items.text

    def query(self, tokens: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """[B, text_dim + hidden] query for left-padded mentioned films ``tokens`` [B, L] and dialogue
        vectors ``text`` [B, text_dim]."""
        if text is None:
            raise ValueError("the dialogue-aware retriever needs the dialogue's text vectors")
        text = nn.functional.dropout(text.float(), self.config.text_dropout, self.training)
        textual = text + self.query_delta(text)
        if self.history_text is not None and tokens.shape[1]:
            mentioned = self.text[tokens]  # [B, L, dim]; padding rows are zeros
            count = (tokens > 0).sum(1, keepdim=True).clamp(min=1)
            textual = textual + self.history_text(mentioned.sum(1) / count)
        textual = self.log_text_scale.exp() * textual
        collaborative = self.text_to_history(text)
        if self.config.history:
            collaborative = collaborative + self.lru.query(tokens)
        return torch.cat([textual, collaborative], dim=1)

    def logits(self, query: torch.Tensor) -> torch.Tensor:
        """[B, num_items + 1] scores (column 0 is padding), without the co-mention prior."""
        textual, collaborative = query.split([self.config.text_dim, self.config.hidden], dim=1)
        return textual @ self.text.t() + collaborative @ self.items.weight().t() + self.item_bias()

    def score_items(self, tokens: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """[B, num_items + 1] scores of every film for mentioned films ``tokens`` and dialogue vectors ``text``."""
        logits = self.logits(self.query(tokens, text))
        prior = self.co_mention_prior(tokens)
        return logits if prior is None else logits + prior

    def set_co_mentions(self, index: torch.Tensor, value: torch.Tensor) -> None:
        """Store the (film, film) cosines of :func:`co_mention_cosines` (index [2, P], value [P])."""
        self.co_mention_index = index.long().to(self.co_mention_index.device)
        self.co_mention_value = value.float().to(self.co_mention_value.device)
        self.config.co_mention_pairs = int(value.numel())

    def co_mention_prior(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """[B, num_items + 1] c * log(1 + sum over the row's mentioned films m of cos(m, i)); None when off."""
        if not (self.config.co_mention_weight and self.config.co_mention_pairs and tokens.shape[1]):
            return None
        size = self.config.num_items + 1
        rows, columns = (tokens > 0).nonzero(as_tuple=True)
        mentioned = torch.sparse_coo_tensor(torch.stack([rows, tokens[rows, columns]]),
                                            torch.ones(len(rows), device=tokens.device), (tokens.shape[0], size),
                                            check_invariants=False)
        cosines = torch.sparse_coo_tensor(self.co_mention_index, self.co_mention_value, (size, size),
                                          check_invariants=False, is_coalesced=True)  # co_mention_cosines sorts them
        return self.config.co_mention_weight * torch.log1p(torch.sparse.mm(mentioned, cosines).to_dense())

    def item_bias(self) -> torch.Tensor:
        """[num_items + 1] b_i + w . f_i."""
        return self.bias + self.item_features @ self.feature_weights


def co_mention_cosines(dialogues: Iterable[Iterable[int]], num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Films named in the same conversations: index [2, P] and value [P] of the cosine
    ``both(a, b) / sqrt(n_a n_b)`` over the pairs that co-occur (``n_a``: conversations naming film a; item
    indices 1..num_items, each conversation's films counted once, a film never paired with itself)."""
    import numpy as np

    size = num_items + 1
    keys, counts = [], np.zeros(size, dtype=np.float64)
    for films in dialogues:
        unique = np.unique(np.fromiter(films, dtype=np.int64))
        unique = unique[unique > 0]
        counts[unique] += 1
        if len(unique) > 1:
            a, b = np.meshgrid(unique, unique, indexing="ij")
            off_diagonal = a != b
            keys.append(a[off_diagonal] * size + b[off_diagonal])
    if not keys:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0)
    pairs, both = np.unique(np.concatenate(keys), return_counts=True)
    first, second = pairs // size, pairs % size
    cosine = both / np.sqrt(counts[first] * counts[second])
    return torch.from_numpy(np.stack([first, second])), torch.from_numpy(cosine.astype(np.float32))


YEAR_EDGES = (1960, 1970, 1980, 1990, 2000, 2005, 2010, 2015, 2020)  # release-year buckets of film_features


def film_features(years: Sequence[int | None], watch_counts) -> torch.Tensor:
    """[N + 1, 2 + len(YEAR_EDGES) + 1] fixed film features (row 0: padding): log(1 + MovieLens ratings),
    an unknown-year flag and a one-hot release-year bucket."""
    import numpy as np

    years_array = np.array([y if y is not None else -1 for y in years])
    buckets = np.searchsorted(np.array(YEAR_EDGES), years_array, side="right")
    features = np.zeros((len(years_array) + 1, 2 + len(YEAR_EDGES) + 1), dtype=np.float32)
    features[1:, 0] = np.log1p(np.asarray(watch_counts, dtype=np.float32))
    features[1:, 1] = years_array < 0
    features[1 + np.arange(len(years_array)), 2 + buckets] = years_array >= 0
    return torch.from_numpy(features)
