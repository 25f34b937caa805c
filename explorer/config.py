"""The model configuration: one dataclass that validates itself.

Every field carries a comment; an impossible value raises ``ValueError`` naming the field, the
value and what is allowed, so the page can show the message as it is.
"""
from __future__ import annotations

from dataclasses import dataclass

from .attention import ATTENTION
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
        kind = ATTENTION[self.attention]
        if encoding.biases_scores and not kind.explicit_scores:
            raise ValueError(
                f"encoding = {self.encoding!r} with attention = {self.attention!r}: ALiBi adds a bias to "
                f"each query-key score, and {self.attention} attention never forms those scores; pick "
                f"another encoding or another attention kind"
            )
