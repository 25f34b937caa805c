"""Rotary position embeddings, RoPE (Su et al. 2021, "RoFormer"): queries and keys rotated by
position, so a score depends only on the offset between query and key."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import figures
from ..view import Caption, Choice, Columns, Figure, Markdown, Section, Slider
from ._base import PositionalEncoding, register


def rope_angles(T: int, hs: int, base: float = 10000.0, device=None, start: int = 0) -> Tensor:
    """RoPE's rotation angle ``p * theta_i`` for positions p = start .. start + T - 1 and plane i,
    ``theta_i = base^(-2i/hs)``: (T, hs/2)."""
    theta = base ** (-torch.arange(0, hs, 2, dtype=torch.float32, device=device) / hs)
    return torch.arange(start, start + T, dtype=torch.float32, device=device)[:, None] * theta


def apply_rope(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate each pair of dimensions ``(x[2i], x[2i+1])`` of ``x`` (..., T, hs) by ``angles`` (T, hs/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


@register("rope")
class RotaryEncoding(PositionalEncoding):
    order = 20
    title = "RoPE"
    summary = "queries and keys rotated by position: scores depend only on the offset"
    paper = "Su et al. 2021, RoFormer"
    needs_even_head_dim = True

    @classmethod
    def reread_note(cls, old, new) -> str:
        if old.head_dim == new.head_dim:
            return ""
        return (f"RoPE's rotation speeds are set by the head size, which went from {old.head_dim} to "
                f"{new.head_dim}: almost every plane of dimensions now rotates at another speed than it learned "
                "with (only each head's first plane, at speed 1, keeps its own).")

    def rotate(self, q, k, start: int = 0):
        angles = rope_angles(q.size(-2), q.size(-1), device=q.device, start=start)
        return apply_rope(q, angles), apply_rope(k, angles)

    @classmethod
    def section(cls):
        return Section("RoPE", (
            Choice("pe_rope_hs", "Head size", (4, 8, 16), 8, "Dimensions per head: hs/2 planes are rotated."),
            Slider("pe_rope_m", "Query position m", 0, 63, 5, "Where the query sits."),
            Slider("pe_rope_n", "Key position n", 0, 63, 2, "Where the key sits."),
        ), _view)


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


def _view(v: dict) -> list:
    hs, m, n = int(v["pe_rope_hs"]), int(v["pe_rope_m"]), int(v["pe_rope_n"])
    q, k = rope_example(hs)
    qp, kp = rope_planes(q, m), rope_planes(k, n)
    score = float((qp * kp).sum())
    return [
        Markdown(r"RoPE rotates each 2-D plane $i$ of the query by $m\,\theta_i$ and of the key by $n\,\theta_i$, "
                 r"$\theta_i = 10000^{-2i/d_h}$. Rotations keep lengths, and the dot product of two rotated vectors "
                 r"depends only on the angle between them, so the score depends only on $m - n$."),
        Figure(figures.planes_figure(qp, kp, f"query at m = {m}, key at n = {n}: score q·k = {score:.3f} "
                                             f"(offset m − n = {m - n})"), "pe_rope_planes",
               "Each plane of the query and the key as an arrow from the origin."),
        Columns([
            [Figure(figures.matrix_figure(rope_scores(q, k, 32), "score of the same q, k at every (m, n)",
                                          "key position n", "query position m", "RdBu", zmid=0), "pe_rope_scores",
                    "The score of one query and one key placed at every pair of positions.")],
            [],
        ]),
        Caption("Move both sliders by the same amount: the score does not change. In the matrix, every diagonal "
                "(constant m − n) has one colour."),
    ]
