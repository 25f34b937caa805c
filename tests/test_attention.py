"""Every attention kind against a reference computation of the same pattern."""
import math

import pytest
import torch
import torch.nn.functional as F

from explorer.attention import (ATTENTION, dynamic_window_size, pattern, reference_attention,
                                reference_linear)
from explorer.config import ModelConfig
from explorer.encodings import alibi_slopes

KINDS = ATTENTION.names()


def cfg(**kw):
    base = dict(n_head=4, n_embd=32, window=4, n_global=2, n_strided=2, encoding="none")
    base.update(kw)
    return ModelConfig(**base)


def qkv(T, B=2, H=4, D=8, dtype=torch.float32):
    return torch.randn(3, B, H, T, D, dtype=dtype).unbind(0)


def reference(kind, q, k, v, config, slopes=None):
    if kind == "linear":
        return reference_linear(q, k, v)
    return reference_attention(q, k, v, pattern(kind, q.size(-2), config), slopes)


WITH_BIAS = [(k, a) for k in KINDS for a in (False, True) if ATTENTION[k].explicit_scores or not a]


@pytest.mark.parametrize("kind,alibi", WITH_BIAS)
@pytest.mark.parametrize("T,window", [(1, 4), (7, 3), (16, 4), (33, 8), (40, 64), (50, 1)])
def test_kernel_matches_reference(kind, T, window, alibi):
    config = cfg(window=window)
    slopes = alibi_slopes(4) if alibi else None
    q, k, v = qkv(T)
    ref = reference(kind, q, k, v, config, slopes)
    fast = ATTENTION[kind].fn(q, k, v, config, slopes, need_weights=False)
    assert fast.weights is None
    torch.testing.assert_close(fast.out, ref.out, atol=1e-5, rtol=1e-5)
    shown = ATTENTION[kind].fn(q, k, v, config, slopes, need_weights=True)
    torch.testing.assert_close(shown.out, ref.out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shown.weights, ref.weights, atol=1e-5, rtol=1e-5)
    # the weights returned are the ones applied: they reproduce the output
    torch.testing.assert_close(shown.weights @ v, shown.out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shown.weights.sum(-1), torch.ones(2, 4, T), atol=1e-5, rtol=1e-5)
    assert (shown.weights[..., ~pattern(kind, T, config)] == 0).all()


def naive_loop(q, k, v, allowed, linear=False):
    """One query at a time, one key at a time: the slowest, plainest statement of attention."""
    B, H, T, D = q.shape
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = [j for j in range(T) if allowed[i, j]]
                if linear:
                    phi = lambda x: F.elu(x) + 1
                    s = torch.stack([phi(q[b, h, i]) @ phi(k[b, h, j]) for j in keys])
                    w = s / s.sum()
                else:
                    s = torch.stack([q[b, h, i] @ k[b, h, j] / math.sqrt(D) for j in keys])
                    w = torch.softmax(s, 0)
                out[b, h, i] = sum(wj * v[b, h, j] for wj, j in zip(w, keys))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_matches_naive_loop(kind):
    config = cfg(window=3, n_global=1, n_strided=2)
    q, k, v = qkv(13, B=1, H=2)
    fast = ATTENTION[kind].fn(q, k, v, config, None, False).out
    expect = naive_loop(q, k, v, pattern(kind, 13, config), linear=kind == "linear")
    torch.testing.assert_close(fast, expect, atol=1e-5, rtol=1e-5)


def test_patterns_are_what_the_docs_say():
    c = cfg(window=4, n_global=2, n_strided=2)
    T = 20
    sw = pattern("sliding_window", T, c)
    assert sw[10].nonzero().flatten().tolist() == [7, 8, 9, 10]
    bs = pattern("block_sparse", T, c)
    # query 14 (block 3 = 12..15): own block 12-14, globals 0-1, strided 10 and 6
    assert bs[14].nonzero().flatten().tolist() == [0, 1, 6, 10, 12, 13, 14]
    assert (pattern("softmax", T, c) == torch.tril(torch.ones(T, T, dtype=torch.bool))).all()
    for kind in KINDS:  # causal: nothing above the diagonal
        assert not pattern(kind, T, c).triu(1).any()


def test_dynamic_window_rule():
    assert dynamic_window_size(16, 2) == 8  # ceil(2*sqrt(16)) = 8
    assert dynamic_window_size(100, 2) == 20
    assert dynamic_window_size(100, 32) == 32  # w_min wins
    assert dynamic_window_size(5, 32) == 5  # never wider than the input
    c = cfg(window=2)
    assert pattern("dynamic_window", 100, c).sum(1).max() == 20


def largest_allocation(fn):
    """The largest single CPU allocation made while ``fn`` runs, from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0), default=0)


@pytest.mark.parametrize("kind", ["sliding_window", "dynamic_window", "block_sparse", "linear"])
def test_subquadratic_kinds_never_build_a_full_matrix(kind):
    T, H = 4096, 2
    config = cfg(window=16, n_global=2, n_strided=2)
    q, k, v = qkv(T, B=1, H=H, D=8)
    full_matrix = H * T * T * 4  # one (nh, T, T) float32 matrix: 128 MiB
    with torch.no_grad():
        biggest = largest_allocation(lambda: ATTENTION[kind].fn(q, k, v, config, None, False))
        dense = largest_allocation(lambda: ATTENTION["softmax"].fn(q, k, v, config, None, True))
    assert dense >= full_matrix  # the probe does see a full matrix when one is made
    assert biggest < full_matrix / 8, f"{kind} allocated {biggest} bytes at once"
