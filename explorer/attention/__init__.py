"""Attention kinds, chosen once by name from ``ATTENTION``: one module of this package per kind
(or family of kinds), each registering its ``AttentionKind`` on import. A new kind is one new file
here; every page, the cost formulas, the measurements and the bench CLI read the registry.

Kinds: softmax (``softmax.py``), sliding and dynamic windows (``window.py``), block-sparse
(``block_sparse.py``), linear (``linear.py``), hierarchical (``hierarchical.py``).
"""
from ..registry import load_modules
from ._base import (ATTENTION, REFERENCES, AttentionKind, Reference, AttentionResult, SizeControl, Style, alibi_bias, causal_offsets,
                    causal_pattern, padded, pattern, reference_attention, register)
from ._cache import KeyValueCache, LayerCache

load_modules(__name__, __path__)

__all__ = ["ATTENTION", "REFERENCES", "AttentionKind", "Reference", "AttentionResult", "SizeControl", "Style", "alibi_bias", "causal_offsets",
           "causal_pattern", "padded", "pattern", "reference_attention", "register", "KeyValueCache", "LayerCache"]
