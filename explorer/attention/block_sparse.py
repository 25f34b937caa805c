"""Block-sparse attention: local causal blocks of size ``b`` + ``g`` global leading tokens + a
strided pattern reaching ``K`` blocks back at offsets ``b, 2b, ..., Kb`` (Sparse Transformer,
Child et al. 2019; BigBird, Zaheer et al. 2020). Each query scores ``b + g + K`` keys.

Its pattern at position ``t`` depends on ``t`` alone, so it is cached: each layer keeps the ``g``
global tokens and the keys since ``min(start of t's block, t - K b)``, at most ``g + (K + 1) b``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._base import (AttentionKind, AttentionResult, SizeControl, Style, alibi_bias, padded, register, softmax_fp32,
                    softmax_over)
from ._cache import KeyValueCache


def block_sparse_sees(i, j, config):
    """May query ``i`` see key ``j`` (absolute positions, broadcasting)."""
    b, g, K = config.window, config.n_global, config.n_strided
    off = i - j
    local = (i // b) == (j // b)
    glob = j < g
    strided = (off % b == 0) & (off >= b) & (off <= K * b)
    return (off >= 0) & (local | glob | strided)


def block_sparse_pattern(T: int, config):
    i = torch.arange(T)
    return block_sparse_sees(i[:, None], i[None, :], config)


def block_sparse_keeps(j, t: int, config):
    """May a query at ``t`` or later see key ``j``: a global token, or one since the start of
    ``t``'s block or ``t - K b``, whichever is earlier."""
    b, g, K = config.window, config.n_global, config.n_strided
    return (j < g) | (j >= min((t // b) * b, t - K * b))


def _sizes(T: int, config) -> tuple[int, int, int]:
    return max(1, min(config.window, T)), min(config.n_global, T), config.n_strided


def block_sparse_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    """Local blocks + global tokens + strided hops, each query scoring ``b + g + K`` keys."""
    B, H, T, D = q.shape
    b, g, K = _sizes(T, config)
    nb, Tp = padded(T, b)
    dev = q.device
    qp, kp, vp = (F.pad(t, (0, 0, 0, Tp - T)) for t in (q, k, v))
    scale = 1.0 / math.sqrt(D)
    i = torch.arange(Tp, device=dev)
    start = (i // b) * b  # first position of each query's block
    # local: own block, causal
    qb, kb, vb = (t.view(B, H, nb, b, D) for t in (qp, kp, vp))
    s_loc = (qb @ kb.transpose(-1, -2) * scale).reshape(B, H, Tp, b)  # (B, nh, Tp, b)
    j_loc = start[:, None] + torch.arange(b, device=dev)  # (Tp, b)
    ok_loc = j_loc <= i[:, None]
    # global: the first g tokens, for queries in later blocks (earlier ones are local already)
    j_glb = torch.arange(g, device=dev).expand(Tp, g)
    s_glb = q.new_zeros(B, H, Tp, 0) if g == 0 else qp @ kp[:, :, :g].transpose(-1, -2) * scale
    ok_glb = j_glb < start[:, None]
    # strided: keys m*b back, m = 1..K, that are not global
    m = torch.arange(1, K + 1, device=dev)
    j_str = i[:, None] - m * b  # (Tp, K)
    ok_str = j_str >= g
    j_str = j_str.clamp(min=0)
    k_str = kp[:, :, j_str]  # (B, nh, Tp, K, hs)
    v_str = vp[:, :, j_str]
    s_str = torch.einsum("bhtd,bhtkd->bhtk", qp, k_str) * scale
    scores = torch.cat([s_loc, s_glb, s_str], dim=-1)  # (B, nh, Tp, b + g + K)
    cols = torch.cat([j_loc, j_glb, j_str], dim=-1)  # (Tp, b + g + K) key index of each score
    ok = torch.cat([ok_loc, ok_glb, ok_str], dim=-1)
    if slopes is not None:
        scores = scores + alibi_bias(slopes, i[:, None] - cols)
    p = softmax_fp32(scores.masked_fill(~ok, float("-inf")))  # float32, whatever the scores' dtype
    p_loc, p_glb, p_str = p.to(v.dtype).split([b, g, K], dim=-1)
    out = (p_loc.reshape(B, H, nb, b, b) @ vb).reshape(B, H, Tp, D)
    if g:
        out = out + p_glb @ vp[:, :, :g]
    out = out + torch.einsum("bhtk,bhtkd->bhtd", p_str, v_str)
    weights = None
    if need_weights:
        dense = p.new_zeros(B, H, Tp, Tp).scatter_add_(-1, cols.expand(B, H, -1, -1), p)
        weights = dense[:, :, :T, :T]
    return AttentionResult(out[:, :, :T], weights)


def _used(T: int, config) -> float:
    """Keys each query really sees, summed without building the ``T x T`` pattern: its own block up
    to itself, the global tokens before its block, and the strided hops that land on neither."""
    b, g, K = _sizes(T, config)
    i = torch.arange(T)
    start = (i // b) * b
    local = i - start + 1
    glob = torch.clamp(torch.minimum(start, torch.tensor(g)), min=0)
    j = i[:, None] - torch.arange(1, K + 1) * b
    strided = (j >= g).sum(1)
    return float((local + glob + strided).sum())


def _keys(T: int, config) -> float:
    b, g, K = _sizes(T, config)
    return padded(T, b)[1] * (b + g + K) / T


register(AttentionKind(
    name="block_sparse", order=30, kernel=block_sparse_attention, pattern=block_sparse_pattern,
    reference=softmax_over(block_sparse_pattern),
    keys_per_query=_keys,
    score_numbers=lambda T, c: _keys(T, c) * T,
    used_pairs=_used,
    summary="own block + the first g tokens + strided hops b, 2b, …, Kb back: cost grows as T·(b+g+K)",
    theory="$S = b + g + K$: the query's own block of $b$, the $g$ global tokens and $K$ strided hops back, "
           "$N$ rounded up to whole blocks → linear in $N$.",
    paper="Child et al. 2019, Sparse Transformer; Zaheer et al. 2020, BigBird",
    style=Style("#009E73", "solid", "triangle-up"), score_copies=(6.0, 6.5),
    cache=lambda c: KeyValueCache(c, block_sparse_sees, block_sparse_keeps,
                                  "the global tokens, the own block and the strided hops' keys and values"),
    size_control=SizeControl("Block size b",
                             "Each query sees its own block of b tokens (causally), the leading global "
                             "tokens, and strided hops b, 2b, … tokens back."),
))
