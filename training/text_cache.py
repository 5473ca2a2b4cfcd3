"""Sentence vectors of arbitrary texts (dialogues, requests), cached on disk by a hash of model and text.

The dialogue-aware retriever embeds every conversation it trains on or answers with the same
sentence-transformers model as ``movie_vectors``; on this machine that costs ~15-80 texts/s, so each
text is embedded once and kept. The cache is a folder of ``.npz`` shards (keys: the first 16 bytes of
sha256(model, text); vectors: float32). New vectors go to a new shard written atomically, so adding
one text never rewrites the cache and a crashed write leaves the older shards intact; many small
shards are merged into one once they pile up.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from corpus_build.atomic import atomic_path
from corpus_build.storage import as_path, local_copy

KEY_BYTES = 16
MERGE_AT = 32  # shards; above this, a save merges them into one


def text_key(model: str, text: str) -> bytes:
    return hashlib.sha256(f"{model}\x00{text}".encode()).digest()[:KEY_BYTES]


class TextVectorCache:
    """``encode(texts)`` -> [n, dim] float32 unit vectors; known texts come from memory or disk.

    ``folder=None`` keeps the cache in memory only. ``embedder`` is a :class:`corpus_build.embed.Embedder`
    (or anything with ``model_name`` and ``encode``); it is only called for texts not seen before.
    """

    def __init__(self, embedder, folder: str | Path | None = None):
        self.embedder = embedder
        self.model = str(getattr(embedder, "model_name", type(embedder).__name__))
        self.folder = as_path(folder) if folder is not None else None  # a local folder or an object-store path
        self._vectors: dict[bytes, np.ndarray] = {}
        self.embedded = 0  # texts embedded by this object (cache misses)
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("*.npz")):
                self._load(shard)

    def _load(self, shard: Path) -> None:
        try:
            with np.load(local_copy(shard), allow_pickle=False) as saved:
                keys, vectors = saved["keys"], saved["vectors"]
        except (OSError, ValueError, KeyError, EOFError):  # a foreign or damaged file: its texts get re-embedded
            return
        for key, vector in zip(keys, vectors):
            self._vectors[key.tobytes()] = vector

    def __len__(self) -> int:
        return len(self._vectors)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        keys = [text_key(self.model, t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in self._vectors}
        if missing:
            vectors = np.asarray(self.embedder.encode(list(missing.values())), dtype=np.float32)
            fresh = dict(zip(missing, vectors))
            self._vectors.update(fresh)
            self.embedded += len(fresh)
            self._save(fresh)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys])

    def _save(self, fresh: dict[bytes, np.ndarray]) -> None:
        if self.folder is None or not fresh:
            return
        shards = sorted(self.folder.glob("*.npz"))
        if len(shards) >= MERGE_AT:  # merge everything known into one shard, then drop the old ones
            self._write(self.folder / f"merged-{uuid.uuid4().hex}.npz", self._vectors)
            for shard in shards:
                shard.unlink(missing_ok=True)
        else:
            self._write(self.folder / f"part-{uuid.uuid4().hex}.npz", fresh)

    @staticmethod
    def _write(path, entries: dict[bytes, np.ndarray]) -> None:
        keys = np.frombuffer(b"".join(entries), dtype=np.uint8).reshape(len(entries), KEY_BYTES)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:  # np.savez on a path would append ".npz" to the temp name
                np.savez(handle, keys=keys, vectors=np.stack(list(entries.values())).astype(np.float32))
                handle.flush()
                os.fsync(handle.fileno())
