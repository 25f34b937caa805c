"""Positional encodings, chosen once by name from ``ENCODINGS``: one module of this package per
encoding, each registering its class on import. A new encoding is one new file here.

Papers: sinusoidal and learned absolute positions (Vaswani et al. 2017; GPT-2); RoPE (Su et al.
2021, "RoFormer"); ALiBi (Press et al. 2022, "Train Short, Test Long"); none (Haviv et al. 2022).
"""
from ..registry import load_modules
from ._base import ENCODINGS, PositionalEncoding, PositionTooFar, register

load_modules(__name__, __path__)

from .alibi import alibi_slopes  # noqa: E402  (re-exported: used by tests and views)
from .rope import apply_rope, rope_angles  # noqa: E402
from .sinusoidal import sinusoidal_table  # noqa: E402

__all__ = ["ENCODINGS", "PositionalEncoding", "PositionTooFar", "register", "alibi_slopes", "apply_rope",
           "rope_angles", "sinusoidal_table"]
