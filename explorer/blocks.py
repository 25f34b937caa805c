"""What a transformer block is made of, each chosen once by name from a registry: the
normalisation (``NORMS``), the feed-forward layer (``FEEDFORWARD``: dense, mixture of experts, or none
for an attention-only transformer) and
the block layout (``LAYOUTS``: where the residual path and the norms go). Plus the funnel's causal
pooling between blocks (hierarchical representations).

Layouts, for one sublayer f (attention, then the feed-forward layer):

    pre_ln       x = x + f(norm(x))          GPT-2 (Radford et al. 2019); Xiong et al. 2020
    post_ln      x = norm(x + f(x))          the original transformer (Vaswani et al. 2017)
    no_residual  x = f(norm(x))              no residual path: every layer must pass everything on

Norms: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019: no mean subtraction, no bias).
Funnel: Dai et al. 2020 (Funnel-Transformer), here kept causal: a merged token is the mean of a pair
of tokens (2j, 2j+1), and what the coarser blocks add to it is handed back to positions 2j+1 and
2j+2 only, the first that have seen both tokens of the pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .moe import Expert, MoE
from .registry import Registry


# ---------------------------------------------------------------------------------------------- norms
@dataclass(frozen=True)
class Norm:
    name: str
    title: str
    paper: str
    make: Callable[[int], nn.Module]  # width -> module


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * g: no mean subtraction, no bias (Zhang & Sennrich 2019)."""

    def __init__(self, n_embd: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:  # in float32 whatever x's dtype (bf16 autocast), cast back
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm computed in float32 whatever its input's dtype, then cast back: under CPU
    bf16 autocast torch's own runs in bfloat16 on bfloat16 input (mean and variance included)."""

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # float64 stays float64
        return F.layer_norm(h, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


NORMS: Registry[Norm] = Registry("norm")
NORMS.add("layernorm", Norm("layernorm", "LayerNorm", "Ba et al. 2016", LayerNorm))
NORMS.add("rmsnorm", Norm("rmsnorm", "RMSNorm", "Zhang & Sennrich 2019", RMSNorm))


# ---------------------------------------------------------------------------------------------- feed-forward
class DenseMLP(Expert):
    """width -> hidden -> width with GELU (one expert's shape); ``forward`` returns (output, 0)
    like a mixture does."""

    def forward(self, x: Tensor, hook, name: str) -> tuple[Tensor, Tensor]:
        return super().forward(x), x.new_zeros(())


@dataclass(frozen=True)
class FeedForward:
    name: str
    title: str
    paper: str
    hooks: tuple[str, ...]  # the hook points it adds under blocks.{i}.
    make: Callable  # config -> module whose forward(x, hook, name) returns (out, aux_loss); None: no sublayer
    active_params: Callable  # config -> parameters one token uses in one layer's feed-forward
    cache_reason: str = ""  # why a key/value cache cannot reproduce the full forward pass ("" = it can)
    sublayer: bool = True  # False: the block has no feed-forward sublayer at all (no norm, no mlp_out hook)


def _hidden(c) -> int:
    return c.mlp_ratio * c.n_embd


def _expert_params(c) -> int:
    return 2 * c.n_embd * _hidden(c) + _hidden(c) + c.n_embd


FEEDFORWARD: Registry[FeedForward] = Registry("feed-forward layer")
FEEDFORWARD.add("dense", FeedForward("dense", "Dense MLP", "Vaswani et al. 2017", (),
                                     lambda c: DenseMLP(c.n_embd, _hidden(c)), _expert_params))
FEEDFORWARD.add("moe", FeedForward(
    "moe", "Mixture of experts", "Shazeer et al. 2017; Fedus et al. 2021", ("moe.gates", "moe.experts", "moe.kept"),
    lambda c: MoE(c.n_embd, _hidden(c), c.n_experts, c.top_k, c.capacity_factor, c.router_noise),
    lambda c: c.top_k * _expert_params(c) + c.n_embd * c.n_experts,
    "an expert's capacity is a share of all the tokens in the forward pass, so a token kept when read alone "
    "may be dropped when the whole sequence is read again: a cached step would not compute what the full "
    "forward pass does"))
FEEDFORWARD.add("none", FeedForward(
    "none", "None (attention only)", "Elhage et al. 2021", (), lambda c: None, lambda c: 0, sublayer=False))


# ---------------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    paper: str
    summary: str
    sublayer: Callable[[Tensor, Callable[[Tensor], Tensor], nn.Module], Tensor]  # (x, f, norm) -> new x


LAYOUTS: Registry[Layout] = Registry("block layout")
LAYOUTS.add("pre_ln", Layout("pre_ln", "Pre-LN", "Radford et al. 2019; Xiong et al. 2020",
                             "x + f(norm(x)): the residual path goes around the norm and the layer",
                             lambda x, f, norm: x + f(norm(x))))
LAYOUTS.add("post_ln", Layout("post_ln", "Post-LN", "Vaswani et al. 2017",
                              "norm(x + f(x)): the norm sits on the residual path itself",
                              lambda x, f, norm: norm(x + f(x))))
LAYOUTS.add("no_residual", Layout("no_residual", "No residual", "(an ablation)",
                                  "f(norm(x)): no residual path, each layer must pass everything on",
                                  lambda x, f, norm: f(norm(x))))


# ---------------------------------------------------------------------------------------------- funnel
def pool_pairs(x: Tensor) -> Tensor:
    """(B, T, C) -> (B, T // 2, C): merged token j is the mean of tokens 2j and 2j+1 (an unpaired
    last token is left out: no merged token may contain a token that a later merged one lacks)."""
    B, T, C = x.shape
    return x[:, : T // 2 * 2].view(B, T // 2, 2, C).mean(2)


def unpool_causal(delta: Tensor, T: int) -> Tensor:
    """(B, T', C) -> (B, T, C): position t receives merged token (t + 1) // 2 - 1, the last pair
    that ends at or before t (zeros for t = 0, which has no complete pair yet)."""
    B, Tp, C = delta.shape
    src = (torch.arange(T, device=delta.device) + 1) // 2 - 1  # (T,)
    out = delta.new_zeros(B, T, C)
    ok = (src >= 0) & (src < Tp)
    out[:, ok] = delta[:, src[ok]]
    return out


def spans(T: int, levels: int) -> list[list[tuple[int, int]]]:
    """For each level 0..levels, the (first, last) original positions each token there covers."""
    out = [[(t, t) for t in range(T)]]
    for _ in range(levels):
        prev = out[-1]
        out.append([(prev[2 * j][0], prev[2 * j + 1][1]) for j in range(len(prev) // 2)])
    return out
