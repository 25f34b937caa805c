"""Every attention kind in the registry: against its dense reference and a naive loop, causal,
prefix-invariant, its FLOP formula against PyTorch's FLOP counter, sub-quadratic where it says so."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from explorer.attention import ATTENTION, pattern
from explorer.attention.window import dynamic_window_size
from explorer.config import ModelConfig
from explorer.encodings import ENCODINGS, alibi_slopes, apply_rope, rope_angles
from explorer.model import build_model
from naive_loops import LOOPS

KINDS = ATTENTION.names()


def cfg(**kw):
    base = dict(n_head=4, n_embd=32, window=4, n_global=2, n_strided=2, encoding="none", block_size=64)
    base.update(kw)
    return ModelConfig(**base)


def qkv(T, B=2, H=4, D=8, dtype=torch.float32):
    return torch.randn(3, B, H, T, D, dtype=dtype).unbind(0)


def rope(q, k):
    angles = rope_angles(q.size(-2), q.size(-1))
    return apply_rope(q, angles), apply_rope(k, angles)


def call(kind, q, k, v, config, slopes, need, rotate):
    entry = ATTENTION[kind]
    if entry.rotates_features:
        return entry.kernel(q, k, v, config, slopes, need, rotate=rotate)
    if rotate is not None:
        q, k = rotate(q, k)
    return entry.kernel(q, k, v, config, slopes, need)


def reference(kind, q, k, v, config, slopes, rotate):
    entry = ATTENTION[kind]
    if entry.rotates_features:
        return entry.reference(q, k, v, config, slopes, rotate=rotate)
    if rotate is not None:
        q, k = rotate(q, k)
    return entry.reference(q, k, v, config, slopes)


# (kind, ALiBi slopes?, RoPE?) for every pairing the config allows
CASES = [(k, a, r) for k in KINDS for a in (False, True) for r in (False, True)
         if (ATTENTION[k].explicit_scores or not a) and not (a and r)]


@pytest.mark.parametrize("kind,alibi,rot", CASES)
@pytest.mark.parametrize("T,window", [(1, 4), (7, 3), (16, 4), (33, 8), (40, 64), (50, 1)])
def test_kernel_matches_reference(kind, T, window, alibi, rot):
    config = cfg(window=window)
    slopes = alibi_slopes(4) if alibi else None
    rotate = rope if rot else None
    q, k, v = qkv(T)
    ref = reference(kind, q, k, v, config, slopes, rotate)
    fast = call(kind, q, k, v, config, slopes, False, rotate)
    assert fast.weights is None
    torch.testing.assert_close(fast.out, ref.out, atol=1e-5, rtol=1e-5)
    shown = call(kind, q, k, v, config, slopes, True, rotate)
    torch.testing.assert_close(shown.out, ref.out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shown.weights, ref.weights, atol=1e-5, rtol=1e-5)
    # the weights returned are the ones applied: they reproduce the output
    torch.testing.assert_close(shown.weights @ v, shown.out, atol=1e-5, rtol=1e-5)
    assert (shown.weights[..., ~pattern(kind, T, config)] == 0).all()
    if not (kind == "linear" and rot):  # RoFormer's linear attention with RoPE does not normalise its rows
        torch.testing.assert_close(shown.weights.sum(-1), torch.ones(2, 4, T), atol=1e-5, rtol=1e-5)


def test_every_kind_has_a_naive_loop():
    assert set(KINDS) <= set(LOOPS), f"add a naive loop for {set(KINDS) - set(LOOPS)} to tests/naive_loops.py"


@pytest.mark.parametrize("kind,alibi,rot", CASES)
def test_kernel_matches_naive_loop(kind, alibi, rot):
    config = cfg(window=3, n_global=1, n_strided=2, n_head=2, n_embd=16)
    q, k, v = (t.double() for t in qkv(13, B=1, H=2))
    slopes = alibi_slopes(2).double() if alibi else None
    rotate = rope if rot else None
    fast = call(kind, q, k, v, config, slopes, False, rotate).out
    if not ATTENTION[kind].rotates_features and rotate is not None:
        q, k = rotate(q, k)
        rotate = None
    expect = LOOPS[kind](q, k, v, config, pattern(kind, 13, config), rotate=rotate, slopes=slopes)
    torch.testing.assert_close(fast, expect, atol=1e-9, rtol=1e-9)


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


def test_dynamic_window_rule_follows_the_context_not_the_input():
    assert dynamic_window_size(16, 2) == 8  # ceil(2*sqrt(16)) = 8
    assert dynamic_window_size(100, 2) == 20
    assert dynamic_window_size(100, 32) == 32  # w_min wins
    assert dynamic_window_size(5, 32) == 5  # never wider than the context
    c = cfg(window=2, block_size=100)
    assert pattern("dynamic_window", 100, c).sum(1).max() == 20
    assert pattern("dynamic_window", 30, c).sum(1).max() == 20  # a shorter input: the same window


@pytest.mark.parametrize("kind", KINDS)
def test_used_pairs_counts_what_the_pattern_keeps(kind):
    """Where a kind's weights are softmax over its pattern, the pairs it uses are the pattern's."""
    entry = ATTENTION[kind]
    for T in (1, 5, 13, 40):
        c = cfg(window=4, n_global=2, n_strided=2, block_size=64)
        used = entry.used_pairs(T, c)
        assert 0 < used <= T * entry.keys_per_query(T, c) + 1e-9  # never more than the work counted
        if LOOPS[kind] is LOOPS["softmax"]:
            assert used == pattern(kind, T, c).sum().item()


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("kind", KINDS)
def test_theory_flops_equal_the_kernels_counted_flops(kind):
    """The formula each kind states equals the matrix products its measured kernel runs, as PyTorch's
    FlopCounterMode counts them, within 10%, padding included."""
    entry = ATTENTION[kind]
    worst = 0.0
    for d in (64, 256):
        for heads in (1, 4):
            for window in (16, 64, 100):
                for T in (100, 128, 500, 512, 2048):
                    config = ModelConfig(n_embd=d, n_head=heads, window=window, block_size=T, encoding="none",
                                         attention=kind)
                    q, k, v = qkv(T, B=1, H=heads, D=d // heads)
                    with torch.no_grad():
                        counted = count_flops(lambda: entry.measured_call(config)(q, k, v))
                    theory = entry.flops(config, T)
                    worst = max(worst, abs(theory / counted - 1))
    assert worst <= 0.10, f"{kind}: theory and counted FLOPs differ by {worst:.1%}"


def largest_allocation(fn):
    """The largest single CPU allocation made while ``fn`` runs, from torch's profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0), default=0)


SUBQUADRATIC = [k for k in KINDS if ATTENTION[k].score_numbers(4096, cfg(window=16, block_size=4096)) < 4096 ** 2 / 8]


def test_the_subquadratic_kinds_are_the_expected_ones():
    assert {"sliding_window", "block_sparse", "linear"} <= set(SUBQUADRATIC) and "softmax" not in SUBQUADRATIC


@pytest.mark.parametrize("kind", SUBQUADRATIC)
def test_subquadratic_kinds_never_build_a_full_matrix(kind):
    T, H = 4096, 2
    config = cfg(window=16, n_global=2, n_strided=2, block_size=T)
    q, k, v = qkv(T, B=1, H=H, D=8)
    full_matrix = H * T * T * 4  # one (nh, T, T) float32 matrix: 128 MiB
    with torch.no_grad():
        biggest = largest_allocation(lambda: ATTENTION[kind].kernel(q, k, v, config, None, False))
        dense = largest_allocation(lambda: ATTENTION["softmax"].kernel(q, k, v, config, None, True))
    assert dense >= full_matrix  # the probe does see a full matrix when one is made
    assert biggest < full_matrix / 8, f"{kind} allocated {biggest} bytes at once"


PAIRS = [(k, e) for k in KINDS for e in ENCODINGS.names()
         if not (ENCODINGS[e].biases_scores and not ATTENTION[k].explicit_scores)]


@pytest.mark.parametrize("kind,encoding", PAIRS)
def test_prefix_alone_gives_the_same_logits_as_inside_a_longer_sequence(kind, encoding):
    """A token's output depends only on the tokens up to it, never on how many follow."""
    config = ModelConfig(vocab_size=20, block_size=40, n_layer=2, n_head=4, n_embd=32, attention=kind,
                         encoding=encoding, window=5, n_global=1, n_strided=2)
    model = build_model(config, seed=1).eval()
    x = torch.randint(0, 20, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x).logits
        for t in (1, 7, 23):
            torch.testing.assert_close(model(x[:, :t]).logits, full[:, :t], atol=1e-5, rtol=1e-5)


def test_linear_with_rope_depends_only_on_the_offset():
    """RoFormer 3.3: rotating phi(q) and phi(k) keeps scores offset-only (rotating q and k before
    the feature map would not)."""
    hs, T = 8, 24
    q, k = torch.randn(hs), torch.randn(hs)
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    fq, fk = rope(phi(q).expand(1, 1, T, hs), phi(k).expand(1, 1, T, hs))
    scores = (fq @ fk.transpose(-1, -2))[0, 0]  # the same query and key at every pair of positions
    spread = max(float(torch.diagonal(scores, -o).std()) for o in range(0, 10))
    rq, rk = rope(q.expand(1, 1, T, hs), k.expand(1, 1, T, hs))  # the wrong order: rotate, then phi
    wrong = (phi(rq) @ phi(rk).transpose(-1, -2))[0, 0]
    wrong_spread = max(float(torch.diagonal(wrong, -o).std()) for o in range(0, 10))
    assert spread < 1e-4 < 0.1 < wrong_spread
    # and the kernel's implied numerator is exactly that: weights x row sums of the denominator
    config = cfg()
    qq, kk, vv = (t.expand(1, 1, T, hs).contiguous() for t in (q, k, torch.randn(hs)))
    w = ATTENTION["linear"].kernel(qq, kk, vv, config, None, True, rotate=rope).weights[0, 0]
    den = torch.tril(phi(qq)[0, 0] @ phi(kk)[0, 0].T).sum(-1, keepdim=True)
    num = w * den
    assert max(float(torch.diagonal(num, -o).std()) for o in range(0, 10)) < 1e-3
