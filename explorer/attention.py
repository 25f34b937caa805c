"""Attention kernels, one function per kind, chosen once by name from ``ATTENTION``.

Every kernel takes queries, keys and values shaped ``(B, nh, T, hs)`` and returns an
``AttentionResult``. All kinds are causal. When ``need_weights`` is true the result also carries
the ``(B, nh, T, T)`` weights the kernel actually applied (scattered from its own sparse layout);
otherwise no ``T x T`` tensor is built by the sub-quadratic kinds.

Kinds and papers:
- ``softmax``: full causal attention (Vaswani et al. 2017, "Attention Is All You Need").
  Without weights it runs torch's fused ``scaled_dot_product_attention``.
- ``sliding_window``: each token sees the last ``w`` tokens, itself included (Longformer,
  Beltagy et al. 2020; Mistral). Computed in blocks of ``w`` queries against ``2w`` keys.
- ``dynamic_window``: a sliding window whose width is chosen from the input length ``T`` by
  ``dynamic_window_size``: ``w(T) = max(w_min, ceil(2 * sqrt(T)))``, so cost grows as ``T^1.5``.
- ``block_sparse``: local causal blocks of size ``b`` + ``g`` global leading tokens + a strided
  pattern reaching ``K`` blocks back at offsets ``b, 2b, ..., Kb`` (Sparse Transformer, Child et al.
  2019; BigBird, Zaheer et al. 2020). Each query scores ``b + g + K`` keys.
- ``linear``: kernelised attention with feature map ``phi(x) = elu(x) + 1``, causal through
  prefix sums of ``phi(k) v^T`` ("Transformers are RNNs", Katharopoulos et al. 2020), computed in
  chunks. The weights it returns are the normalised implied weights
  ``phi(q_i).phi(k_j) / sum_{j'<=i} phi(q_i).phi(k_j')``.

``pattern(kind, T, config)`` gives each kind's boolean ``(T, T)`` mask, and ``reference_attention``
the plain masked computation the kernels are tested against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry


@dataclass
class AttentionResult:
    out: Tensor  # (B, nh, T, hs)
    weights: Optional[Tensor] = None  # (B, nh, T, T) weights applied, only when asked


@dataclass(frozen=True)
class AttentionKind:
    name: str
    fn: Callable[..., AttentionResult]  # (q, k, v, config, slopes, need_weights) -> AttentionResult
    pattern: Callable[[int, object], Tensor]  # (T, config) -> (T, T) bool: may query i see key j
    explicit_scores: bool  # forms q.k scores (so an ALiBi bias can be added)
    uses_window: bool  # reads config.window
    summary: str  # one line for the page


ATTENTION: Registry[AttentionKind] = Registry("attention kind")


def dynamic_window_size(T: int, w_min: int) -> int:
    """The dynamic window's rule: ``w(T) = max(w_min, ceil(2 * sqrt(T)))``, never more than ``T``."""
    return max(1, min(T, max(w_min, math.ceil(2 * math.sqrt(T)))))


def dynamic_window_rule(T: int, w_min: int) -> str:
    """The rule worked out for one input, in words for the page."""
    return (f"this sequence has T = {T} tokens, so w = max(w_min, ⌈2√T⌉) = max({w_min}, "
            f"{math.ceil(2 * math.sqrt(T))}) = {dynamic_window_size(T, w_min)}")


# ----------------------------------------------------------------------------------------------
# Masks (patterns) and the reference computation


def _causal_offsets(T: int, device=None) -> Tensor:
    i = torch.arange(T, device=device)
    return i[:, None] - i[None, :]  # (T, T) offset i - j


def _pattern_softmax(T: int, config) -> Tensor:
    return _causal_offsets(T) >= 0


def _pattern_window(w: int, T: int) -> Tensor:
    off = _causal_offsets(T)
    return (off >= 0) & (off < w)


def _pattern_block_sparse(T: int, config) -> Tensor:
    b, g, K = config.window, config.n_global, config.n_strided
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    off = i - j
    local = (i // b) == (j // b)
    glob = j < g
    strided = (off % b == 0) & (off >= b) & (off <= K * b)
    return (off >= 0) & (local | glob | strided)


def pattern(kind: str, T: int, config) -> Tensor:
    """The boolean ``(T, T)`` pattern of ``kind``: True where query i may attend to key j."""
    return ATTENTION[kind].pattern(T, config)


def alibi_bias(slopes: Tensor, offsets: Tensor) -> Tensor:
    """ALiBi's bias ``-slope * (i - j)`` for each head: ``(nh,) x offsets -> (nh, *offsets.shape)``."""
    return -slopes.view(-1, *([1] * offsets.dim())) * offsets.to(slopes.dtype)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, slopes: Optional[Tensor] = None):
    """Plain masked softmax attention over a dense ``(T, T)`` pattern: the tests' reference."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if slopes is not None:
        scores = scores + alibi_bias(slopes, _causal_offsets(T, q.device))
    scores = scores.masked_fill(~allowed.to(q.device), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return AttentionResult(weights @ v, weights)


def reference_linear(q: Tensor, k: Tensor, v: Tensor) -> AttentionResult:
    """Dense causal linear attention: implied weights ``phi(q).phi(k)`` normalised per row."""
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    T = q.size(-2)
    a = (fq @ fk.transpose(-2, -1)).masked_fill(~_pattern_softmax(T, None).to(q.device), 0.0)
    weights = a / a.sum(-1, keepdim=True)
    return AttentionResult(weights @ v, weights)


# ----------------------------------------------------------------------------------------------
# Kernels


def softmax_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    T = q.size(-2)
    if need_weights:
        return reference_attention(q, k, v, _pattern_softmax(T, config), slopes)
    if slopes is None:
        return AttentionResult(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    off = _causal_offsets(T, q.device)
    bias = alibi_bias(slopes, off).masked_fill(off < 0, float("-inf"))  # (nh, T, T)
    return AttentionResult(F.scaled_dot_product_attention(q, k, v, attn_mask=bias))


def _banded(q: Tensor, k: Tensor, v: Tensor, w: int, slopes, need_weights) -> AttentionResult:
    """Causal sliding-window attention in blocks: ``w`` queries score the ``2w`` keys of their own
    block and the block before; memory and time are ``O(T * w)``."""
    B, H, T, D = q.shape
    w = max(1, min(w, T))
    nb = -(-T // w)
    pad = nb * w - T
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
    p = torch.softmax(scores, dim=-1)
    out = (p @ vc).reshape(B, H, nb * w, D)[:, :, :T]
    weights = None
    if need_weights:
        cols = (torch.arange(nb, device=q.device)[:, None, None] * w + c).expand(nb, w, 2 * w)
        dense = q.new_zeros(B, H, nb, w, (nb + 1) * w).scatter_add_(-1, cols.expand(B, H, -1, -1, -1), p)
        weights = dense.reshape(B, H, nb * w, (nb + 1) * w)[:, :, :T, w : w + T]
    return AttentionResult(out, weights)


def sliding_window_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    return _banded(q, k, v, config.window, slopes, need_weights)


def dynamic_window_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    return _banded(q, k, v, dynamic_window_size(q.size(-2), config.window), slopes, need_weights)


def block_sparse_attention(q, k, v, config, slopes=None, need_weights=False) -> AttentionResult:
    """Local blocks + global tokens + strided hops, each query scoring ``b + g + K`` keys."""
    B, H, T, D = q.shape
    b = max(1, min(config.window, T))
    g = min(config.n_global, T)
    K = config.n_strided
    nb = -(-T // b)
    Tp = nb * b
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
    p = torch.softmax(scores.masked_fill(~ok, float("-inf")), dim=-1)
    p_loc, p_glb, p_str = p.split([b, g, K], dim=-1)
    out = (p_loc.reshape(B, H, nb, b, b) @ vb).reshape(B, H, Tp, D)
    if g:
        out = out + p_glb @ vp[:, :, :g]
    out = out + torch.einsum("bhtk,bhtkd->bhtd", p_str, v_str)
    weights = None
    if need_weights:
        dense = q.new_zeros(B, H, Tp, Tp).scatter_add_(-1, cols.expand(B, H, -1, -1), p)
        weights = dense[:, :, :T, :T]
    return AttentionResult(out[:, :, :T], weights)


def linear_attention(q, k, v, config, slopes=None, need_weights=False, chunk: int = 64) -> AttentionResult:
    """Causal linear attention in chunks of ``chunk`` queries: inside a chunk the implied scores
    are formed directly, across chunks a running state ``S = sum phi(k) v^T`` (hs x hs) carries the
    past, as an RNN would. Time ``O(T * (chunk + hs) * hs)``, memory ``O(T * hs)``."""
    B, H, T, D = q.shape
    C = max(1, min(chunk, T))
    nc = -(-T // C)
    pad = nc * C - T
    fq = F.pad(F.elu(q) + 1, (0, 0, 0, pad)).view(B, H, nc, C, D)  # (B, nh, nc, C, hs)
    fk = F.pad(F.elu(k) + 1, (0, 0, 0, pad)).view(B, H, nc, C, D)
    vc = F.pad(v, (0, 0, 0, pad)).view(B, H, nc, C, D)
    kv = fk.transpose(-1, -2) @ vc  # (B, nh, nc, hs, hs) each chunk's phi(k) v^T
    state = kv.cumsum(2) - kv  # sum over earlier chunks only
    ksum = fk.sum(3)  # (B, nh, nc, hs)
    zstate = ksum.cumsum(2) - ksum
    a = (fq @ fk.transpose(-1, -2)).tril()  # (B, nh, nc, C, C) implied scores inside the chunk
    num = a @ vc + fq @ state  # (B, nh, nc, C, hs)
    den = a.sum(-1) + (fq * zstate.unsqueeze(-2)).sum(-1)  # (B, nh, nc, C)
    out = (num / den.unsqueeze(-1)).reshape(B, H, nc * C, D)[:, :, :T]
    weights = reference_linear(q, k, v).weights if need_weights else None
    return AttentionResult(out, weights)


ATTENTION.register("softmax")(AttentionKind(
    "softmax", softmax_attention, _pattern_softmax, explicit_scores=True, uses_window=False,
    summary="every token attends to every earlier token: cost grows as T^2",
))
ATTENTION.register("sliding_window")(AttentionKind(
    "sliding_window", sliding_window_attention, lambda T, c: _pattern_window(c.window, T),
    explicit_scores=True, uses_window=True,
    summary="each token attends to the last w tokens (itself included): cost grows as T*w",
))
ATTENTION.register("dynamic_window")(AttentionKind(
    "dynamic_window", dynamic_window_attention,
    lambda T, c: _pattern_window(dynamic_window_size(T, c.window), T),
    explicit_scores=True, uses_window=True,
    summary="a sliding window whose width follows the input length: w(T) = max(w_min, ceil(2*sqrt(T)))",
))
ATTENTION.register("block_sparse")(AttentionKind(
    "block_sparse", block_sparse_attention, _pattern_block_sparse, explicit_scores=True, uses_window=True,
    summary="own block + the first g tokens + strided hops b, 2b, ..., Kb back: cost grows as T*(b+g+K)",
))
ATTENTION.register("linear")(AttentionKind(
    "linear", linear_attention, lambda T, c: _pattern_softmax(T, c), explicit_scores=False, uses_window=False,
    summary="kernel features phi(q).phi(k) with running prefix sums, an RNN in disguise: cost grows as T*hs^2",
))
