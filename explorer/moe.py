"""A mixture-of-experts feed-forward layer: a router sends each token to its top-k experts.

    gates  = softmax(x W_g [+ noise])                   (N, E)   the router's probabilities
    top-k  = the k largest gates (renormalised when k >= 2) (N, k)
    y      = sum over the chosen experts e of gate_e * expert_e(x)

Each expert takes at most ``capacity = ceil(capacity_factor * k * N / E)`` tokens (N tokens in
the batch); a token routed to a full expert is dropped *for that expert* (first come, first
served, in token order) and counted; a token dropped by all its experts gets zero from this layer,
so only its residual path carries it on. The load-balancing loss is Switch Transformer's,
``E * sum_e f_e * P_e``: f_e the fraction of tokens whose first choice is e, P_e the mean router
probability of e; it is 1 when routing is uniform and grows as routing collapses onto few experts.

Papers: Shazeer et al. 2017 (sparsely-gated MoE, noisy top-k gating); Lepikhin et al. 2020 (GShard,
top-2, capacity); Fedus et al. 2021 (Switch Transformer, top-1, the balancing loss); Jiang et al.
2024 (Mixtral, top-2 of 8).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Routing:
    """What the router did for one batch, read from a forward pass's hook points."""
    gates: Tensor  # (N, E) router probabilities
    experts: Tensor  # (N, k) chosen experts, best first
    kept: Tensor  # (N, k) bool: False where the expert was full and dropped the token

    @classmethod
    def from_trace(cls, trace: dict, layer: int) -> "Routing":
        g, e, k = (trace[f"blocks.{layer}.moe.{n}"] for n in ("gates", "experts", "kept"))
        return cls(g.reshape(-1, g.shape[-1]), e.reshape(-1, e.shape[-1]), k.reshape(-1, k.shape[-1]))

    @property
    def load(self) -> Tensor:
        """(E,) fraction of the processed (token, choice) pairs each expert took."""
        counts = torch.bincount(self.experts[self.kept], minlength=self.gates.shape[1]).float()
        return counts / max(1, int(self.kept.sum()))

    @property
    def dropped(self) -> float:
        """Fraction of (token, choice) pairs dropped because their expert was full."""
        return float((~self.kept).float().mean())


def top_k_route(gates: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest gates of each token and their indices. With k >= 2 the chosen gates are
    renormalised to sum to 1 (GShard, Mixtral); with k = 1 the gate is kept as it is (Switch
    Transformer): renormalised it would always be 1, and the router would get no gradient from the
    loss through the output, only from the balancing loss."""
    weights, experts = gates.topk(k, dim=-1)  # (N, k)
    return experts, (weights / weights.sum(-1, keepdim=True) if k > 1 else weights)


def capacity(n_tokens: int, n_experts: int, k: int, factor: float) -> int:
    """Tokens one expert takes per batch: ``ceil(factor * k * N / E)``."""
    return math.ceil(factor * k * n_tokens / n_experts)


def keep_within_capacity(experts: Tensor, n_experts: int, cap: int) -> Tensor:
    """(N, k) bool: which (token, choice) pairs fit their expert's capacity. Pairs are served in
    order of choice rank (every token's first choice before any second choice), then token order."""
    N, k = experts.shape
    order = experts.t().reshape(-1)  # (k*N,) first choices of all tokens, then second choices
    onehot = F.one_hot(order, n_experts)  # (k*N, E)
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # this pair's place in its expert's queue
    return (position < cap).view(k, N).t()


def balancing_loss(gates: Tensor, first_choice: Tensor) -> Tensor:
    """Switch Transformer's auxiliary loss ``E * sum_e f_e * P_e``."""
    E = gates.shape[-1]
    f = torch.bincount(first_choice, minlength=E).float() / first_choice.numel()  # (E,) no gradient
    P = gates.mean(0)  # (E,) differentiable
    return E * (f * P).sum()


class Expert(nn.Module):
    """One expert: the dense MLP's shape (width -> hidden -> width, GELU)."""

    def __init__(self, n_embd: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, hidden)
        self.c_proj = nn.Linear(hidden, n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class MoE(nn.Module):
    """``forward(x, hook, name)`` returns the layer's output and its balancing loss; the routing
    is handed to the hook points ``{name}.gates``, ``.experts``, ``.kept`` (nothing is kept on the
    module: a shared model is read by many sessions at once)."""

    def __init__(self, n_embd: int, hidden: int, n_experts: int, top_k: int, capacity_factor: float, noise: float):
        super().__init__()
        self.router = nn.Linear(n_embd, n_experts, bias=False)
        self.experts = nn.ModuleList([Expert(n_embd, hidden) for _ in range(n_experts)])
        self.top_k, self.capacity_factor, self.noise = top_k, capacity_factor, noise

    def forward(self, x: Tensor, hook, name: str) -> tuple[Tensor, Tensor]:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)  # (N, C)
        logits = self.router(flat)  # (N, E)
        if self.training and self.noise > 0:  # noisy top-k gating (Shazeer et al. 2017), training only
            logits = logits + torch.randn_like(logits) * self.noise
        gates = logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32))  # float32 even under bf16 autocast
        experts, weights = top_k_route(gates, self.top_k)  # (N, k)
        E = len(self.experts)
        kept = keep_within_capacity(experts, E, capacity(B * T, E, self.top_k, self.capacity_factor))
        hook(f"{name}.gates", gates.view(B, T, E))
        hook(f"{name}.experts", experts.view(B, T, -1))
        hook(f"{name}.kept", kept.view(B, T, -1))
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero((experts == e) & kept, as_tuple=True)
            if token.numel():
                out.index_add_(0, token, (weights[token, slot, None] * expert(flat[token])).to(out.dtype))
        return out.view(B, T, C), balancing_loss(gates, experts[:, 0])
