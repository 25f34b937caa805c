"""The plainest statement of each attention kind: one query at a time, one key at a time, in
float64. Every registered kind must have one here (a test checks): a new kind brings its loop."""
import math

import torch
import torch.nn.functional as F


def softmax_loop(q, k, v, config, allowed, rotate=None, slopes=None):
    """Softmax over the keys a pattern allows (softmax, windows, block-sparse)."""
    B, H, T, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = [j for j in range(T) if allowed[i, j]]
                s = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(D) - (0 if slopes is None else slopes[h] * (i - j))
                                 for j in keys])
                w = torch.softmax(s, 0)
                out[b, h, i] = sum(wj * v[b, h, j] for wj, j in zip(w, keys))
    return out


def linear_loop(q, k, v, config, allowed, rotate=None, slopes=None):
    """phi(q_i).phi(k_j) over the causal keys, normalised by the unrotated features (RoFormer 3.3)."""
    B, H, T, D = q.shape
    phi = lambda x: F.elu(x) + 1  # noqa: E731
    fq, fk = phi(q), phi(k)
    nq, nk = rotate(fq, fk) if rotate is not None else (fq, fk)
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                num = sum(float(nq[b, h, i] @ nk[b, h, j]) * v[b, h, j] for j in range(i + 1))
                den = sum(float(fq[b, h, i] @ fk[b, h, j]) for j in range(i + 1))
                out[b, h, i] = num / den
    return out


def hierarchical_loop(q, k, v, config, allowed, rotate=None, slopes=None):
    """Each query: the tokens of its own block up to itself, and one summary (the mean key and the
    mean value) of every earlier block; ALiBi measures a summary's distance to its block's centre."""
    B, H, T, D = q.shape
    b = max(1, min(config.window, T))
    out = torch.zeros_like(q)
    for bb in range(B):
        for h in range(H):
            for i in range(T):
                start = (i // b) * b
                keys, vals, dist = [], [], []
                for j in range(start, i + 1):
                    keys.append(k[bb, h, j]), vals.append(v[bb, h, j]), dist.append(i - j)
                for m in range(i // b):
                    keys.append(k[bb, h, m * b:(m + 1) * b].mean(0))
                    vals.append(v[bb, h, m * b:(m + 1) * b].mean(0))
                    dist.append(i - (m * b + (b - 1) / 2))
                s = torch.stack([q[bb, h, i] @ key / math.sqrt(D) - (0 if slopes is None else slopes[h] * d)
                                 for key, d in zip(keys, dist)])
                w = torch.softmax(s, 0)
                out[bb, h, i] = sum(wj * val for wj, val in zip(w, vals))
    return out


LOOPS = {"softmax": softmax_loop, "sliding_window": softmax_loop, "dynamic_window": softmax_loop,
         "block_sparse": softmax_loop, "linear": linear_loop, "hierarchical": hierarchical_loop}
