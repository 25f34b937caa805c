"""ALiBi, attention with linear biases (Press et al. 2022, "Train Short, Test Long"): no vector at
all, a penalty ``-m_h * (i - j)`` on each query-key score, with one slope per head."""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import figures
from ..attention import alibi_bias
from ..view import Choice, Columns, Figure, Markdown, Section, Slider
from ._base import PositionalEncoding, register


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's head slopes: the geometric sequence ``2^(-8/n), 2^(-16/n), ...`` for n a power of two;
    otherwise the slopes of the nearest power below, then every other slope of the next power up
    (Press et al. 2022, the paper's reference code)."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        values = powers(n_head)
    else:
        low = 2 ** math.floor(math.log2(n_head))
        values = powers(low) + powers(2 * low)[0::2][: n_head - low]
    return torch.tensor(values, dtype=torch.float32)


@register("alibi")
class ALiBiEncoding(PositionalEncoding):
    order = 30
    title = "ALiBi"
    summary = "a penalty growing with distance subtracted from every score, one slope per head"
    paper = "Press et al. 2022, Train Short, Test Long"
    biases_scores = True

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("_slopes", alibi_slopes(config.n_head), persistent=False)

    @classmethod
    def reread_note(cls, old, new) -> str:
        if old.n_head == new.n_head:
            return ""
        a, b = alibi_slopes(old.n_head), alibi_slopes(new.n_head)
        return (f"ALiBi gives each head its own slope, set by the number of heads: with {new.n_head} heads instead "
                f"of {old.n_head}, head 0's slope is {b[0]:.3g} instead of {a[0]:.3g}, and every other head's "
                "changed too.")

    def slopes(self):
        return self._slopes

    @classmethod
    def section(cls):
        return Section("ALiBi", (
            Choice("pe_alibi_heads", "Heads", (1, 2, 4, 8, 16), 8, "H: how many heads, so how many slopes."),
            Slider("pe_alibi_T", "Positions", 4, 64, 16, "The size of the bias matrices shown."),
        ), _view)


def alibi_view(n_head: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-head slopes ``(nh,)`` and causal bias matrices ``(nh, T, T)`` (NaN above the diagonal)."""
    slopes = alibi_slopes(n_head)
    off = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    bias = alibi_bias(slopes, off).numpy()
    bias[:, off.numpy() < 0] = np.nan
    return slopes.numpy(), bias


def _view(v: dict) -> list:
    nh, T = int(v["pe_alibi_heads"]), int(v["pe_alibi_T"])
    slopes, bias = alibi_view(nh, T)
    show = [0, nh // 2, nh - 1] if nh > 2 else list(range(nh))
    power = math.log2(nh).is_integer()
    return [
        Markdown(r"ALiBi adds no vector at all: it subtracts $m_h \cdot (i - j)$ from each query-key score, a "
                 r"penalty growing with distance. With the heads numbered $h = 0, \dots, H-1$ the slopes are "
                 r"$m_h = 2^{-8(h+1)/H}$: steep heads look locally, shallow ones far."
                 + ("" if power else f" H = {nh} is not a power of two, so (as the paper's code does) the slopes "
                    "are those of the power of two below, then every other slope of the power above.")),
        Figure(figures.lines_figure({"slope": (list(range(nh)), slopes.tolist())}, "slope per head", "head h",
                                    "slope m_h", log_y=True, height=280, x_integer=True), "pe_alibi_slopes",
               "The slope of each head, on a log scale."),
        Columns([[Figure(figures.matrix_figure(bias[h], f"head {h}: bias (slope {slopes[h]:.4f})", "key j",
                                               "query i", height=320), f"pe_alibi_bias_{h}",
                         f"The bias head {h} adds to each score.")] for h in show]),
    ]
