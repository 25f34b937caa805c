"""Sliding-window attention, fixed and dynamic.

- ``sliding_window``: each token sees the last ``w`` tokens, itself included (Longformer, Beltagy
  et al. 2020; Mistral, Jiang et al. 2023).
- ``dynamic_window``: the same with a width chosen from the model's context length ``T_ctx`` by
  ``w = max(w_min, ceil(2 * sqrt(T_ctx)))``. The width depends on the model, never on the length of
  the sequence being read, so a token's output does not change when more tokens follow it.

Both are cached as a rolling window: each layer keeps the keys and values of the last ``w``
positions only, so its memory is bounded by ``w`` however long the text (Mistral's rolling
buffer). Stacked, the windows reach further: ``L`` layers carry information ``L (w - 1)``
positions back (Longformer's receptive field).

Both are computed in blocks of ``w`` queries against the ``2w`` keys of their own and the previous
block, so time and memory are ``O(T * w)``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._base import (AttentionKind, AttentionResult, SizeControl, Style, alibi_bias, band_pairs, padded, register,
                    softmax_fp32,
                    softmax_over)
from ._cache import KeyValueCache


def band_sees(w: int, i, j):
    """May query ``i`` see key ``j`` (absolute positions, broadcasting): ``0 <= i - j < w``."""
    off = i - j
    return (off >= 0) & (off < w)


def band_pattern(w: int, T: int):
    i = torch.arange(T)
    return band_sees(w, i[:, None], i[None, :])


def rolling_cache(w: int, config) -> KeyValueCache:
    """The last ``w`` keys and values: a query at ``t`` or later never sees a key before ``t - w + 1``."""
    return KeyValueCache(config, lambda i, j, c: band_sees(w, i, j), lambda j, t, c: j > t - w,
                         f"a rolling window of the last {w} keys and values")


def banded_attention(q, k, v, w: int, slopes=None, need_weights=False) -> AttentionResult:
    """Causal sliding-window attention in blocks: ``w`` queries score the ``2w`` keys of their own
    block and the block before; memory and time are ``O(T * w)``."""
    B, H, T, D = q.shape
    w = max(1, min(w, T))
    nb, Tp = padded(T, w)
    pad = Tp - T
    qb = F.pad(q, (0, 0, 0, pad)).view(B, H, nb, w, D)  # (B, nh, nb, w, hs)
    kb = F.pad(k, (0, 0, w, pad)).view(B, H, nb + 1, w, D)  # one block of zeros in front
    vb = F.pad(v, (0, 0, w, pad)).view(B, H, nb + 1, w, D)
    kc = torch.cat([kb[:, :, :-1], kb[:, :, 1:]], dim=3)  # (B, nh, nb, 2w, hs) previous + own block
    vc = torch.cat([vb[:, :, :-1], vb[:, :, 1:]], dim=3)
    scores = qb @ kc.transpose(-1, -2)  # (B, nh, nb, w, 2w)
    scores.mul_(1.0 / math.sqrt(D))
    r = torch.arange(w, device=q.device)[:, None]  # query offset in its block
    c = torch.arange(2 * w, device=q.device)[None, :]  # key column; global key j = b*w + c - w
    off = r + w - c  # i - j
    if slopes is not None:
        scores.add_(alibi_bias(slopes, off).unsqueeze(1))  # (nh, 1, w, 2w)
    scores.masked_fill_(~((off >= 0) & (off < w)), float("-inf"))  # the same band in every block
    scores[:, :, 0, :, :w] = float("-inf")  # block 0 has no previous block
    p = softmax_fp32(scores)  # float32, whatever the scores' dtype
    out = (p.to(vc.dtype) @ vc).reshape(B, H, Tp, D)[:, :, :T]
    weights = None
    if need_weights:
        cols = (torch.arange(nb, device=q.device)[:, None, None] * w + c).expand(nb, w, 2 * w)
        dense = p.new_zeros(B, H, nb, w, (nb + 1) * w).scatter_add_(-1, cols.expand(B, H, -1, -1, -1), p)
        weights = dense.reshape(B, H, Tp, (nb + 1) * w)[:, :, :T, w: w + T]
    return AttentionResult(out, weights)


def banded_keys(w: int, T: int) -> float:
    """Keys scored per query by ``banded_attention``: ``2w``, on ``T`` padded to whole blocks."""
    w = max(1, min(w, T))
    return padded(T, w)[1] * 2 * w / T


def dynamic_window_size(T_ctx: int, w_min: int) -> int:
    """The dynamic window's rule: ``w = max(w_min, ceil(2 * sqrt(T_ctx)))``, never more than ``T_ctx``."""
    return max(1, min(T_ctx, max(w_min, math.ceil(2 * math.sqrt(T_ctx)))))


def dynamic_window_rule(T_ctx: int, w_min: int) -> str:
    """The rule worked out for one model, in words for the page."""
    return (f"this model's context is T_ctx = {T_ctx} tokens, so w = max(w_min, ⌈2√T_ctx⌉) = max({w_min}, "
            f"{math.ceil(2 * math.sqrt(T_ctx))}) = {dynamic_window_size(T_ctx, w_min)} for every token, "
            f"however long the input")


def _dynamic_w(config) -> int:
    return dynamic_window_size(config.block_size, config.window)


register(AttentionKind(
    name="sliding_window", order=10,
    kernel=lambda q, k, v, config, slopes=None, need_weights=False:
        banded_attention(q, k, v, config.window, slopes, need_weights),
    pattern=lambda T, c: band_pattern(c.window, T),
    reference=softmax_over(lambda T, c: band_pattern(c.window, T)),
    keys_per_query=lambda T, c: banded_keys(c.window, T),
    score_numbers=lambda T, c: banded_keys(c.window, T) * T,
    used_pairs=lambda T, c: band_pairs(T, c.window),
    summary="each token attends to the last w tokens (itself included): cost grows as T·w",
    theory="$S = 2w$: blocks of $w$ queries against the $2w$ keys of their own and the previous block "
           "(the band inside is kept, the rest masked), $N$ rounded up to whole blocks → linear in $N$.",
    paper="Beltagy et al. 2020, Longformer; Jiang et al. 2023, Mistral 7B",
    style=Style("#0072B2", "solid", "square"),
    cache=lambda c: rolling_cache(c.window, c), reach=lambda c: c.window - 1,
    size_control=SizeControl("Window w (keys per query)",
                             "How many tokens each query may attend to: itself and the w − 1 before it."),
))

register(AttentionKind(
    name="dynamic_window", order=20,
    kernel=lambda q, k, v, config, slopes=None, need_weights=False:
        banded_attention(q, k, v, _dynamic_w(config), slopes, need_weights),
    pattern=lambda T, c: band_pattern(_dynamic_w(c), T),
    reference=softmax_over(lambda T, c: band_pattern(_dynamic_w(c), T)),
    keys_per_query=lambda T, c: banded_keys(_dynamic_w(c), T),
    score_numbers=lambda T, c: banded_keys(_dynamic_w(c), T) * T,
    used_pairs=lambda T, c: band_pairs(T, _dynamic_w(c)),
    summary="a sliding window whose width follows the model's context length T_ctx: "
            "w = max(w_min, ⌈2√T_ctx⌉), the same for every token",
    theory="$S = 2w$ with $w = \\max(w_{min}, \\lceil 2\\sqrt{N}\\rceil)$ (the model's context is the measured "
           "length $N$): linear in $N$ while $w_{min}$ wins ($N \\le w_{min}^2/4$), growing as $N^{1.5}$ "
           "once $N \\gg w_{min}^2/4$.",
    paper="a window that scales with the context, after Beltagy et al. 2020 (Longformer's per-layer windows)",
    style=Style("#56B4E9", "dot", "diamond"),
    cache=lambda c: rolling_cache(_dynamic_w(c), c), reach=lambda c: _dynamic_w(c) - 1,
    size_control=SizeControl("Smallest window w_min",
                             "The window is max(w_min, ⌈2√T_ctx⌉) keys, T_ctx being the model's context length."),
))
