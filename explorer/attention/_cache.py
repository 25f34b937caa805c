"""What one layer remembers of the past when generating token by token: a ``LayerCache``.

A kind that can be cached names its cache in its ``AttentionKind`` entry (``cache``: config ->
``LayerCache``); ``explorer.kvcache`` makes one per layer and the model hands each new token's
queries, keys and values to it. Three shapes of memory:

- ``KeyValueCache``: the rotated keys and the values of the positions a later query may still
  see, with their absolute positions. Every kind that is softmax over a pattern uses it, told by
  its entry which keys a query sees (``sees``) and which a later query can still reach
  (``keeps``): all of them for full attention, the last ``w`` for a sliding window (a rolling
  cache), the global tokens, the own block and ``K`` strided hops for block-sparse attention.
- a recurrent state (``linear.LinearState``) and block summaries (``hierarchical.BlockSummaries``),
  written beside their kinds.

``nbytes`` is the bytes of the tensors it holds (keys and values, or the state), read from the
tensors themselves; ``positions()`` the token positions held one by one; ``folded()`` those
summarised into a state.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ._base import alibi_bias, softmax_fp32

Sees = Callable[[Tensor, Tensor, object], Tensor]  # (i, j, config) -> bool, broadcasting: may query i see key j
Keeps = Callable[[Tensor, int, object], Tensor]  # (j (S,), t, config) -> (S,) bool: may a query at t or later see j


class LayerCache:
    """One layer's memory of the past; subclasses fill in ``attend`` and ``tensors``."""
    label = ""  # what it holds, in words for the page

    def attend(self, q: Tensor, k: Tensor, v: Tensor, start: int, pos) -> Tensor:
        """Queries, keys and values (B, nh, n, hs) of ``n`` new tokens at positions ``start ..
        start + n - 1``, before any rotation; returns their outputs (B, nh, n, hs) and remembers
        what later tokens need."""
        raise NotImplementedError

    def fill(self, q: Tensor, k: Tensor, v: Tensor, pos) -> None:
        """Remember a prompt of ``n`` tokens from position 0 whose outputs the kind's own kernel
        computed (the model reads a prompt that way); by default by attending to it."""
        self.attend(q, k, v, 0, pos)

    def tensors(self) -> list[Tensor]:
        return []

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors())

    def positions(self) -> list[int]:
        """Absolute positions held token by token."""
        return []

    def folded(self) -> list[int]:
        """Absolute positions summarised into a state (not recoverable one by one)."""
        return []


class KeyValueCache(LayerCache):
    """Keys and values of the positions a later query can still see (Pope et al. 2022)."""

    def __init__(self, config, sees: Sees, keeps: Keeps, label: str):
        self.config, self.sees, self.keeps, self.label = config, sees, keeps, label
        self.k = self.v = None  # (B, nh, S, hs): keys rotated to their position, values
        self.pos = torch.zeros(0, dtype=torch.long)  # (S,) absolute position of each held key

    def _append(self, k: Tensor, v: Tensor, start: int) -> None:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=-2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=-2)
        self.pos = torch.cat([self.pos, torch.arange(start, start + k.size(-2))])

    def _forget(self, t: int) -> None:
        """Drop the keys no query at ``t`` or later can see."""
        keep = self.keeps(self.pos, t, self.config)
        if not bool(keep.all()):
            self.k, self.v, self.pos = self.k[:, :, keep], self.v[:, :, keep], self.pos[keep]

    def fill(self, q, k, v, pos):
        self._append(pos.rotate(q, k)[1], v, 0)
        self._forget(k.size(-2))

    def attend(self, q, k, v, start, pos):
        n, hs = q.size(-2), q.size(-1)
        q, k = pos.rotate(q, k, start)
        self._append(k, v, start)
        i = torch.arange(start, start + n)[:, None]  # (n, 1) query positions
        j = self.pos[None, :]  # (1, S)
        scores = q @ self.k.transpose(-1, -2) / math.sqrt(hs)  # (B, nh, n, S)
        slopes = pos.slopes()
        if slopes is not None:
            scores = scores + alibi_bias(slopes, i - j)
        scores = scores.masked_fill(~self.sees(i, j, self.config).to(q.device), float("-inf"))
        out = softmax_fp32(scores).to(self.v.dtype) @ self.v  # (B, nh, n, hs)
        self._forget(start + n)
        return out

    def tensors(self):
        return [] if self.k is None else [self.k, self.v]

    def positions(self):
        return self.pos.tolist()


def keeps_all(j: Tensor, t: int, config) -> Tensor:
    return torch.ones_like(j, dtype=torch.bool)
