"""Small views shared by the encodings' tabs: similarity between positions and a 2-D projection.

Each encoding's own views live beside it in ``explorer/encodings/``.
"""
from __future__ import annotations

import numpy as np
import torch


def cosine_similarity(table: np.ndarray) -> np.ndarray:
    """``(T, C) -> (T, T)`` cosine similarity between every pair of rows."""
    t = torch.as_tensor(table, dtype=torch.float32)
    t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (t @ t.T).numpy()


def pca_2d(table: np.ndarray) -> np.ndarray:
    """``(T, C) -> (T, 2)``: the rows projected on their two main directions."""
    x = torch.as_tensor(table, dtype=torch.float32)
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:2].T).numpy()
