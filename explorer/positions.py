"""What each positional encoding looks like, computed from the encodings themselves.

Every function returns arrays for a figure; none draws. Papers: Vaswani et al. 2017
(sinusoidal), Su et al. 2021 (RoPE), Press et al. 2022 (ALiBi); "none" after Haviv et al. 2022,
"Transformer Language Models without Positional Encodings Still Learn Positional Information".
"""
from __future__ import annotations

import numpy as np
import torch

from .attention import alibi_bias
from .encodings import alibi_slopes, apply_rope, rope_angles, sinusoidal_table


def cosine_similarity(table: np.ndarray) -> np.ndarray:
    """``(T, C) -> (T, T)`` cosine similarity between every pair of rows."""
    t = torch.as_tensor(table, dtype=torch.float32)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (t @ t.T).numpy()


def sinusoidal(T: int, C: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(T, C)`` table and its position-to-position similarity."""
    table = sinusoidal_table(T, C).numpy()
    return table, cosine_similarity(table)


def rope_example(hs: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed query and key of head size ``hs`` (seeded) to rotate."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(hs, generator=g).numpy(), torch.randn(hs, generator=g).numpy()


def rope_planes(vec: np.ndarray, position: int) -> np.ndarray:
    """``vec`` rotated to ``position``, as ``(hs/2, 2)``: one 2-D point per plane."""
    hs = len(vec)
    angles = rope_angles(position + 1, hs)[position:]  # (1, hs/2)
    rotated = apply_rope(torch.as_tensor(vec, dtype=torch.float32)[None], angles)[0]
    return rotated.view(hs // 2, 2).numpy()


def rope_scores(q: np.ndarray, k: np.ndarray, T: int) -> np.ndarray:
    """``(T, T)`` scores of the query placed at m against the key placed at n: constant along each
    diagonal m - n, because a rotation by m and one by n leave only their difference."""
    hs = len(q)
    angles = rope_angles(T, hs)
    qs = apply_rope(torch.as_tensor(q, dtype=torch.float32).expand(T, hs), angles)
    ks = apply_rope(torch.as_tensor(k, dtype=torch.float32).expand(T, hs), angles)
    return (qs @ ks.T).numpy()


def alibi(n_head: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-head slopes ``(nh,)`` and causal bias matrices ``(nh, T, T)`` (NaN above the diagonal)."""
    slopes = alibi_slopes(n_head)
    off = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    bias = alibi_bias(slopes, off).numpy()
    bias[:, off.numpy() < 0] = np.nan
    return slopes.numpy(), bias


def pca_2d(table: np.ndarray) -> np.ndarray:
    """``(T, C) -> (T, 2)``: the rows projected on their two main directions."""
    x = torch.as_tensor(table, dtype=torch.float32)
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).numpy()


def uniform_attention_signal(T: int) -> np.ndarray:
    """With no encoding, a causal head that attends uniformly gives the first token weight
    ``1/(t+1)`` at position t: a signal of position the model can read."""
    return 1.0 / (np.arange(T) + 1.0)
