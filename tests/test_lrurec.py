"""LRURec model: the parallel scan, the recurrent form, the fused loss and fitting a tiny dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.fit import TrainConfig, evaluate, fit, fused_linear_cross_entropy
from training.lrurec import Dropout, LRURec, LRURecConfig, last_state, linear_recurrence, sequential_recurrence
from training.sequences import eval_set, next_item_examples

torch.set_num_threads(1)


def _lambda(hidden: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    layer_nu = torch.rand(hidden, generator=gen, dtype=dtype) * 0.2 + 0.005  # |λ| in (0.82, 0.995)
    theta = torch.rand(hidden, generator=gen, dtype=dtype) * 2 * torch.pi
    return layer_nu, theta


@pytest.mark.parametrize("length", [1, 3, 8, 37, 200])
def test_parallel_scan_equals_sequential_recurrence(length):
    nu, theta = _lambda(32)
    gamma = torch.sqrt(1 - torch.exp(-2 * nu)).unsqueeze(-1)  # the model's input normalisation
    u = torch.randn(4, length, 32, 2, generator=torch.Generator().manual_seed(length)) * gamma
    diff = (linear_recurrence(u, nu, theta) - sequential_recurrence(u, nu, theta)).abs().max().item()
    assert diff < 1e-5


def test_scan_gradients_equal_autograd_through_the_loop():
    nu, theta = _lambda(8, torch.float64)
    u = torch.randn(3, 21, 8, 2, dtype=torch.float64, requires_grad=True)
    nu.requires_grad_(), theta.requires_grad_()
    weights = torch.randn(3, 21, 8, 2, dtype=torch.float64)
    fast = torch.autograd.grad((linear_recurrence(u, nu, theta) * weights).sum(), (u, nu, theta))
    slow = torch.autograd.grad((sequential_recurrence(u, nu, theta) * weights).sum(), (u, nu, theta))
    for a, b in zip(fast, slow, strict=True):
        assert torch.allclose(a, b, atol=1e-9)


def test_last_state_is_the_scan_at_the_last_position():
    nu, theta = _lambda(16)
    u = torch.randn(2, 64, 16, 2) * torch.sqrt(1 - torch.exp(-2 * nu)).unsqueeze(-1)
    assert (last_state(u, nu, theta) - linear_recurrence(u, nu, theta)[:, -1]).abs().max() < 1e-5


def test_inplace_scan_refuses_a_length_that_is_not_a_power_of_two():
    nu, theta = _lambda(4)
    with pytest.raises(ValueError, match="power of 2"):
        linear_recurrence(torch.zeros(1, 5, 4, 2), nu, theta, inplace=True)


def test_recurrent_step_equals_the_scan_at_every_position():
    torch.manual_seed(0)
    model = LRURec(LRURecConfig(num_items=40, hidden=16)).eval()
    tokens = torch.randint(1, 41, (5, 19))
    tokens[0, :10] = 0  # left padding
    tokens[3, :18] = 0
    with torch.no_grad():
        parallel, recurrent = model.encode(tokens), model.encode_recurrent(tokens)
    real = tokens > 0
    assert (parallel - recurrent)[real].abs().max() < 1e-5
    assert (model.encode_last(tokens) - parallel[:, -1]).abs().max() < 1e-5


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    model = LRURec(LRURecConfig(num_items=30, hidden=16)).eval()
    seq = torch.randint(1, 31, (1, 7))
    padded = torch.cat([torch.zeros(1, 9, dtype=torch.long), seq], dim=1)
    with torch.no_grad():
        assert (model.encode(seq)[0] - model.encode(padded)[0, 9:]).abs().max() < 1e-5


def test_text_initialised_items_start_from_the_projection():
    torch.manual_seed(0)
    text = torch.randn(11, 24)
    model = LRURec(LRURecConfig(num_items=10, hidden=8, text_dim=24), text_vectors=text)
    expected = model.items.text_proj(text)
    assert torch.allclose(model.items.weight(), expected)
    with pytest.raises(ValueError, match="num_items"):
        LRURec(LRURecConfig(num_items=12, hidden=8), text_vectors=text)


def test_dropout_rate_and_eval_identity():
    torch.manual_seed(0)
    drop = Dropout(0.2)
    x = torch.ones(200_000)
    y = drop(x)
    assert abs((y > 0).float().mean().item() - 0.8) < 0.01
    assert y[y > 0].allclose(torch.tensor(1.25))
    assert torch.equal(drop.eval()(x), x)


def test_fused_cross_entropy_equals_full_softmax_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(300, 16, generator=gen, requires_grad=True)
    weight = torch.randn(50, 16, generator=gen, requires_grad=True)
    bias = torch.randn(50, generator=gen, requires_grad=True)
    targets = torch.randint(0, 50, (300,), generator=gen)
    fused = fused_linear_cross_entropy(hidden, weight, bias, targets, chunk=64)
    grads = torch.autograd.grad(fused, (hidden, weight, bias))
    reference = F.cross_entropy(hidden @ weight.t() + bias, targets)
    ref_grads = torch.autograd.grad(reference, (hidden, weight, bias))
    assert abs(fused.item() - reference.item()) < 1e-5
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _cyclic_sequences(num_items: int, users: int, length: int, seed: int = 0) -> list[list[int]]:
    """Each user walks the cycle 1 -> 2 -> ... -> num_items -> 1 from a random start."""
    rng = np.random.default_rng(seed)
    return [[(int(s) + t) % num_items + 1 for t in range(length)] for s in rng.integers(0, num_items, users)]


@pytest.mark.slow
def test_tiny_dataset_is_fitted_to_near_perfect_recall_at_1(tmp_path):
    sequences = _cyclic_sequences(num_items=12, users=64, length=10)
    train = [s[:-1] for s in sequences]
    val = eval_set(train, [[s[-1]] for s in sequences], max_len=16)
    torch.manual_seed(0)
    model = LRURec(LRURecConfig(num_items=12, hidden=16, dropout=0.0, attn_dropout=0.0))
    config = TrainConfig(max_len=16, batch_size=32, lr=1e-2, epochs=40, patience=40, threads=1, progress=False, ks=(1, 10))
    fit(model, next_item_examples(train, 16), val, config, tmp_path, resume=False, log=lambda _: None)
    assert evaluate(model, val, ks=(1,))["Recall@1"] >= 0.95
