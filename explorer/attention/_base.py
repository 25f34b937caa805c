"""What every attention kind is: one ``AttentionKind`` entry that knows everything about itself.

An entry holds its kernel, its pattern, the plain dense computation it is tested against, its
cost in theory (keys scored per query and score numbers held, padding included, so that the
formulas equal what the kernel does), the label and help of its size control, its sentence for
the Complexity page and its paper, and its plot style. The Lab's controls, ``explorer.cost``,
``explorer.measure``, the figures, the Complexity page, the bench CLI and the tests all read the
entry; nothing elsewhere branches on a kind's name.

Kernels take queries, keys and values shaped ``(B, nh, T, hs)`` and return an
``AttentionResult``. Every kind is causal and prefix-invariant: a token's output depends only on
the tokens up to it, never on how many follow. With ``need_weights`` the result also carries the
``(B, nh, T, T)`` weights the kernel applied (scattered from its own layout); otherwise the
sub-quadratic kinds build no ``T x T`` tensor.

For generation token by token an entry names its ``cache`` (one layer's memory of the past, see
``_cache.py``), or says in ``cache_reason`` why it has none; windows also give their ``reach``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from ..registry import Registry


@dataclass
class AttentionResult:
    out: Tensor  # (B, nh, T, hs)
    weights: Optional[Tensor] = None  # (B, nh, T, T) weights applied, only when asked


@dataclass(frozen=True)
class Style:
    """How a kind is drawn on every page: colour (Okabe-Ito), line dash and marker."""
    color: str
    dash: str = "solid"
    marker: str = "circle"


@dataclass(frozen=True)
class SizeControl:
    """The kind's size control (``config.window``): its label and help on every page."""
    label: str
    help: str


Kernel = Callable[..., AttentionResult]  # (q, k, v, config, slopes, need_weights[, rotate]) -> result


@dataclass(frozen=True)
class AttentionKind:
    name: str
    order: int  # place in menus and legends
    kernel: Kernel  # the computation the model runs
    pattern: Callable[[int, object], Tensor]  # (T, config) -> (T, T) bool: may query i see key j
    reference: Callable[..., AttentionResult]  # (q, k, v, config, slopes[, rotate]) dense statement, for tests
    keys_per_query: Callable[[int, object], float]  # (T, config) keys each query is scored against, padding included
    score_numbers: Callable[[int, object], float]  # (T, config) scores (and state) held at once, per head
    used_pairs: Callable[[int, object], float]  # (T, config) of the scored (query, key) pairs, those the result uses
    summary: str  # one line for the Lab: what each token attends to, and the cost
    theory: str  # markdown for the Complexity page: S = ..., and what that means
    paper: str  # where it comes from
    style: Style
    size_control: Optional[SizeControl] = None  # None: the kind has no size to set
    explicit_scores: bool = True  # forms q.k scores (so an ALiBi bias can be added)
    rotates_features: bool = False  # applies RoPE itself (after a feature map) instead of to q and k
    weights_note: str = ""  # what the returned weights are, where that is not plain softmax weights
    measure_with_weights: bool = False  # the Complexity page measures the path that forms the weights
    score_copies: tuple = (3.0, 4.0)  # score-sized tensors alive at the kernel's peak: forward, forward+backward
    cache: Optional[Callable] = None  # config -> one layer's LayerCache for token-by-token generation (_cache.py)
    cache_reason: str = ""  # why the kind has no cache (cache is None), a sentence for the page
    reach: Optional[Callable[[object], int]] = None  # config -> the largest offset i - j a query sees; None: unbounded

    def new_cache(self, config):
        """One layer's cache; ``ValueError`` with the kind's reason when it has none."""
        if self.cache is None:
            raise ValueError(f"{self.name} attention has no key/value cache: {self.cache_reason}")
        return self.cache(config)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, config, pos, need_weights: bool = False) -> AttentionResult:
        """Run the kernel with a positional encoding's signals: its rotation and its slopes."""
        if self.rotates_features:
            return self.kernel(q, k, v, config, pos.slopes(), need_weights, rotate=pos.rotate)
        q, k = pos.rotate(q, k)
        return self.kernel(q, k, v, config, pos.slopes(), need_weights)

    def measured_call(self, config) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """The function the Complexity page times for this kind."""
        return lambda q, k, v: self.kernel(q, k, v, config, None, self.measure_with_weights).out

    def flops(self, config, T: int) -> float:
        """FLOPs of one layer's attention core (all heads, one sequence): ``4 * nh * hs * T * S``
        (one multiply-add is 2 FLOPs; each scored key costs ``2 hs`` for its score and ``2 hs`` for
        its share of the weighted sum)."""
        return 4.0 * config.n_head * config.head_dim * T * self.keys_per_query(T, config)

    def score_bytes(self, config, T: int, bytes_per_value: int = 4) -> float:
        """Bytes of the scores (and state) one layer holds at once, all heads."""
        return bytes_per_value * config.n_head * self.score_numbers(T, config)

    def useful_fraction(self, config, T: int) -> float:
        """The share of the scored pairs that the result uses (the rest is masked-out work and padding)."""
        return self.used_pairs(T, config) / (T * self.keys_per_query(T, config))


ATTENTION: Registry[AttentionKind] = Registry("attention kind", order=lambda kind: kind.order)


def register(kind: AttentionKind) -> AttentionKind:
    return ATTENTION.add(kind.name, kind)


@dataclass(frozen=True)
class Reference:
    """A kernel the Complexity page measures beside the kinds as a yardstick (torch's fused
    attention): it computes what a kind does, so it is no kind of its own."""
    name: str
    order: int
    same_as: str  # the kind whose result it computes (its theory FLOPs are that kind's)
    call: Callable[[Tensor, Tensor, Tensor], Tensor]  # (q, k, v) -> out
    theory: str  # markdown for the Complexity page
    paper: str
    style: Style

    def measured_call(self, config) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        return self.call

    def flops(self, config, T: int) -> float:
        return ATTENTION[self.same_as].flops(config, T)


REFERENCES: Registry[Reference] = Registry("reference kernel", order=lambda ref: ref.order)


# ----------------------------------------------------------------------------------------------
# Shared pieces: offsets, ALiBi's bias, padding, the dense reference


def causal_offsets(T: int, device=None) -> Tensor:
    i = torch.arange(T, device=device)
    return i[:, None] - i[None, :]  # (T, T) offset i - j


def causal_pattern(T: int, config=None) -> Tensor:
    return causal_offsets(T) >= 0


def causal_pairs(T: int, config=None) -> float:
    """``T (T + 1) / 2``: the pairs a causal pattern keeps."""
    return T * (T + 1) / 2


def band_pairs(T: int, w: int) -> float:
    """``sum_i min(i + 1, w)``: the pairs a causal window of ``w`` keys keeps."""
    w = min(w, T)
    return w * (w + 1) / 2 + (T - w) * w


def alibi_bias(slopes: Tensor, offsets: Tensor) -> Tensor:
    """ALiBi's bias ``-slope * (i - j)`` for each head: ``(nh,) x offsets -> (nh, *offsets.shape)``."""
    return -slopes.view(-1, *([1] * offsets.dim())) * offsets.to(slopes.dtype)


def softmax_fp32(scores: Tensor) -> Tensor:
    """Softmax over the last dimension computed in float32 whatever the scores' dtype (under bf16
    autocast the scores are bfloat16, and CPU autocast would run softmax in bfloat16 too): the
    mixed-precision practice (float64 stays float64). Multiply values by ``weights.to(v.dtype)``."""
    return torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))


def padded(T: int, size: int) -> tuple[int, int]:
    """``(blocks, padded length)`` when ``T`` is cut into blocks of ``size``."""
    blocks = -(-T // size)
    return blocks, blocks * size


def reference_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor, slopes: Optional[Tensor] = None):
    """Plain masked softmax attention over a dense ``(T, T)`` pattern: the tests' reference."""
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if slopes is not None:
        scores = scores + alibi_bias(slopes, causal_offsets(T, q.device))
    scores = scores.masked_fill(~allowed.to(q.device), float("-inf"))
    weights = softmax_fp32(scores)
    return AttentionResult(weights.to(v.dtype) @ v, weights)


def softmax_over(pattern_fn: Callable[[int, object], Tensor]) -> Callable[..., AttentionResult]:
    """The reference of a kind that is softmax over its pattern."""
    def reference(q, k, v, config, slopes=None) -> AttentionResult:
        return reference_attention(q, k, v, pattern_fn(q.size(-2), config), slopes)

    return reference


def pattern(kind: str, T: int, config) -> Tensor:
    """The boolean ``(T, T)`` pattern of ``kind``: True where query i may attend to key j."""
    return ATTENTION[kind].pattern(T, config)
