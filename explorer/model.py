"""A small decoder-only transformer (GPT-style, pre-LayerNorm), after nanoGPT's ``model.py``.

    x = tok_emb(idx) + pos.embed(T)                       embed, pos_embed
    for each block i:                                     blocks.{i}.resid_pre
        x = x + attn(ln_1(x))                             blocks.{i}.attn.q/k/v/pattern/z, .attn_out, .resid_mid
        x = x + mlp(ln_2(x))                              blocks.{i}.mlp_out, .resid_post
    logits = lm_head(ln_f(x))                             ln_final, logits

The attention kind and the positional encoding are looked up once, by name, from their
registries. Every activation on the right is a named hook point (TransformerLens style):
``forward(idx, capture=[...])`` returns those tensors, exactly the ones the forward pass used, in
``output.trace``; ``edit={name: fn}`` replaces one on the way (an ablation, say). Unknown names
fail loudly with the valid ones. Nothing is recorded when nothing is asked.

``forward(idx, cache=KVCache)`` reads only the new tokens ``idx``, at the positions after those the
cache has seen, each layer's attention reading and extending its layer of the cache
(``explorer.kvcache``; no attention maps are formed on that path). An empty cache's first tokens
(the prompt) are read by the kind's own kernel and then handed to the cache.

Papers: Vaswani et al. 2017 (the transformer); Radford et al. 2019 (GPT-2, pre-LN decoder);
nostalgebraist 2020 (the logit lens).
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import ATTENTION
from .blocks import FEEDFORWARD, LAYOUTS, NORMS, pool_pairs, unpool_causal
from .config import ModelConfig
from .encodings import ENCODINGS, PositionalEncoding

BLOCK_HOOKS = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out", "resid_mid",
               "mlp_out", "resid_post")


def hook_names(n_layer: int, pos_table: bool = True, ffn_hooks: tuple[str, ...] = (), mlp: bool = True) -> list[str]:
    """Every hook point of a model with ``n_layer`` blocks, in the order the forward pass meets them
    (``pos_embed`` only where the encoding adds a table; ``ffn_hooks`` those of its feed-forward
    layer, e.g. a mixture's routing; ``mlp_out`` only where blocks have a feed-forward sublayer)."""
    block = tuple(h for h in BLOCK_HOOKS if mlp or h != "mlp_out") + tuple(ffn_hooks)
    return (["embed"] + (["pos_embed"] if pos_table else []) + [f"blocks.{i}.{h}" for i in range(n_layer)
                                                                 for h in block]
            + ["ln_final", "logits"])


class Hooks:
    """Which activations a forward pass records and which it edits. Names may use ``*`` patterns
    (``blocks.*.attn.pattern``); a name or pattern that matches no hook point raises ``KeyError``
    listing the valid names."""

    def __init__(self, valid: list[str], capture: Iterable[str] | bool | None = None,
                 edit: Optional[dict[str, Callable[[Tensor], Tensor]]] = None):
        if capture is True:
            capture = ["*"]
        self.capture = set(self._expand(valid, capture or ()))
        self.edit = {}
        for pattern, fn in (edit or {}).items():
            for name in self._expand(valid, [pattern]):
                self.edit[name] = fn
        self.trace: dict[str, Tensor] = {}

    @staticmethod
    def _expand(valid: list[str], patterns: Iterable[str]) -> list[str]:
        out = []
        for p in patterns:
            hits = [n for n in valid if fnmatch.fnmatchcase(n, p)]
            if not hits:
                raise KeyError(f"no hook point {p!r}; valid: {', '.join(valid)}")
            out += hits
        return out

    def wants(self, name: str) -> bool:
        return name in self.capture

    def __call__(self, name: str, x: Tensor) -> Tensor:
        fn = self.edit.get(name)
        if fn is not None:
            x = fn(x)
        if name in self.capture:
            self.trace[name] = x
        return x


class NoHooks:
    """The forward pass's default: records nothing, edits nothing."""
    trace: dict = {}

    @staticmethod
    def wants(name: str) -> bool:
        return False

    @staticmethod
    def __call__(name: str, x: Tensor) -> Tensor:
        return x


NO_HOOKS = NoHooks()


@dataclass
class ModelOutput:
    logits: Tensor  # (B, T, vocab)
    loss: Optional[Tensor] = None  # mean cross-entropy over targets != -100
    trace: dict = field(default_factory=dict)  # hook name -> tensor, for the names asked
    aux_loss: Optional[Tensor] = None  # sum over layers of the mixture's balancing loss (0 for dense layers)
    aux_weight: float = 0.0  # its weight in the training objective

    @property
    def objective(self) -> Tensor:
        """What training minimises: the cross-entropy plus the weighted balancing loss."""
        return self.loss + self.aux_weight * self.aux_loss

    @property
    def attentions(self) -> Optional[list[Tensor]]:
        """Every layer's ``(B, nh, T, T)`` attention weights, when they were captured."""
        names = sorted((n for n in self.trace if n.endswith(".attn.pattern")), key=lambda n: int(n.split(".")[1]))
        return [self.trace[n] for n in names] or None


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.kind = ATTENTION[config.attention]

    def forward(self, x: Tensor, pos: PositionalEncoding, hook=NO_HOOKS, name: str = "", cache=None,
                start: int = 0) -> Tensor:
        """``cache``: this layer's ``LayerCache``, ``x`` being the tokens from position ``start`` on."""
        B, T, C = x.shape
        nh, hs = self.config.n_head, self.config.head_dim
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        q, k, v = hook(f"{name}.q", q), hook(f"{name}.k", k), hook(f"{name}.v", v)
        if cache is not None and start > 0:  # new tokens after those the cache holds
            out = cache.attend(q, k, v, start, pos)
        else:
            result = self.kind.attend(q, k, v, self.config, pos, need_weights=hook.wants(f"{name}.pattern"))
            if result.weights is not None:
                hook(f"{name}.pattern", result.weights)
            out = result.out
            if cache is not None:  # a prompt: read by the kind's own kernel, then remembered
                cache.fill(q, k, v, pos)
        z = hook(f"{name}.z", out)  # (B, nh, T, hs): each head's weighted sum of values
        return self.c_proj(z.transpose(1, 2).contiguous().view(B, T, C))  # heads side by side, projected


class Block(nn.Module):
    """One transformer block: attention then the feed-forward layer, each wrapped by the layout
    (pre-LN, post-LN or no residual) with the config's norm. A feed-forward kind without a sublayer
    (``ffn="none"``) leaves attention alone in the block: no second norm, resid_post = resid_mid."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        norm = NORMS[config.norm].make
        self.layout = LAYOUTS[config.layout]
        self.ln_1 = norm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        ffn = FEEDFORWARD[config.ffn]
        self.ln_2 = norm(config.n_embd) if ffn.sublayer else None
        self.mlp = ffn.make(config) if ffn.sublayer else None

    def forward(self, x: Tensor, pos: PositionalEncoding, hook=NO_HOOKS, name: str = "", cache=None,
                start: int = 0) -> tuple[Tensor, Tensor]:
        aux = []

        def attn(h: Tensor) -> Tensor:
            return hook(f"{name}.attn_out", self.attn(h, pos, hook, f"{name}.attn", cache, start))

        def mlp(h: Tensor) -> Tensor:
            out, loss = self.mlp(h, hook, f"{name}.moe")
            aux.append(loss)
            return hook(f"{name}.mlp_out", out)

        x = hook(f"{name}.resid_pre", x)
        x = hook(f"{name}.resid_mid", self.layout.sublayer(x, attn, self.ln_1))
        if self.mlp is None:  # attention only
            return hook(f"{name}.resid_post", x), x.new_zeros(())
        x = hook(f"{name}.resid_post", self.layout.sublayer(x, mlp, self.ln_2))
        return x, aux[0]


class GPT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos = ENCODINGS[config.encoding](config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = NORMS[config.norm].make(config.n_embd)
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

    def hook_names(self) -> list[str]:
        ffn = FEEDFORWARD[self.config.ffn]
        return hook_names(self.config.n_layer, type(self.pos).embed is not PositionalEncoding.embed, ffn.hooks,
                          ffn.sublayer)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None, need_weights: bool = False,
                capture: Iterable[str] | bool | None = None,
                edit: Optional[dict[str, Callable[[Tensor], Tensor]]] = None, cache=None) -> ModelOutput:
        """Logits (and the loss, given targets). ``capture``: hook names (or ``*`` patterns, or
        True for all) to return in ``output.trace``; ``edit``: name -> function replacing that
        activation; ``need_weights``: shorthand for capturing every layer's attention pattern;
        ``cache``: an ``explorer.kvcache.KVCache``, ``idx`` then holding only the tokens after
        those it has seen (it is extended by them)."""
        if need_weights:
            capture = list(capture or []) + ["blocks.*.attn.pattern"] if capture is not True else True
        hook = Hooks(self.hook_names(), capture, edit) if (capture or edit) else NO_HOOKS
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # position of idx's first token
        if cache is not None and self.config.funnel:
            raise ValueError("a funnel pools pairs of tokens between blocks: it has no key/value cache")
        x = hook("embed", self.wte(idx))  # (B, T, C)
        pe = self.pos.embed(T, idx.device) if cache is None else self.pos.embed_from(start, T, idx.device)
        if pe is not None:
            x = x + hook("pos_embed", pe)
        aux = x.new_zeros(())
        skips = []  # the funnel: the full-resolution stream before each pooling
        for i, block in enumerate(self.blocks):
            if i in self.config.funnel:
                skips.append(x)
                x = pool_pairs(x)  # (B, T/2, C): each merged token the mean of a pair
            if x.shape[1] == 0:  # too short to pool: position 0 never receives a coarser token anyway
                continue
            x, block_aux = block(x, self.pos, hook, f"blocks.{i}", None if cache is None else cache.layers[i], start)
            aux = aux + block_aux
        if cache is not None:
            cache.length += T
        for skip in reversed(skips):  # hand what the coarser blocks added back to full resolution, causally
            x = skip + unpool_causal(x - pool_pairs(skip), skip.shape[1])
        logits = hook("logits", self.lm_head(hook("ln_final", self.ln_f(x))))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return ModelOutput(logits, loss, dict(hook.trace), aux, self.config.aux_weight)


_SEEDING = threading.Lock()


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block on torch's global generator seeded with ``seed``, restoring it afterwards. One
    block at a time in the process: the generator is shared by every thread, and two sessions'
    models initialised at once would otherwise draw from each other's stream (their weights would
    depend on timing, not on the seed)."""
    with _SEEDING, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_model(config: ModelConfig, seed: int = 0) -> GPT:
    """A freshly initialised model; the same seed always gives the same weights."""
    with seeded(seed):
        return GPT(config)


def with_config(model: GPT, config: ModelConfig) -> GPT:
    """The same trained weights read under another config that keeps every parameter's shape
    (another attention kind, window or head count): a new module, the weights copied."""
    clone = GPT(config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


PARAMETER_FIELDS = ("vocab_size", "block_size", "n_layer", "n_embd", "encoding", "norm", "ffn", "mlp_ratio",
                    "n_experts")  # fields that shape parameters


def same_parameters(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether two configs have parameters of the same names and shapes."""
    return all(getattr(a, k) == getattr(b, k) for k in PARAMETER_FIELDS)


def runtime_fields(a: ModelConfig, b: ModelConfig) -> list[str]:
    """The fields that differ between two configs of the same parameters: the ones a trained model
    can be read under without retraining (attention kind, window, heads, ...)."""
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


@torch.no_grad()
def logit_lens(model: GPT, idx: Tensor, top: int = 1) -> dict:
    """The next-token guess read from the residual stream after the embedding and after each
    block (through the final LayerNorm and the unembedding, as the model reads its last one), for
    one sequence ``idx`` (1, T). Returns ``{"layers": names, "tokens": (L+1, T, top) ids,
    "probs": (L+1, T, top), "norm": (L+1, T)}``, the last being the residual stream's norm."""
    L = model.config.n_layer
    trace = model(idx, capture=["blocks.*.resid_pre", f"blocks.{L - 1}.resid_post"]).trace
    resid = torch.stack([trace[f"blocks.{i}.resid_pre"][0] for i in range(L)]
                        + [trace[f"blocks.{L - 1}.resid_post"][0]])  # (L+1, T, C)
    probs = torch.softmax(model.lm_head(model.ln_f(resid)), dim=-1)
    p, ids = probs.topk(top, dim=-1)
    return {"layers": ["embedding"] + [f"after block {i}" for i in range(L)], "tokens": ids.numpy(),
            "probs": p.numpy(), "norm": resid.norm(dim=-1).numpy()}
