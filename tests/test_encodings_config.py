"""Positional encodings' mathematics, the config's validation, and causality of every kind x encoding."""
import math

import pytest
import torch

from explorer.attention import ATTENTION
from explorer.config import ModelConfig
from explorer.encodings import (ENCODINGS, PositionTooFar, alibi_slopes, apply_rope, rope_angles,
                                sinusoidal_table)
from explorer.model import build_model


def test_sinusoidal_matches_formula():
    table = sinusoidal_table(50, 16)
    for p in (0, 1, 7, 49):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_rope_preserves_norm_and_depends_only_on_offset():
    hs, T = 16, 40
    angles = rope_angles(T, hs)
    q, k = torch.randn(hs), torch.randn(hs)
    qs = apply_rope(q.expand(T, hs), angles)  # the same query at every position
    ks = apply_rope(k.expand(T, hs), angles)
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(T))
    scores = qs @ ks.T  # (T, T): score between the query at m and the key at n
    for offset in (0, 3, 11):
        diag = torch.diagonal(scores, offset=-offset)  # all pairs with m - n = offset
        torch.testing.assert_close(diag, diag[0].expand_as(diag), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(torch.diagonal(scores, -1)[0], torch.diagonal(scores, -5)[0])


def test_alibi_slopes_are_the_papers_geometric_sequence():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0 ** -(2 * (i + 1)) for i in range(4)]))
    s6 = alibi_slopes(6)  # not a power of two: 4 slopes of n=4, then every other of n=8
    torch.testing.assert_close(s6, torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]))


def test_alibi_bias_in_the_model_is_minus_slope_times_distance():
    from explorer.attention import alibi_bias

    off = torch.arange(5)[:, None] - torch.arange(5)[None, :]
    bias = alibi_bias(alibi_slopes(2), off)
    assert bias[0, 4, 1].item() == pytest.approx(-3 * 2 ** -4)
    assert bias[1, 2, 2].item() == 0


@pytest.mark.parametrize("field,value,words", [
    ("n_head", 3, ["n_head = 3", "divide", "n_embd = 64", "[1, 2, 4, 8, 16]"]),
    ("n_layer", 7, ["n_layer = 7", "1 to 6"]),
    ("n_embd", 512, ["n_embd = 512", "8 to 256"]),
    ("window", 0, ["window = 0", "1 to"]),
    ("attention", "flash", ["attention = 'flash'", "softmax", "linear"]),
    ("encoding", "xyz", ["encoding = 'xyz'", "rope", "alibi"]),
])
def test_config_errors_name_field_value_and_what_is_allowed(field, value, words):
    with pytest.raises(ValueError) as err:
        ModelConfig(**{field: value})
    for w in words:
        assert w in str(err.value)


def test_impossible_pairs_are_refused():
    with pytest.raises(ValueError, match="ALiBi"):
        ModelConfig(attention="linear", encoding="alibi")
    with pytest.raises(ValueError, match="even"):
        ModelConfig(n_embd=24, n_head=8, encoding="rope")  # head size 3


def test_learned_positions_refuse_to_extrapolate_clearly():
    model = build_model(ModelConfig(block_size=8, encoding="learned"))
    with pytest.raises(PositionTooFar, match="8 rows"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("encoding", ENCODINGS.names())
@pytest.mark.parametrize("kind", ATTENTION.names())
def test_causal_for_every_kind_and_encoding(kind, encoding):
    if encoding == "alibi" and not ATTENTION[kind].explicit_scores:
        with pytest.raises(ValueError):
            ModelConfig(attention=kind, encoding=encoding)
        return
    config = ModelConfig(vocab_size=20, block_size=24, n_layer=2, n_head=4, n_embd=32, attention=kind,
                         encoding=encoding, window=3, n_global=1, n_strided=2)
    model = build_model(config, seed=1).eval()
    x = torch.randint(0, 20, (2, 24))
    t = 11
    y = x.clone()
    y[:, t + 1:] = torch.randint(0, 20, (2, 24 - t - 1))  # change only the future
    with torch.no_grad():
        a, b = model(x).logits, model(y).logits
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])  # and the future did change
