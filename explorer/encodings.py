"""Positional encodings, one module per kind, chosen once by name from ``ENCODINGS``.

Each module offers three hooks the model calls; the base class makes each a no-op, so a kind
overrides only what it does:
- ``embed(T)``: a ``(T, C)`` table added to the token embeddings (sinusoidal, learned);
- ``rotate(q, k)``: queries and keys rotated by position (RoPE);
- ``slopes()``: per-head slopes of a linear distance penalty on the scores (ALiBi).

Papers: sinusoidal and learned absolute positions (Vaswani et al. 2017; GPT-2); RoPE (Su et al.
2021, "RoFormer"); ALiBi (Press et al. 2022, "Train Short, Test Long").
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .registry import Registry


class PositionTooFar(ValueError):
    """A position beyond what an encoding can represent (a learned table's last row)."""


class PositionalEncoding(nn.Module):
    needs_even_head_dim = False  # rotates pairs of dimensions inside each head
    biases_scores = False  # adds a bias to each query-key score (needs explicit scores)
    extrapolates = True  # can encode positions past the training context

    def __init__(self, config):
        super().__init__()

    def embed(self, T: int, device=None) -> Optional[Tensor]:
        return None  # (T, C) or nothing

    def rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return q, k  # (B, nh, T, hs) each

    def slopes(self) -> Optional[Tensor]:
        return None  # (nh,) or nothing


ENCODINGS: Registry[type[PositionalEncoding]] = Registry("positional encoding")


def sinusoidal_table(T: int, C: int, device=None) -> Tensor:
    """``PE[p, 2i] = sin(p / 10000^(2i/C))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/C))``: (T, C)."""
    pos = torch.arange(T, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, C, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / C))
    table = torch.zeros(T, C, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : C // 2]
    return table


def rope_angles(T: int, hs: int, base: float = 10000.0, device=None) -> Tensor:
    """RoPE's rotation angle ``p * theta_i`` for position p and plane i, ``theta_i = base^(-2i/hs)``: (T, hs/2)."""
    theta = base ** (-torch.arange(0, hs, 2, dtype=torch.float32, device=device) / hs)
    return torch.arange(T, dtype=torch.float32, device=device)[:, None] * theta


def apply_rope(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate each pair of dimensions ``(x[2i], x[2i+1])`` of ``x`` (..., T, hs) by ``angles`` (T, hs/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


def alibi_slopes(n_head: int) -> Tensor:
    """ALiBi's head slopes: the geometric sequence ``2^(-8/n), 2^(-16/n), ...`` for n a power of two;
    otherwise the slopes of the nearest power below, then every other slope of the next power up
    (Press et al. 2022, the paper's reference code)."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        values = powers(n_head)
    else:
        low = 2 ** math.floor(math.log2(n_head))
        values = powers(low) + powers(2 * low)[0::2][: n_head - low]
    return torch.tensor(values, dtype=torch.float32)


@ENCODINGS.register("none")
class NoEncoding(PositionalEncoding):
    """No position signal: a causal model can still count how many tokens it sees."""


@ENCODINGS.register("sinusoidal")
class SinusoidalEncoding(PositionalEncoding):
    def __init__(self, config):
        super().__init__(config)
        self.n_embd = config.n_embd
        self.scale = 0.1  # keeps positions from drowning the small (std 0.02) token embeddings

    def embed(self, T, device=None):
        return self.scale * sinusoidal_table(T, self.n_embd, device)


@ENCODINGS.register("learned")
class LearnedEncoding(PositionalEncoding):
    extrapolates = False

    def __init__(self, config):
        super().__init__(config)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)

    def embed(self, T, device=None):
        rows = self.wpe.num_embeddings
        if T > rows:
            raise PositionTooFar(
                f"learned position embeddings have {rows} rows (positions 0-{rows - 1}); this sequence needs "
                f"{T}. A learned table cannot represent positions it never had: shorten the input or "
                f"use an encoding that extrapolates (sinusoidal, rope, alibi, none)"
            )
        return self.wpe.weight[:T]


@ENCODINGS.register("rope")
class RotaryEncoding(PositionalEncoding):
    needs_even_head_dim = True

    def rotate(self, q, k):
        angles = rope_angles(q.size(-2), q.size(-1), device=q.device)
        return apply_rope(q, angles), apply_rope(k, angles)


@ENCODINGS.register("alibi")
class ALiBiEncoding(PositionalEncoding):
    biases_scores = True

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("_slopes", alibi_slopes(config.n_head), persistent=False)

    def slopes(self):
        return self._slopes
