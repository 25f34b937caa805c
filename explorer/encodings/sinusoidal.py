"""Sinusoidal absolute positions (Vaswani et al. 2017): a fixed table added to the embeddings."""
from __future__ import annotations

import math

import torch

from .. import figures
from ..positions import cosine_similarity
from ..view import Caption, Choice, Columns, Figure, Markdown, Section, Slider
from ._base import PositionalEncoding, register

SCALE = 0.1  # the model adds the table times this: token embeddings start with std 0.02


def sinusoidal_table(T: int, C: int, device=None) -> torch.Tensor:
    """``PE[p, 2i] = sin(p / 10000^(2i/C))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/C))``: (T, C)."""
    pos = torch.arange(T, dtype=torch.float32, device=device)[:, None]
    freq = torch.exp(torch.arange(0, C, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / C))
    table = torch.zeros(T, C, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : C // 2]
    return table


@register("sinusoidal")
class SinusoidalEncoding(PositionalEncoding):
    order = 0
    title = "Sinusoidal"
    summary = "a fixed table of sines and cosines added to the token embeddings"
    paper = "Vaswani et al. 2017, Attention Is All You Need"
    offsets_only = False  # a row per absolute position

    def __init__(self, config):
        super().__init__(config)
        self.n_embd = config.n_embd
        self.scale = SCALE

    def embed(self, T, device=None):
        return self.scale * sinusoidal_table(T, self.n_embd, device)

    @classmethod
    def section(cls):
        return Section("Sinusoidal", (
            Slider("pe_sin_T", "Positions", 8, 256, 64, "How many positions (rows) to show."),
            Choice("pe_sin_C", "Dimensions", (16, 32, 64, 128, 256), 64, "The model width C (columns)."),
        ), _view)


def _view(v: dict) -> list:
    table = sinusoidal_table(int(v["pe_sin_T"]), int(v["pe_sin_C"])).numpy()
    return [
        Markdown(r"$PE_{p,2i} = \sin(p / 10000^{2i/C})$, $PE_{p,2i+1} = \cos(p / 10000^{2i/C})$: every pair of "
                 "dimensions is a clock at its own speed, fast on the left, slow on the right. "
                 f"The model adds this table times **{SCALE}** to its token embeddings, which start with a "
                 "standard deviation of 0.02: at full size the positions would drown the tokens."),
        Columns([
            [Figure(figures.matrix_figure(table, "position × dimension", "dimension", "position", "RdBu", zmid=0),
                    "pe_sin_table", "The sinusoidal table: one row per position, one column per dimension.")],
            [Figure(figures.matrix_figure(cosine_similarity(table), "cosine similarity of positions", "position",
                                          "position"), "pe_sin_sim",
                    "Cosine similarity between every pair of positions' rows.")],
        ]),
        Caption("Nearby positions look alike and the similarity depends (almost) only on the distance: the band "
                "along the diagonal."),
    ]
