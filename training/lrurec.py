"""LRURec (Yue et al., WSDM 2024): a linear recurrent unit sequential recommender, real-valued.

The LRU layer keeps a diagonal complex state ``h_t = Λ h_{t-1} + γ ⊙ B u_t`` with
``Λ = diag(exp(-exp(ν) + iθ))`` and outputs ``Re(C h_t)``. Complex numbers are held as real pairs
(``[..., H, 2]``: real, imaginary) and all projections are real matrices, which is much cheaper on CPU
than complex modules; only the scan's fused multiply-add views the pairs as complex (zero copy). Training runs the recurrence as a parallel scan in ``log2(L)`` in-place passes
(custom autograd: the backward is the same scan run backwards with conj(Λ)); inference can also run
one O(1) step at a time (:meth:`LRURec.step`).

Padding id is 0 and sequences are left padded; padded steps contribute nothing to the state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LRURecConfig:
    num_items: int  # items are 1..num_items; 0 is padding
    hidden: int = 64
    blocks: int = 2
    dropout: float = 0.2
    attn_dropout: float = 0.2  # dropout on the LRU layer output (the paper's "attention" dropout)
    r_min: float = 0.8
    r_max: float = 0.99
    text_dim: int | None = None  # set when items are initialised from text vectors

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- the scan


def _lambda_powers(nu: torch.Tensor, theta: torch.Tensor, count: int) -> torch.Tensor:
    """λ^k for k = 1..count as a complex view [count, H] of real pairs."""
    k = torch.arange(1, count + 1, dtype=nu.dtype, device=nu.device).unsqueeze(1)
    modulus = torch.exp(-k * nu)
    angle = k * theta
    pairs = torch.stack((modulus * torch.cos(angle), modulus * torch.sin(angle)), dim=-1)
    return torch.view_as_complex(pairs)


def _scan_inplace(h: torch.Tensor, powers: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In place on h [B, L, H] (complex view of real pairs, L a power of 2):
    forward  h[t] += Σ_{s<t} λ^(t-s) h[s];  reverse  h[t] += Σ_{s>t} λ^(s-t) h[s].

    Up-sweep over blocks of size 2, 4, ..., L: one half of every block receives λ^(1..l/2) times
    the (already complete) boundary state of the other half: log2(L) fused multiply-adds.
    """
    batch, length, hidden = h.shape
    size = 2
    while size <= length:
        half = size // 2
        blocks = h.view(batch, length // size, size, hidden)
        if reverse:
            blocks[:, :, :half].addcmul_(blocks[:, :, half : half + 1], powers[:half].flip(0))
        else:
            blocks[:, :, half:].addcmul_(blocks[:, :, half - 1 : half], powers[:half])
        size *= 2
    return h


def pow2_ceil(length: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(length, 1))))


def _pad_pow2(x: torch.Tensor, left: bool) -> torch.Tensor:
    """A copy of x [B, L, H, 2] zero padded along L to a power of 2 (on the left or right)."""
    length = x.shape[1]
    padded = pow2_ceil(length)
    if padded == length:
        return x.clone()
    extra = padded - length
    return F.pad(x, (0, 0, 0, 0, extra, 0) if left else (0, 0, 0, 0, 0, extra))


class _LinearRecurrence(torch.autograd.Function):
    """h_t = λ h_{t-1} + u_t along dim 1 of u [B, L, H, 2] (real pairs); λ = exp(-ν + iθ) per channel.

    With ``inplace`` (u contiguous, L a power of 2, u owned by the caller) u itself becomes h: no copy.
    """

    @staticmethod
    def forward(ctx, u, nu, theta, inplace):
        length = u.shape[1]
        if inplace:
            h = u
            ctx.mark_dirty(u)
        else:
            h = _pad_pow2(u.contiguous(), left=True)
        _scan_inplace(torch.view_as_complex(h), _lambda_powers(nu, theta, max(h.shape[1] // 2, 1)))
        if h.shape[1] != length:
            h = h[:, h.shape[1] - length :]
        ctx.save_for_backward(h, nu, theta)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        h, nu, theta = ctx.saved_tensors
        length = h.shape[1]
        # adjoint: δ_t = g_t + conj(λ) δ_{t+1}: the reverse scan with conj(λ)
        delta = _pad_pow2(grad_h.contiguous(), left=False)
        powers = _lambda_powers(nu, -theta, max(delta.shape[1] // 2, 1))
        _scan_inplace(torch.view_as_complex(delta), powers, reverse=True)
        delta = delta[:, :length]
        # dL/dλ = Σ_t δ_t conj(h_{t-1}) (complex form of the real-pair gradient); chain rule to ν, θ
        d_c, h_c = torch.view_as_complex(delta), torch.view_as_complex(h)
        g_lam = (d_c[:, 1:] * h_c[:, :-1].conj()).sum(dim=(0, 1))
        lam = torch.exp(torch.complex(-nu, theta))
        # ∂λ/∂ν = -λ, ∂λ/∂θ = iλ; real gradient = Re(conj(∂λ/∂x) g)
        grad_nu = -(g_lam * lam.conj()).real
        grad_theta = (g_lam * (1j * lam).conj()).real
        return delta, grad_nu, grad_theta, None


def linear_recurrence(u: torch.Tensor, nu: torch.Tensor, theta: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Parallel scan of h_t = λ h_{t-1} + u_t; u is [B, L, H, 2] (real, imaginary), λ = exp(-ν + iθ).

    ``inplace=True`` overwrites u (which must be contiguous with L a power of 2) with h.
    """
    if inplace and (not u.is_contiguous() or pow2_ceil(u.shape[1]) != u.shape[1]):
        raise ValueError("inplace scan needs a contiguous u whose length is a power of 2")
    return _LinearRecurrence.apply(u, nu, theta, inplace)


def last_state(u: torch.Tensor, nu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """h at the last position only, Σ_t λ^(L-1-t) u_t, as [B, H, 2]: one pass instead of a scan."""
    length = u.shape[1]
    k = torch.arange(length - 1, -1, -1, dtype=nu.dtype, device=nu.device).unsqueeze(1)
    modulus, angle = torch.exp(-k * nu), k * theta
    powers = torch.view_as_complex(torch.stack((modulus * torch.cos(angle), modulus * torch.sin(angle)), dim=-1))
    h = (torch.view_as_complex(u.contiguous()) * powers).sum(dim=1)  # [B, H]
    return torch.view_as_real(h)


def sequential_recurrence(u: torch.Tensor, nu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Reference: the same recurrence with a Python loop over time (tests only)."""
    lam = torch.exp(torch.complex(-nu, theta))
    x = torch.complex(u[..., 0], u[..., 1])
    state = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        state = lam * state + x[:, t]
        out.append(state)
    h = torch.stack(out, dim=1)
    return torch.stack((h.real, h.imag), dim=-1)


# ---------------------------------------------------------------- layers


class Dropout(nn.Module):
    """Inverted dropout. On CPU the keep mask comes from 16-bit slices of 64-bit random words (one
    generator call per 4 elements), ~8x faster than ``bernoulli_``; drop probability round(p*2^16)/2^16."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self._threshold = round(p * 65536) - 32768  # int16 values below this are dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        count = x.numel()
        words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
        keep = words.view(torch.int16)[:count].view(x.shape) >= self._threshold
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


@dataclass
class Packing:
    """Where the real (non-padding) positions of a [batch, length] id grid are, flattened row-major;
    ``grid_index`` places them in a [batch, grid_length] grid left padded to a power of 2 (the scan's)."""

    index: torch.Tensor
    grid_index: torch.Tensor
    batch: int
    length: int
    grid_length: int

    @classmethod
    def of(cls, tokens: torch.Tensor) -> Packing:
        batch, length = tokens.shape
        grid_length = pow2_ceil(length)
        index = torch.nonzero(tokens.reshape(-1) > 0).squeeze(1)
        grid_index = index + (index // length) * (grid_length - length) + (grid_length - length)
        return cls(index, grid_index, batch, length, grid_length)

    def pack(self, grid: torch.Tensor) -> torch.Tensor:
        return grid.reshape(self.batch * self.length, *grid.shape[2:])[self.index]

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        out = packed.new_zeros(self.batch * self.length, *packed.shape[1:]).index_copy_(0, self.index, packed)
        return out.view(self.batch, self.length, *packed.shape[1:])


class LRULayer(nn.Module):
    """One LRU: input projection B (real -> complex), diagonal recurrence, output Re(C h), residual + LayerNorm."""

    def __init__(self, d_model: int, dropout: float, r_min: float = 0.8, r_max: float = 0.99):
        super().__init__()
        self.state_size = 2 * d_model
        # ring initialisation: |λ| uniform on the ring [r_min, r_max] (in area), phase in [0, 2π)
        u1, u2 = torch.rand(self.state_size), torch.rand(self.state_size)
        nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = torch.log(u2 * 2 * math.pi)
        gamma_log = torch.log(torch.sqrt(1 - torch.exp(-torch.exp(nu_log)) ** 2))
        self.params_log = nn.Parameter(torch.stack((nu_log, theta_log, gamma_log)))
        self.in_proj = nn.Linear(d_model, 2 * self.state_size)  # B: (re, im) rows per state channel
        self.out_proj = nn.Linear(2 * self.state_size, d_model)  # Re(C h) = [C_re, -C_im] . (h_re, h_im)
        self.dropout = Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model)

    def recurrence_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nu, theta, gamma = torch.exp(self.params_log.float())
        return nu, theta, gamma

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        _, _, gamma = self.recurrence_params()
        return self.in_proj(x).float().unflatten(-1, (self.state_size, 2)) * gamma.unsqueeze(-1)

    def _output(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.out_proj(h.flatten(-2))
        return self.layer_norm(self.dropout(y) + x)

    def forward(self, x: torch.Tensor, packing: Packing, last_only: bool = False) -> torch.Tensor:
        """x: [M, D] states of the M real (non-padding) positions, in ``packing`` order.

        ``last_only``: return [B, D] for the last column only (every row must end with a real item).
        """
        nu, theta, _ = self.recurrence_params()
        u = self._input(x)
        # the scan runs on the left-padded power-of-2 grid; padding holds 0, so it adds nothing to h
        grid = u.new_zeros(packing.batch * packing.grid_length, self.state_size, 2)
        grid.index_copy_(0, packing.grid_index, u)
        grid = grid.view(packing.batch, packing.grid_length, self.state_size, 2)
        if last_only:
            last_rows = packing.index.new_tensor([packing.length - 1]) + torch.arange(packing.batch, device=x.device) * packing.length
            x_last = x[torch.searchsorted(packing.index, last_rows)]
            return self._output(last_state(grid, nu, theta), x_last)
        h = linear_recurrence(grid, nu, theta, inplace=True)
        return self._output(h.view(-1, self.state_size, 2).index_select(0, packing.grid_index), x)

    def step(self, x_t: torch.Tensor, mask_t: torch.Tensor | None, state: torch.Tensor):
        """One recurrent step: x_t [B, D], state [B, H, 2] -> (output [B, D], new state)."""
        nu, theta, _ = self.recurrence_params()
        u = self._input(x_t)
        if mask_t is not None:
            u = u * mask_t.to(u.dtype).view(-1, 1, 1)
        lam_re, lam_im = torch.exp(-nu) * torch.cos(theta), torch.exp(-nu) * torch.sin(theta)
        s_re, s_im = state[..., 0], state[..., 1]
        new_state = torch.stack((lam_re * s_re - lam_im * s_im, lam_im * s_re + lam_re * s_im), dim=-1) + u
        return self._output(new_state, x_t), new_state


class FeedForward(nn.Module):
    """Position-wise feed-forward (4x, GELU) with residual + LayerNorm."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(d_model, 4 * d_model)
        self.w_2 = nn.Linear(4 * d_model, d_model)
        self.dropout = Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.dropout(F.gelu(self.w_1(x)))
        return self.layer_norm(self.dropout(self.w_2(inner)) + x)


class LRUBlock(nn.Module):
    def __init__(self, config: LRURecConfig):
        super().__init__()
        self.lru_layer = LRULayer(config.hidden, config.attn_dropout, config.r_min, config.r_max)
        self.feed_forward = FeedForward(config.hidden, config.dropout)

    def forward(self, x, packing, last_only: bool = False):
        return self.feed_forward(self.lru_layer(x, packing, last_only))


class ItemTable(nn.Module):
    """Item embeddings, tied with the output layer: free vectors, or text vectors through a learned
    projection (plus a free correction initialised at zero). Row 0 is padding."""

    def __init__(self, num_items: int, hidden: int, text_vectors: torch.Tensor | None = None):
        super().__init__()
        self.num_rows = num_items + 1
        if text_vectors is None:
            self.token = nn.Embedding(self.num_rows, hidden)
            self.text_proj = None
        else:
            if text_vectors.shape[0] != self.num_rows:
                raise ValueError(
                    f"text_vectors has {text_vectors.shape[0]} rows, expected num_items + 1 = {self.num_rows}"
                )
            self.register_buffer("text", text_vectors.float(), persistent=False)
            self.text_proj = nn.Linear(text_vectors.shape[1], hidden)
            self.token = nn.Embedding(self.num_rows, hidden)

    def reset_correction(self) -> None:
        if self.text_proj is not None:
            with torch.no_grad():
                self.token.weight.zero_()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.text_proj is None:
            return self.token(ids)
        return self.text_proj(self.text[ids]) + self.token(ids)

    def weight(self) -> torch.Tensor:
        """The whole table [num_items + 1, hidden]."""
        if self.text_proj is None:
            return self.token.weight
        return self.text_proj(self.text) + self.token.weight


class LRURec(nn.Module):
    """LRURec: item embedding -> dropout -> LayerNorm -> blocks x (LRU, FFN) -> tied output layer."""

    reads_dialogue = False  # the paper's retriever: the films mentioned so far, not the conversation

    def __init__(self, config: LRURecConfig, text_vectors: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        self.items = ItemTable(config.num_items, config.hidden, text_vectors)
        self.embed_dropout = Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(config.hidden)
        self.blocks = nn.ModuleList(LRUBlock(config) for _ in range(config.blocks))
        self.bias = nn.Parameter(torch.zeros(config.num_items + 1))
        self._truncated_normal_init()
        self.items.reset_correction()

    def _truncated_normal_init(self, std: float = 0.02) -> None:
        """As the paper's code: N(0, 0.02²) truncated at ±2σ, except LayerNorms and the λ/γ parameters."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                if "layer_norm" in name or "params_log" in name:
                    continue
                nn.init.trunc_normal_(param, mean=0.0, std=std, a=-2 * std, b=2 * std)

    def encode_packed(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Packing]:
        """Hidden states [M, D] of the M non-padding positions of ``tokens`` [B, L] (parallel scan).

        Everything position-wise (embedding, projections, feed-forward, LayerNorm) runs on real
        positions only; outputs at real positions are exactly those of the padded computation.
        """
        packing = Packing.of(tokens)
        x = self.layer_norm(self.embed_dropout(self.items.embed(tokens.reshape(-1)[packing.index])))
        for block in self.blocks:
            x = block(x, packing)
        return x, packing

    def encode_last(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden state [B, D] at the last column of left-padded ``tokens`` (every row's last id real);
        the last block evaluates only that position."""
        if not bool((tokens[:, -1] > 0).all()):
            raise ValueError("encode_last needs every row to end with a real item (left padding)")
        packing = Packing.of(tokens)
        x = self.layer_norm(self.embed_dropout(self.items.embed(tokens.reshape(-1)[packing.index])))
        for i, block in enumerate(self.blocks):
            x = block(x, packing, last_only=i == len(self.blocks) - 1)
        return x

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for left-padded item ids [B, L]; zeros at padding positions."""
        x, packing = self.encode_packed(tokens)
        return packing.unpack(x)

    def query(self, tokens: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """[B, D] state after the last film of each left-padded row (zeros for a row with no film): the
        retriever interface shared with the dialogue-aware retriever, which also reads ``text``."""
        hidden = torch.zeros(tokens.shape[0], self.config.hidden, device=tokens.device)
        rows = tokens[:, -1] > 0 if tokens.shape[1] else torch.zeros(tokens.shape[0], dtype=torch.bool)
        if bool(rows.any()):
            hidden = hidden.index_put((rows.nonzero().squeeze(1),), self.encode_last(tokens[rows]).float())
        return hidden

    def logits(self, hidden: torch.Tensor, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of ``item_ids`` (default: the whole table, padding included) for hidden states."""
        if item_ids is None:
            return hidden @ self.items.weight().t() + self.bias
        return hidden @ self.items.embed(item_ids).t() + self.bias[item_ids]

    def score_items(self, tokens: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """[B, num_items + 1] scores of every film after each row's mentioned films (``text`` unused: the
        retriever interface shared with the dialogue-aware retriever)."""
        return self.logits(self.query(tokens))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encode(tokens))

    # --------------------------------------------------------- recurrent (O(1) per step) inference

    def init_state(self, batch: int, device=None) -> list[torch.Tensor]:
        size = 2 * self.config.hidden
        return [torch.zeros(batch, size, 2, device=device) for _ in self.blocks]

    def step(self, item_t: torch.Tensor, states: list[torch.Tensor]):
        """Feed one item per sequence ([B] ids; 0 = padding): returns (hidden [B, D], new states)."""
        mask = item_t > 0
        x = self.layer_norm(self.embed_dropout(self.items.embed(item_t)))
        new_states = []
        for block, state in zip(self.blocks, states, strict=True):
            y, new_state = block.lru_layer.step(x, mask, state)
            x = block.feed_forward(y)
            new_states.append(new_state)
        return x, new_states

    def encode_recurrent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`encode`, one step at a time (for incremental inference)."""
        states = self.init_state(tokens.shape[0], tokens.device)
        outputs = []
        for t in range(tokens.shape[1]):
            x, states = self.step(tokens[:, t], states)
            outputs.append(x)
        return torch.stack(outputs, dim=1)


NOT_DECAYED = ("bias", "layer_norm", "log_text_scale")  # the last: the dialogue retriever's text scale s


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as in the paper's code: no decay on biases and LayerNorms (nor on a learned scale)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(part in name for part in NOT_DECAYED) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
