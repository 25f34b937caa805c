"""No positional encoding: the model gets no position signal at all (Haviv et al. 2022,
"Transformer Language Models without Positional Encodings Still Learn Positional Information";
Kazemnejad et al. 2023, "The Impact of Positional Encoding on Length Generalization")."""
from __future__ import annotations

import numpy as np
import torch

from .. import figures
from ..tasks import TASKS
from ..view import Figure, Markdown, Section
from ._base import PositionalEncoding, register


@register("none")
class NoEncoding(PositionalEncoding):
    order = 40
    title = "None"
    summary = "no position signal: a causal model can still tell how many tokens it sees"
    paper = "Haviv et al. 2022; Kazemnejad et al. 2023"

    @classmethod
    def section(cls):
        return Section("None", (), _view)


def uniform_average_signals(T: int, d: int = 64, samples: int = 512, seed: int = 0) -> dict:
    """What a head that attends uniformly hands on at position ``t``, measured on random values.

    The head's output is the average of ``t + 1`` value vectors. ``marked``: how much of a token
    recognisable by its content (a start token, drawn as a fixed direction) the average holds,
    read by projecting on that direction: ``1/(t+1)``. ``size``: the length of the average of
    ordinary tokens (independent random values of length 1): about ``1/sqrt(t+1)``."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(samples, T, d, generator=g)
    values = values / values.norm(dim=-1, keepdim=True)  # every value vector of length 1
    mean = values.cumsum(1) / torch.arange(1, T + 1).view(1, T, 1)  # (samples, T, d) uniform average at t
    marked = (mean * values[:, :1]).sum(-1)  # projection on token 0's own value
    size = mean.norm(dim=-1)
    return {"t": list(range(T)), "marked": marked.mean(0).numpy(), "size": size.mean(0).numpy()}


def _view(v: dict) -> list:
    T = 64
    m = uniform_average_signals(T)
    t = np.arange(T)
    marked_tasks = [n for n in TASKS.names() if TASKS[n].separator]
    plain_tasks = [n for n in TASKS.names() if not TASKS[n].separator]
    return [
        Markdown(
            "With no encoding, a causal model can still tell positions apart: the token at position $t$ sees "
            "exactly $t+1$ tokens, so a head that spreads its attention evenly gives each of them weight "
            "$1/(t+1)$. Later layers do not see those weights, only the head's output, the **average** of the "
            "$t+1$ values. Two things about that average change with $t$, measured here on random values:\n"
            "- the share of a token recognisable by its content (a start token, a separator) falls as "
            "$1/(t+1)$: a later layer can read it by looking for that token's value;\n"
            "- with ordinary tokens no share can be told apart; what shrinks is the **size** of the average, "
            "about $1/\\sqrt{t+1}$ (random directions partly cancel).\n\n"
            f"In this app {', '.join(marked_tasks)} have such a token, the separator '=', right after the input; "
            f"{', '.join(plain_tasks)} have none at a fixed place, so there only the size signal exists. Both "
            "fade with $t$: telling position 40 from 41 means telling 1/41 from 1/42, and without causality (an "
            "encoder) there is no signal at all (Haviv et al. 2022)."),
        Figure(figures.lines_figure({
            "share of a marked token (measured)": (m["t"], m["marked"].tolist()),
            "1/(t+1)": (m["t"], (1 / (t + 1)).tolist()),
            "size of the average (measured)": (m["t"], m["size"].tolist()),
            "1/√(t+1)": (m["t"], (1 / np.sqrt(t + 1)).tolist()),
        }, "uniform causal attention: what its output carries at position t", "position t", "value", height=320,
            log_y=True, dashed=("1/(t+1)", "1/√(t+1)")), "pe_none_signal",
            "Measured share of a marked token and size of the average at each position, with 1/(t+1) and "
            "1/√(t+1) for comparison."),
    ]
