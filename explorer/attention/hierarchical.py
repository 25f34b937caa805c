"""Hierarchical attention, two levels: each query attends to the tokens of its own block of ``b``
at full resolution (causally) and to one mean-pooled summary key and value per earlier block.

Each query scores ``b + T/b`` keys, so the cost is ``T * (b + T/b)``: with ``b = sqrt(T)`` blocks
that is ``T^1.5``; with a fixed ``b`` it stays quadratic, with a constant ``b`` times smaller than
full attention's. Summaries cover whole earlier blocks only, so the kind is causal and
prefix-invariant. Papers: Yang et al. 2016 (hierarchical attention networks, word- then
sentence-level); Zhu & Soricut 2021 (H-Transformer-1D: full resolution nearby, coarser far away).

The weights it returns spread each summary's weight evenly over the ``b`` tokens it summarises:
``weights @ v`` is exactly the output, since a summary value is the mean of its block's values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._base import AttentionKind, AttentionResult, SizeControl, Style, causal_pattern, padded, register


def _block(T: int, config) -> int:
    return max(1, min(config.window, T))


def hierarchical_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    B, H, T, D = q.shape
    b = _block(T, config)
    nb, Tp = padded(T, b)
    qp, kp, vp = (F.pad(t, (0, 0, 0, Tp - T)) for t in (q, k, v))
    qb, kb, vb = (t.view(B, H, nb, b, D) for t in (qp, kp, vp))  # (B, nh, nb, b, hs)
    ks, vs = kb.mean(3), vb.mean(3)  # (B, nh, nb, hs) one summary key and value per block
    scale = 1.0 / math.sqrt(D)
    s_loc = qb @ kb.transpose(-1, -2) * scale  # (B, nh, nb, b, b) own block, full resolution
    s_sum = (qp @ ks.transpose(-1, -2) * scale).view(B, H, nb, b, nb)  # (B, nh, nb, b, nb) every summary
    r = torch.arange(b, device=q.device)
    blk = torch.arange(nb, device=q.device)
    ok_loc = r[:, None] >= r[None, :]  # (b, b) causal inside the block
    ok_sum = blk[None, :] < blk[:, None]  # (nb, nb): only summaries of earlier blocks
    if slopes is not None:  # ALiBi: distance to the token, or to the centre of the summarised block
        s_loc = s_loc - slopes.view(1, H, 1, 1, 1) * (r[:, None] - r[None, :]).to(q.dtype)
        i = torch.arange(Tp, device=q.device, dtype=q.dtype).view(nb, b, 1)
        centre = blk.to(q.dtype) * b + (b - 1) / 2
        s_sum = s_sum - slopes.view(1, H, 1, 1, 1) * (i - centre)
    s_loc = s_loc.masked_fill(~ok_loc, float("-inf"))
    s_sum = s_sum.masked_fill(~ok_sum[:, None, :], float("-inf"))
    p = torch.softmax(torch.cat([s_loc, s_sum], dim=-1), dim=-1)  # (B, nh, nb, b, b + nb)
    p_loc, p_sum = p.split([b, nb], dim=-1)
    out = (p_loc @ vb + p_sum @ vs.unsqueeze(2)).reshape(B, H, Tp, D)[:, :, :T]
    weights = None
    if need_weights:
        dense = (p_sum / b).unsqueeze(-1).expand(B, H, nb, b, nb, b).clone()  # a summary's weight, spread
        dense[:, :, blk, :, blk, :] = p_loc.permute(2, 0, 1, 3, 4)  # the own block, token by token
        weights = dense.reshape(B, H, Tp, Tp)[:, :, :T, :T]
    return AttentionResult(out, weights)


def reference_hierarchical(q, k, v, config, slopes=None) -> AttentionResult:
    """The same two-level attention written densely: a pooling matrix ``M`` (blocks x tokens)
    makes the summaries, and ``weights = p_tokens + p_summaries @ M``."""
    T, D = q.size(-2), q.size(-1)
    b = _block(T, config)
    block = torch.arange(T) // b
    nb = int(block[-1]) + 1
    M = (block[None, :] == torch.arange(nb)[:, None]).to(q.dtype)
    M = M / M.sum(1, keepdim=True)  # (nb, T) mean over each block
    s_tok = q @ k.transpose(-1, -2) / math.sqrt(D)
    s_sum = q @ (M @ k).transpose(-1, -2) / math.sqrt(D)
    if slopes is not None:
        pos = torch.arange(T, dtype=q.dtype)
        s_tok = s_tok - slopes.view(-1, 1, 1) * (pos[:, None] - pos[None, :])
        s_sum = s_sum - slopes.view(-1, 1, 1) * (pos[:, None] - (M @ pos)[None, :])
    same = (block[:, None] == block[None, :]) & causal_pattern(T)
    earlier = torch.arange(nb)[None, :] < block[:, None]
    s = torch.cat([s_tok.masked_fill(~same, float("-inf")), s_sum.masked_fill(~earlier, float("-inf"))], -1)
    p = torch.softmax(s, dim=-1)
    p_tok, p_sum = p.split([T, nb], dim=-1)
    weights = p_tok + p_sum @ M
    return AttentionResult(weights @ v, weights)


def _used(T: int, config) -> float:
    """Each query uses its own block up to itself and one summary per earlier block."""
    b = _block(T, config)
    i = torch.arange(T)
    return float((i % b + 1 + i // b).sum())


def _keys(T: int, config) -> float:
    nb, Tp = padded(T, _block(T, config))
    return Tp * (_block(T, config) + nb) / T


register(AttentionKind(
    name="hierarchical", order=50, kernel=hierarchical_attention, pattern=causal_pattern,
    reference=reference_hierarchical, keys_per_query=_keys, score_numbers=lambda T, c: _keys(T, c) * T,
    used_pairs=_used,
    summary="its own block of b tokens in full + one averaged summary of each earlier block: cost grows as T·(b + T/b)",
    theory="$S = b + N/b$: the $b$ keys of the query's own block at full resolution plus one mean-pooled "
           "summary per block → $4Nd(b + N/b)$ FLOPs. A fixed $b$ keeps it quadratic with a constant $b$ "
           "times smaller than softmax's; $b = \\sqrt N$ would make it $N^{1.5}$.",
    paper="Yang et al. 2016, Hierarchical Attention Networks; Zhu & Soricut 2021, H-Transformer-1D",
    style=Style("#E69F00", "dashdot", "star"),
    size_control=SizeControl("Block size b",
                             "Each query sees its own block of b tokens at full resolution and one averaged "
                             "summary of every earlier block."),
    weights_note="Hierarchical attention's map spreads each summary's weight evenly over the b tokens it "
                 "summarises: an earlier token's shade is its block's weight divided by b, not a weight the "
                 "model gave that token alone.",
))
