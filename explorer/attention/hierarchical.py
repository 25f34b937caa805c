"""Hierarchical attention, two levels: each query attends to the tokens of its own block of ``b``
at full resolution (causally) and to one mean-pooled summary key and value per earlier block.

Each query scores ``b + T/b`` keys, so the cost is ``T * (b + T/b)``: with ``b = sqrt(T)`` blocks
that is ``T^1.5``; with a fixed ``b`` it stays quadratic, with a constant ``b`` times smaller than
full attention's. Summaries cover whole earlier blocks only, so the kind is causal and
prefix-invariant. Papers: Yang et al. 2016 (hierarchical attention networks, word- then
sentence-level); Zhu & Soricut 2021 (H-Transformer-1D: full resolution nearby, coarser far away).

A block's summary never changes once the block is complete, so it is cached: each layer keeps
the keys and values of the current block's tokens and one summary key and value per earlier
block (``BlockSummaries``), ``b + t/b`` vectors instead of ``t``.

The weights it returns spread each summary's weight evenly over the ``b`` tokens it summarises:
``weights @ v`` is exactly the output, since a summary value is the mean of its block's values.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._base import (AttentionKind, AttentionResult, SizeControl, Style, causal_pattern, padded, register,
                    softmax_fp32)
from ._cache import LayerCache


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
    p = softmax_fp32(torch.cat([s_loc, s_sum], dim=-1))  # (B, nh, nb, b, b + nb), float32
    p_loc, p_sum = p.split([b, nb], dim=-1)
    out = (p_loc.to(vb.dtype) @ vb + p_sum.to(vs.dtype) @ vs.unsqueeze(2)).reshape(B, H, Tp, D)[:, :, :T]
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


class BlockSummaries(LayerCache):
    """The current block's keys and values token by token, and one mean key and value per
    complete earlier block (a complete block's summary is final)."""
    label = "the current block's keys and values + one summary per earlier block"

    def __init__(self, config):
        self.b = max(1, config.window)
        self.k = self.v = None  # (B, nh, m, hs): the current block's m tokens, keys rotated
        self.ks = self.vs = None  # (B, nh, nb, hs): one summary per complete block
        self.first = 0  # position of the current block's first token

    def attend(self, q, k, v, start, pos):
        B, H, n, D = q.shape
        if self.ks is None:
            self.ks, self.vs = q.new_zeros(B, H, 0, D), q.new_zeros(B, H, 0, D)
            self.k, self.v = q.new_zeros(B, H, 0, D), q.new_zeros(B, H, 0, D)
        q, k = pos.rotate(q, k, start)
        slopes = pos.slopes()
        scale = 1.0 / math.sqrt(D)
        outs = []
        for s in range(n):  # one token at a time: a block may close in the middle of the new tokens
            i = start + s
            self.k, self.v = torch.cat([self.k, k[:, :, s:s + 1]], 2), torch.cat([self.v, v[:, :, s:s + 1]], 2)
            qi = q[:, :, s:s + 1]  # (B, nh, 1, hs)
            s_loc, s_sum = qi @ self.k.transpose(-1, -2) * scale, qi @ self.ks.transpose(-1, -2) * scale
            if slopes is not None:  # distance to each token of the block, or to the centre of a summarised one
                j = torch.arange(self.first, i + 1, device=q.device, dtype=q.dtype)
                centre = torch.arange(self.ks.size(2), device=q.device, dtype=q.dtype) * self.b + (self.b - 1) / 2
                s_loc = s_loc - slopes.view(1, H, 1, 1) * (i - j)
                s_sum = s_sum - slopes.view(1, H, 1, 1) * (i - centre)
            p = softmax_fp32(torch.cat([s_loc, s_sum], -1)).to(self.v.dtype)
            p_loc, p_sum = p.split([self.k.size(2), self.ks.size(2)], -1)
            outs.append(p_loc @ self.v + p_sum @ self.vs)
            if self.k.size(2) == self.b:  # the block is complete: keep its summary, drop its tokens
                self.ks = torch.cat([self.ks, self.k.mean(2, keepdim=True)], 2)
                self.vs = torch.cat([self.vs, self.v.mean(2, keepdim=True)], 2)
                self.k, self.v = q.new_zeros(B, H, 0, D), q.new_zeros(B, H, 0, D)
                self.first = i + 1
        return torch.cat(outs, 2)

    def tensors(self):
        return [] if self.ks is None else [self.k, self.v, self.ks, self.vs]

    def positions(self):
        return list(range(self.first, self.first + (0 if self.k is None else self.k.size(2))))

    def folded(self):
        return list(range(self.first))


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
    style=Style("#E69F00", "dashdot", "star"), cache=BlockSummaries,
    size_control=SizeControl("Block size b",
                             "Each query sees its own block of b tokens at full resolution and one averaged "
                             "summary of every earlier block."),
    weights_note="Hierarchical attention's map spreads each summary's weight evenly over the b tokens it "
                 "summarises: an earlier token's shade is its block's weight divided by b, not a weight the "
                 "model gave that token alone.",
))
