"""Attention cost in theory: FLOPs and memory as functions of the sequence length.

Counts are for one attention layer's core (scores and the weighted sum of values; the q/k/v
projections are the same for every kind), summed over heads, for one sequence, as the kernels in
``explorer.attention`` compute them:
- ``softmax``: the whole ``T x T`` score matrix (a dense kernel pays for the masked half too);
- ``sliding_window`` / ``dynamic_window``: ``T x 2w`` (blocks of ``w`` queries against ``2w`` keys);
- ``block_sparse``: ``T x (b + g + K)``;
- ``linear``: ``T x (C + 2 hs)`` per head-dimension: chunks of ``C`` plus the ``hs x hs`` state.
One multiply-add is 2 FLOPs; a score and its use in the weighted sum cost ``2*hs`` FLOPs each.
"""
from __future__ import annotations

from .attention import dynamic_window_size
from .config import ModelConfig

LINEAR_CHUNK = 64  # the chunk length explorer.attention.linear_attention uses


def keys_per_query(config: ModelConfig, T: int) -> float:
    """How many keys each query is scored against by the kernel (the 'S' in cost = T * S)."""
    kind = config.attention
    if kind == "softmax":
        return T
    if kind == "sliding_window":
        return 2 * min(config.window, T)
    if kind == "dynamic_window":
        return 2 * dynamic_window_size(T, config.window)
    if kind == "block_sparse":
        return min(config.window, T) + min(config.n_global, T) + config.n_strided
    if kind == "linear":
        return min(LINEAR_CHUNK, T) + 2 * config.head_dim
    raise KeyError(kind)


def attention_flops(config: ModelConfig, T: int) -> float:
    """FLOPs of one layer's attention core on a sequence of length ``T`` (all heads)."""
    return 2 * 2 * config.n_head * config.head_dim * T * keys_per_query(config, T)


def model_attention_flops(config: ModelConfig, T: int) -> float:
    return config.n_layer * attention_flops(config, T)


def attention_memory_bytes(config: ModelConfig, T: int, bytes_per_value: int = 4) -> float:
    """Bytes of the score/weight matrix a kernel holds at once for one layer (all heads)."""
    return bytes_per_value * config.n_head * T * keys_per_query(config, T)
