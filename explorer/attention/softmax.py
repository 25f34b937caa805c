"""Full causal softmax attention (Vaswani et al. 2017, "Attention Is All You Need").

Without weights it runs torch's fused ``scaled_dot_product_attention``; with weights (the Lab's
maps, and the Complexity page's explicit line) it forms the whole ``T x T`` score matrix.
"""
from __future__ import annotations

import torch.nn.functional as F

from ._base import (REFERENCES, AttentionKind, AttentionResult, Reference, Style, alibi_bias, causal_offsets,
                    causal_pairs, causal_pattern, reference_attention, register, softmax_over)
from ._cache import KeyValueCache, keeps_all


def softmax_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    T = q.size(-2)
    if need_weights:
        return reference_attention(q, k, v, causal_pattern(T), slopes)
    if slopes is None:
        return AttentionResult(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    off = causal_offsets(T, q.device)
    bias = alibi_bias(slopes, off).masked_fill(off < 0, float("-inf"))  # (nh, T, T)
    return AttentionResult(F.scaled_dot_product_attention(q, k, v, attn_mask=bias))


register(AttentionKind(
    name="softmax", order=0, kernel=softmax_attention, pattern=causal_pattern,
    reference=softmax_over(causal_pattern),
    keys_per_query=lambda T, c: float(T),
    score_numbers=lambda T, c: float(T * T),
    used_pairs=causal_pairs,
    summary="every token attends to every earlier token: cost grows as T²",
    theory="$S = N$: every query is scored against every key, the masked upper half included (a dense "
           "kernel computes it, then throws it away) → $4N^2d$ FLOPs and $hN^2$ scores. Double $N$, "
           "quadruple the cost.",
    paper="Vaswani et al. 2017, Attention Is All You Need",
    style=Style("#D55E00", "solid", "circle"),
    measure_with_weights=True, score_copies=(2.5, 3.5),
    cache=lambda c: KeyValueCache(c, lambda i, j, c: j <= i, keeps_all, "keys and values of every position"),
))

REFERENCES.add("sdpa", Reference(
    name="sdpa", order=100, same_as="softmax",
    call=lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    theory="**sdpa** (the reference line): torch's fused `scaled_dot_product_attention`, the same result as "
           "softmax. It never stores the $N \\times N$ matrix: it walks over tiles of keys keeping a running "
           "maximum and sum (the FlashAttention idea), so its memory holds only the inputs and the output, "
           "$O(Nd)$; with a causal mask its CPU kernel also skips the tiles above the diagonal.",
    paper="Dao et al. 2022, FlashAttention; PyTorch's scaled_dot_product_attention",
    style=Style("#000000", "dash", "cross"),
))
