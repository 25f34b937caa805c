"""The model configuration: one dataclass that validates itself.

Every field carries a comment; an impossible value raises ``ValueError`` naming the field, the
value and what is allowed, so the page can show the message as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

from .attention import ATTENTION
from .blocks import FEEDFORWARD, LAYOUTS, NORMS
from .encodings import ENCODINGS

LIMITS = {  # field -> (min, max), the ranges the app offers
    "n_layer": (1, 6),
    "n_head": (1, 16),
    "n_embd": (8, 256),
    "block_size": (2, 65536),
    "window": (1, 65536),
    "n_global": (0, 64),
    "n_strided": (0, 64),
    "vocab_size": (2, 4096),
    "mlp_ratio": (1, 8),
    "n_experts": (1, 16),
    "top_k": (1, 16),
}


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 32  # tokens the model reads and predicts (set from the task's tokenizer)
    block_size: int = 64  # context length: longest sequence; rows of the learned position table
    n_layer: int = 2  # transformer blocks, 1-6
    n_head: int = 4  # attention heads per block, 1-16; must divide n_embd
    n_embd: int = 64  # residual stream width, up to 256
    attention: str = "softmax"  # attention kind, a name in explorer.attention.ATTENTION
    window: int = 8  # sliding_window: keys per query; dynamic_window: smallest window; block_sparse: block size
    n_global: int = 1  # block_sparse: leading tokens every later token may attend to
    n_strided: int = 2  # block_sparse: strided hops back, at multiples of the block size
    encoding: str = "learned"  # positional encoding, a name in explorer.encodings.ENCODINGS
    norm: str = "layernorm"  # normalisation, a name in explorer.blocks.NORMS
    layout: str = "pre_ln"  # where the residual path and the norms go, a name in explorer.blocks.LAYOUTS
    ffn: str = "dense"  # the feed-forward layer, a name in explorer.blocks.FEEDFORWARD (dense, moe, none = attention only)
    mlp_ratio: int = 4  # hidden width of the MLP (and of each expert) = mlp_ratio * n_embd
    n_experts: int = 4  # moe: experts per layer
    top_k: int = 1  # moe: experts each token is sent to (1 = Switch, 2 = GShard / Mixtral)
    capacity_factor: float = 1.25  # moe: an expert takes at most ceil(factor * top_k * tokens / n_experts) tokens
    router_noise: float = 0.0  # moe: std of the noise added to the router's logits while training (noisy top-k)
    aux_weight: float = 0.01  # moe: weight of the load-balancing loss added to the training loss (0 = off)
    funnel: tuple = ()  # blocks before which the sequence is pooled to half its length (e.g. (1,)); () = flat

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} = {value!r}: must be a whole number from {lo} to {hi}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} = {value}: allowed range is {lo} to {hi}")
        if self.n_embd % self.n_head:
            divisors = [h for h in range(LIMITS['n_head'][0], LIMITS['n_head'][1] + 1) if self.n_embd % h == 0]
            raise ValueError(
                f"n_head = {self.n_head}: the number of heads must divide the width (n_embd = "
                f"{self.n_embd}); with this width choose one of {divisors}"
            )
        if self.attention not in ATTENTION:
            raise ValueError(f"attention = {self.attention!r}: choose one of {', '.join(ATTENTION.names())}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding = {self.encoding!r}: choose one of {', '.join(ENCODINGS.names())}")
        encoding = ENCODINGS[self.encoding]
        if encoding.needs_even_head_dim and self.head_dim % 2:
            raise ValueError(
                f"n_head = {self.n_head}: {self.encoding} rotates pairs of dimensions, so the head size "
                f"n_embd / n_head = {self.head_dim} must be even; pick fewer heads or a wider model"
            )
        for field, registry in (("norm", NORMS), ("layout", LAYOUTS), ("ffn", FEEDFORWARD)):
            if getattr(self, field) not in registry:
                raise ValueError(f"{field} = {getattr(self, field)!r}: choose one of {', '.join(registry.names())}")
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k = {self.top_k}: a token cannot go to more experts than there are "
                             f"(n_experts = {self.n_experts})")
        if not (isinstance(self.capacity_factor, (int, float)) and 0.1 <= self.capacity_factor <= 8):
            raise ValueError(f"capacity_factor = {self.capacity_factor!r}: allowed range is 0.1 to 8 "
                             f"(1 = exactly a fair share of the tokens per expert)")
        if not (isinstance(self.router_noise, (int, float)) and 0 <= self.router_noise <= 10):
            raise ValueError(f"router_noise = {self.router_noise!r}: allowed range is 0 to 10")
        if not (isinstance(self.aux_weight, (int, float)) and 0 <= self.aux_weight <= 10):
            raise ValueError(f"aux_weight = {self.aux_weight!r}: allowed range is 0 to 10")
        f = tuple(self.funnel)
        if any(not isinstance(i, int) or isinstance(i, bool) for i in f) or list(f) != sorted(set(f)) \
                or any(not 1 <= i < self.n_layer for i in f):
            raise ValueError(f"funnel = {self.funnel!r}: blocks 1 to {self.n_layer - 1}, each once, in order "
                             f"(the first block always reads the full sequence)")
        kind = ATTENTION[self.attention]
        if encoding.biases_scores and not kind.explicit_scores:
            raise ValueError(
                f"encoding = {self.encoding!r} with attention = {self.attention!r}: ALiBi adds a bias to "
                f"each query-key score, and {self.attention} attention never forms those scores; pick "
                f"another encoding or another attention kind"
            )
