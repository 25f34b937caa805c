"""What every positional encoding is: one class that knows everything about itself.

A class offers three hooks the model calls; the base class makes each a no-op, so a kind
overrides only what it does:
- ``embed(T)``: a ``(T, C)`` table added to the token embeddings (sinusoidal, learned);
- ``rotate(q, k, start)``: queries and keys rotated by position, the first at ``start`` (RoPE);
- ``slopes()``: per-head slopes of a linear distance penalty on the scores (ALiBi).
A key/value cache (``explorer.kvcache``) reads new tokens at positions ``start, start + 1, ...``:
``embed_from(start, n)`` and ``rotate(q, k, start)`` give their rows, and ALiBi's bias is computed
from the cached keys' absolute positions. Beside the hooks it carries what the app says about it: a title, a one-line summary, its paper,
whether the train-short-test-long experiment can evaluate it past its training length, and its
tab on the Positional encodings page (``section()``: controls, explanation, figures).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ..registry import Registry


class PositionTooFar(ValueError):
    """A position beyond what an encoding can represent (a learned table's last row)."""


class PositionalEncoding(nn.Module):
    name = ""  # set by register()
    order = 0  # place in menus and legends
    title = ""  # the tab's title
    summary = ""  # one line: what it adds to the model
    paper = ""
    needs_even_head_dim = False  # rotates pairs of dimensions inside each head
    biases_scores = False  # adds a bias to each query-key score (needs explicit scores)
    extrapolates = True  # can encode positions past the training context (the experiment evaluates it there)
    offsets_only = True  # the model sees only offsets i - j (renumbering every position by one shift changes nothing)

    def __init__(self, config):
        super().__init__()

    def embed(self, T: int, device=None) -> Optional[Tensor]:
        return None  # (T, C) or nothing

    def embed_from(self, start: int, n: int, device=None) -> Optional[Tensor]:
        """The rows of positions ``start .. start + n - 1``: (n, C) or nothing."""
        table = self.embed(start + n, device)
        return None if table is None else table[start:]

    def rotate(self, q: Tensor, k: Tensor, start: int = 0) -> tuple[Tensor, Tensor]:
        return q, k  # (B, nh, T, hs) each, the first at position ``start``

    def slopes(self) -> Optional[Tensor]:
        return None  # (nh,) or nothing

    @classmethod
    def reread_note(cls, old, new) -> str:
        """What else changes when trained weights are read under ``new`` instead of ``old`` (configs
        of the same parameters): a sentence, or "" when the encoding itself is unchanged."""
        return ""

    @classmethod
    def section(cls):
        """The encoding's tab on the Positional encodings page (an ``explorer.view.Section``)."""
        return None


ENCODINGS: Registry[type[PositionalEncoding]] = Registry("positional encoding", order=lambda cls: cls.order)


def register(name: str):
    def deco(cls):
        cls.name = name
        return ENCODINGS.add(name, cls)

    return deco
