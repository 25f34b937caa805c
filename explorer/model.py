"""A small decoder-only transformer (GPT-style, pre-LayerNorm), after nanoGPT's ``model.py``.

    x = tok_emb(idx) + pos.embed(T)
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits = lm_head(ln_f(x))

The attention kind and the positional encoding are looked up once, by name, from their
registries. ``forward(..., need_weights=True)`` also returns every layer's and head's attention
weights, exactly those the kernels applied.

Papers: Vaswani et al. 2017 (the transformer); Radford et al. 2019 (GPT-2, pre-LN decoder).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import ATTENTION
from .config import ModelConfig
from .encodings import ENCODINGS, PositionalEncoding


@dataclass
class ModelOutput:
    logits: Tensor  # (B, T, vocab)
    loss: Optional[Tensor] = None  # mean cross-entropy over targets != -100
    attentions: Optional[list[Tensor]] = None  # n_layer tensors (B, nh, T, T), when asked


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.kernel = ATTENTION[config.attention].fn

    def forward(self, x: Tensor, pos: PositionalEncoding, need_weights: bool = False):
        B, T, C = x.shape
        nh, hs = self.config.n_head, self.config.head_dim
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        q, k = pos.rotate(q, k)
        result = self.kernel(q, k, v, self.config, pos.slopes(), need_weights)
        y = result.out.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.c_proj(y), result.weights


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, pos: PositionalEncoding, need_weights: bool = False):
        a, weights = self.attn(self.ln_1(x), pos, need_weights)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos = ENCODINGS[config.encoding](config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (GPT-2)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None, need_weights: bool = False) -> ModelOutput:
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, C)
        pe = self.pos.embed(T, idx.device)
        if pe is not None:
            x = x + pe
        attentions = []
        for block in self.blocks:
            x, weights = block(x, self.pos, need_weights)
            attentions.append(weights)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return ModelOutput(logits, loss, attentions if need_weights else None)


def build_model(config: ModelConfig, seed: int = 0) -> GPT:
    """A freshly initialised model; the same seed always gives the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(config)


def with_config(model: GPT, config: ModelConfig) -> GPT:
    """The same trained weights read under another config that keeps every parameter's shape
    (another attention kind, window or head count): a change that needs no retraining."""
    clone = GPT(config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def same_parameters(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two configs have parameters of the same names and shapes."""
    keys = ("vocab_size", "block_size", "n_layer", "n_embd", "encoding")
    return all(getattr(a, k) == getattr(b, k) for k in keys)
