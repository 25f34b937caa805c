"""Hierarchical attention: its own block in full, one mean-pooled summary per earlier block.
(The registry-wide tests in test_attention.py also check it against its dense reference and its
naive loop, causality, prefix invariance and its FLOP formula.)"""
import math

import pytest
import torch

from explorer.attention import ATTENTION
from explorer.config import ModelConfig

KIND = ATTENTION["hierarchical"]


def cfg(b, T=64):
    return ModelConfig(n_head=2, n_embd=16, window=b, block_size=T, encoding="none", attention="hierarchical")


def test_a_summarys_weight_is_spread_evenly_over_its_block():
    T, b = 12, 4
    q, k, v = torch.randn(3, 1, 2, T, 8).unbind(0)
    w = KIND.kernel(q, k, v, cfg(b), None, True).weights[0, 0]
    for i in range(b, T):
        block_start = (i // b) * b
        for m in range(i // b):  # every earlier block: one weight, shared by its b tokens
            row = w[i, m * b:(m + 1) * b]
            assert torch.allclose(row, row[0].expand(b))
        assert (w[i, block_start: i + 1] > 0).all() and (w[i, i + 1:] == 0).all()  # own block: token by token


def test_the_output_is_the_summaries_not_the_tokens():
    """Moving values around inside an earlier block changes nothing: only its mean is read."""
    T, b = 12, 4
    q, k, v = torch.randn(3, 1, 2, T, 8).unbind(0)
    out = KIND.kernel(q, k, v, cfg(b), None, False).out
    perm = torch.arange(T)
    perm[0:4] = torch.tensor([3, 1, 0, 2])  # shuffle block 0's keys and values together
    out2 = KIND.kernel(q, k[:, :, perm], v[:, :, perm], cfg(b), None, False).out
    torch.testing.assert_close(out[:, :, 4:], out2[:, :, 4:], atol=1e-6, rtol=1e-6)  # queries of later blocks


@pytest.mark.parametrize("T,b", [(1024, 32), (4096, 64), (1000, 30)])
def test_cost_is_T_times_b_plus_T_over_b(T, b):
    blocks = math.ceil(T / b)
    padded = blocks * b
    assert KIND.keys_per_query(T, cfg(b, T)) * T == pytest.approx(padded * (b + blocks))


def test_block_size_sqrt_T_makes_it_T_to_the_1_5():
    ns = [1024, 4096, 16384]
    flops = [KIND.flops(cfg(int(math.sqrt(n)), n), n) for n in ns]
    slope = math.log(flops[-1] / flops[0]) / math.log(ns[-1] / ns[0])
    assert slope == pytest.approx(1.5, abs=0.01)
    b, ns = 16, [16384, 65536]  # a fixed b: quadratic once T >> b^2, with a constant b times smaller
    fixed = [KIND.flops(cfg(b, n), n) for n in ns]
    assert math.log(fixed[1] / fixed[0]) / math.log(4) > 1.95
    assert fixed[1] < ATTENTION["softmax"].flops(cfg(b, ns[1]), ns[1]) / (0.9 * b)


def test_its_page_note_says_how_the_map_is_drawn():
    assert "spreads each summary's weight evenly" in KIND.weights_note
