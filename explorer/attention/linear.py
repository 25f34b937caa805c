"""Linear (kernelised) attention: feature map ``phi(x) = elu(x) + 1`` and causal prefix sums of
``phi(k) v^T`` ("Transformers are RNNs", Katharopoulos et al. 2020), computed in chunks.

The weights it returns are the implied weights ``phi(q_i).phi(k_j) / sum_{j'<=i} phi(q_i).phi(k_j')``.
With RoPE the rotation is applied to the features in the numerator only, the denominator keeps
the unrotated features (RoFormer, Su et al. 2021, section 3.3): scores then depend only on the
offset ``i - j``, but a row of implied weights need not sum to 1 and may hold negative weights.

Generating token by token it is an RNN: ``LinearState`` keeps ``S = sum_j phi(k_j) v_j^T`` and
``z = sum_j phi(k_j)`` per head, constant memory however long the text.
"""
from __future__ import annotations

import torch.nn.functional as F

import torch

from ._base import AttentionKind, AttentionResult, Style, causal_pattern, padded, register
from ._cache import LayerCache

CHUNK = 64  # queries per chunk: implied scores inside a chunk, a running state across chunks


def features(x):
    return F.elu(x) + 1


def linear_attention(q, k, v, config, slopes=None, need_weights=False, rotate=None, chunk: int = CHUNK):
    """Causal linear attention in chunks of ``chunk`` queries: inside a chunk the implied scores
    are formed directly, across chunks a running state ``S = sum phi(k) v^T`` (hs x hs) carries the
    past, as an RNN would. Time ``O(T * hs * (chunk + hs))``, memory ``T * chunk`` scores plus
    ``T / chunk`` states of ``hs x hs``."""
    B, H, T, D = q.shape
    C = max(1, min(chunk, T))
    nc, Tp = padded(T, C)
    pad = Tp - T
    fq, fk = features(q), features(k)  # (B, nh, T, hs)
    den = (fq * fk.cumsum(-2)).sum(-1)  # (B, nh, T): phi(q_i) . sum_{j<=i} phi(k_j), never rotated
    nq, nk = rotate(fq, fk) if rotate is not None else (fq, fk)  # the numerator's features
    nq = F.pad(nq, (0, 0, 0, pad)).view(B, H, nc, C, D)  # (B, nh, nc, C, hs)
    nk = F.pad(nk, (0, 0, 0, pad)).view(B, H, nc, C, D)
    vc = F.pad(v, (0, 0, 0, pad)).view(B, H, nc, C, D)
    kv = nk.transpose(-1, -2) @ vc  # (B, nh, nc, hs, hs) each chunk's phi(k) v^T
    state = kv.cumsum(2) - kv  # sum over earlier chunks only
    a = (nq @ nk.transpose(-1, -2)).tril()  # (B, nh, nc, C, C) implied scores inside the chunk
    num = a @ vc + nq @ state  # (B, nh, nc, C, hs)
    out = num.reshape(B, H, Tp, D)[:, :, :T] / den.unsqueeze(-1)
    weights = reference_linear(q, k, v, config, rotate=rotate).weights if need_weights else None
    return AttentionResult(out, weights)


class LinearState(LayerCache):
    """The recurrent form (Katharopoulos et al. 2020, section 3.4): per head the running sums
    ``S = sum_j phi(k_j) v_j^T`` (hs x hs, the numerator's features, rotated with RoPE) and
    ``z = sum_j phi(k_j)`` (hs, never rotated); a query reads ``phi(q) S / phi(q).z``."""
    label = "a running state S = Σ φ(k) vᵀ and z = Σ φ(k) per head"

    def __init__(self):
        self.S = None  # (B, nh, hs, hs)
        self.z = None  # (B, nh, hs)
        self.count = 0  # tokens folded in

    def attend(self, q, k, v, start, pos):
        B, H, n, D = q.shape
        if self.S is None:
            self.S, self.z = q.new_zeros(B, H, D, D), q.new_zeros(B, H, D)
        fq, fk = features(q), features(k)  # (B, nh, n, hs)
        nq, nk = pos.rotate(fq, fk, start)  # the numerator's features (RoPE only)
        den = (fq * (self.z.unsqueeze(-2) + fk.cumsum(-2))).sum(-1)  # (B, nh, n)
        num = (nq @ nk.transpose(-1, -2)).tril() @ v + nq @ self.S  # the new tokens among themselves + the past
        self.S = self.S + nk.transpose(-1, -2) @ v
        self.z = self.z + fk.sum(-2)
        self.count = start + n
        return num / den.unsqueeze(-1)

    def fill(self, q, k, v, pos):
        fk = features(k)
        nk = pos.rotate(fk, fk)[1]
        self.S, self.z, self.count = nk.transpose(-1, -2) @ v, fk.sum(-2), k.size(-2)

    def tensors(self):
        return [] if self.S is None else [self.S, self.z]

    def folded(self):
        return list(range(self.count))


def reference_linear(q, k, v, config=None, slopes=None, rotate=None) -> AttentionResult:
    """Dense causal linear attention: the implied weights, normalised by the unrotated features."""
    T = q.size(-2)
    fq, fk = features(q), features(k)
    nq, nk = rotate(fq, fk) if rotate is not None else (fq, fk)
    causal = causal_pattern(T).to(q.device)
    num = (nq @ nk.transpose(-2, -1)).masked_fill(~causal, 0.0)
    den = (fq @ fk.transpose(-2, -1)).masked_fill(~causal, 0.0).sum(-1, keepdim=True)
    weights = num / den
    return AttentionResult(weights @ v, weights)


def _keys(T: int, config) -> float:
    C = max(1, min(CHUNK, T))
    return padded(T, C)[1] * (C + config.head_dim) / T


def _numbers(T: int, config) -> float:
    C = max(1, min(CHUNK, T))
    nc, Tp = padded(T, C)
    return Tp * C + nc * config.head_dim ** 2


def _used(T: int, config) -> float:
    """Inside a chunk a query uses the scores up to itself (the rest of the ``C x C`` block is
    masked); across chunks its ``hs`` state products are all used."""
    C = max(1, min(CHUNK, T))
    full, rest = divmod(T, C)
    return full * C * (C + 1) / 2 + rest * (rest + 1) / 2 + T * config.head_dim


register(AttentionKind(
    name="linear", order=40, kernel=linear_attention, pattern=causal_pattern, reference=reference_linear,
    keys_per_query=_keys, score_numbers=_numbers, used_pairs=_used,
    summary="kernel features φ(q)·φ(k) with running prefix sums, an RNN in disguise: cost grows as T·hs·(C + hs)",
    theory=f"$S = C + d_h$: inside chunks of $C = {CHUNK}$ queries the implied scores are formed directly ($C$ "
           "per query), across chunks a $d_h \\times d_h$ running state is built and read ($d_h$ per query) "
           "→ $4Nd(C + d_h)$ FLOPs, linear in $N$; memory $hNC$ scores plus $N/C$ states of $d_h^2$ per head.",
    paper="Katharopoulos et al. 2020, Transformers are RNNs; RoPE with it: Su et al. 2021, RoFormer §3.3",
    style=Style("#CC79A7", "solid", "x"),
    explicit_scores=False, rotates_features=True, cache=lambda c: LinearState(),
    weights_note="Linear attention's weights are implied: φ(qᵢ)·φ(kⱼ) / Σⱼ′≤ᵢ φ(qᵢ)·φ(kⱼ′). With RoPE the "
                 "numerator's features are rotated and the denominator's are not (RoFormer §3.3), so a row "
                 "need not sum to 1 and can hold negative weights.",
))
