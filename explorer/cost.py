"""Attention cost in theory: FLOPs and memory as functions of the sequence length.

Counts are for one attention layer's core (scores and the weighted sum of values; the q/k/v
projections are the same for every kind), summed over heads, for one sequence, as the kernels in
``explorer.attention`` compute them: each kind states how many keys each query is scored against
(``S``, the length padded to whole blocks included), so ``FLOPs = 4 * nh * hs * T * S``. "FLOPs"
counts the matrix products, masked-out scores included (a kernel computes them before the mask
throws them away); ``useful_fraction`` says how much of that work the causal pattern uses. The
tests count the kernels' products with ``torch.utils.flop_counter.FlopCounterMode`` and compare.
"""
from __future__ import annotations

from .attention import ATTENTION
from .config import ModelConfig


def attention_flops(config: ModelConfig, T: int) -> float:
    """FLOPs of one layer's attention core on a sequence of length ``T`` (all heads)."""
    return ATTENTION[config.attention].flops(config, T)


def model_attention_flops(config: ModelConfig, T: int) -> float:
    return config.n_layer * attention_flops(config, T)


def useful_fraction(config: ModelConfig, T: int) -> float:
    """The share of the counted work that the causal pattern uses."""
    return ATTENTION[config.attention].useful_fraction(config, T)
