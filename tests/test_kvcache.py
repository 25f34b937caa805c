"""The key/value cache (explorer.kvcache): cached generation writes what reading the text again
writes, for every attention kind and encoding; the rolling window, the linear state and the block
summaries hold what they say and weigh what their tensors weigh; what cannot be cached says why;
stacked windows reach what a perturbed token really changes."""
import dataclasses

import pytest
import torch
from torch import nn

from explorer.attention import ATTENTION
from explorer.attention.linear import LinearState, linear_attention
from explorer.config import ModelConfig
from explorer.encodings import ENCODINGS
from explorer.generate import generate
from explorer.kvcache import KVCache, cache_problem, cached_length, reachable
from explorer.model import build_model, seeded
from explorer.tasks import CharTokenizer

TOK = CharTokenizer("abcdefghijklmnop")


def random_model(seed: int = 0, **kw):
    """A small untrained model with weights large enough (std 0.3) and an unembedding of its own
    (tied, an untrained model just repeats tokens), so that greedy choices vary."""
    cfg = dict(vocab_size=TOK.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=16, window=4, n_global=1,
               n_strided=2)
    cfg.update(kw)
    model = build_model(ModelConfig(**cfg), seed)
    with seeded(seed + 1), torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0, 0.3)
        model.lm_head.weight = nn.Parameter(torch.randn_like(model.wte.weight))
    return model.eval()


def combos():
    out = []
    for kind in ATTENTION.names():
        for enc in ENCODINGS.names():
            if ENCODINGS[enc].biases_scores and not ATTENTION[kind].explicit_scores:
                continue  # ALiBi needs explicit scores (the config refuses it)
            out.append((kind, enc))
    return out


def same_generation(a, b):
    """The same tokens; the probabilities equal up to float rounding."""
    assert (a.text, a.ids) == (b.text, b.ids)
    assert a.probs == pytest.approx(b.probs, rel=1e-4, abs=1e-6)


@torch.no_grad()
def cached_logits(model, ids, prompt_len: int, step: int = 1):
    """Logits for every position of ``ids`` (1, T): the prompt read at once, then ``step`` tokens at a time."""
    cache = KVCache.for_model(model)
    parts = [model(ids[:, :prompt_len], cache=cache).logits]
    parts += [model(ids[:, t:t + step], cache=cache).logits for t in range(prompt_len, ids.size(1), step)]
    return torch.cat(parts, 1), cache


@pytest.mark.parametrize("kind,encoding", combos())
def test_cached_greedy_generation_writes_what_recomputation_writes(kind, encoding):
    model = random_model(attention=kind, encoding=encoding)
    assert cache_problem(model.config) is None
    prompt, n = "abcdef", 42  # 47 positions read: within the context of 48, far past every window and block
    plain = generate(model, TOK, prompt, n)
    cached = generate(model, TOK, prompt, n, use_cache=True)
    same_generation(cached, plain)
    assert len(set(plain.text)) > 1  # the weights are large enough that greedy choices vary
    ids = torch.tensor([plain.ids[:-1]])
    with torch.no_grad():
        full = model(ids).logits
    for step in (1, 5):  # a token at a time, and several at once after the prompt
        torch.testing.assert_close(cached_logits(model, ids, len(prompt), step)[0], full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("encoding", ["none", "rope", "alibi"])
def test_a_rolling_cache_goes_past_the_context_where_renumbering_changes_nothing(encoding):
    model = random_model(attention="sliding_window", encoding=encoding, block_size=16)  # reach 2 * 3 + 1 = 7 <= 16
    assert cached_length(model.config) is None
    plain = generate(model, TOK, "abcdef", 40)  # 45 positions: the uncached path crops to the last 16
    same_generation(generate(model, TOK, "abcdef", 40, use_cache=True), plain)


@pytest.mark.parametrize("kw,match", [
    (dict(attention="softmax", encoding="rope"), "remembers every earlier token"),
    (dict(attention="linear", encoding="none"), "remembers every earlier token"),
    (dict(attention="sliding_window", encoding="sinusoidal"), "absolute position"),
    (dict(attention="sliding_window", encoding="rope", n_layer=6), "reach 18 positions back"),
])
def test_past_the_context_a_cache_that_would_differ_refuses(kw, match):
    model = random_model(block_size=16, **kw)
    assert cached_length(model.config) == 16
    generate(model, TOK, "abcdef", 11, use_cache=True)  # 16 positions read: fits
    with pytest.raises(ValueError, match=match):
        generate(model, TOK, "abcdef", 12, use_cache=True)
    generate(model, TOK, "abcdef", 12)  # the uncached path still crops, as before


@pytest.mark.parametrize("encoding", ["learned", "rope", "alibi"])
def test_the_rolling_cache_equals_full_recomputation_and_holds_only_the_window(encoding):
    w = 5
    model = random_model(attention="sliding_window", encoding=encoding, window=w)
    ids = torch.randint(0, TOK.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    cache = KVCache.for_model(model)
    hs, nh = model.config.head_dim, model.config.n_head
    with torch.no_grad():
        full = model(ids).logits
        for a, t in [(0, 9)] + [(t, t) for t in range(10, 40)]:  # a prompt of 10, then a token at a time
            step = model(ids[:, a:t + 1], cache=cache).logits
            torch.testing.assert_close(step[0], full[0, a:t + 1], atol=1e-4, rtol=1e-4)
            held = list(range(max(0, t - w + 2), t + 1))  # what the next token's window still needs
            for layer in cache.contents():
                assert layer.positions == held and layer.folded == []
                assert layer.nbytes == 2 * nh * len(held) * hs * 4  # keys and values, float32: bounded by w


def test_the_linear_state_equals_the_chunked_parallel_form():
    g = torch.Generator().manual_seed(0)
    B, H, T, D = 2, 3, 150, 8  # more than two chunks of 64
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))
    rope = ENCODINGS["rope"](ModelConfig(n_embd=D * H, n_head=H, encoding="rope"))
    none = ENCODINGS["none"](ModelConfig(n_embd=D * H, n_head=H, encoding="none"))
    for pos, rotate in ((none, None), (rope, rope.rotate)):
        parallel = linear_attention(q, k, v, None, rotate=rotate).out
        for sizes in ([1] * T, [5, 64, 1, 80]):  # token by token, and uneven chunks
            state, outs, start = LinearState(), [], 0
            for n in sizes:
                outs.append(state.attend(q[:, :, start:start + n], k[:, :, start:start + n], v[:, :, start:start + n],
                                         start, pos))
                start += n
            torch.testing.assert_close(torch.cat(outs, 2), parallel)
            fk = torch.nn.functional.elu(k) + 1
            nk = rotate(fk, fk)[1] if rotate else fk
            torch.testing.assert_close(state.S, torch.einsum("bhtd,bhte->bhde", nk, v))  # S = sum phi(k) v^T
            torch.testing.assert_close(state.z, fk.sum(2))  # z = sum phi(k), never rotated
            assert state.folded() == list(range(T)) and state.positions() == []


@pytest.mark.parametrize("T", [30, 32])  # 32: a block of 4 has just been closed
@pytest.mark.parametrize("kind", ATTENTION.names())
def test_the_memory_figure_is_what_the_tensors_hold(kind, T):
    model = random_model(attention=kind, encoding="rope", window=4)
    c = model.config
    ids = torch.randint(0, TOK.vocab_size, (1, T), generator=torch.Generator().manual_seed(1))
    _, cache = cached_logits(model, ids, 7)
    per_vector = c.n_head * c.head_dim * 4  # one key (or value) of every head, float32
    for layer, contents in zip(cache.layers, cache.contents()):
        storage = sum(t.untyped_storage().nbytes() for t in layer.tensors())
        assert contents.nbytes == storage > 0  # no view keeps a larger buffer alive
        if kind == "linear":  # S and z: constant, however long the text
            assert contents.nbytes == c.n_head * (c.head_dim ** 2 + c.head_dim) * 4
        elif kind == "hierarchical":  # the current block's tokens + one summary per finished block
            assert contents.nbytes == 2 * per_vector * (len(contents.positions) + len(contents.folded) // 4)
            assert contents.folded + contents.positions == list(range(T))
        else:
            assert contents.nbytes == 2 * per_vector * len(contents.positions)
    assert cache.memory() == [x.nbytes for x in cache.contents()] and cache.nbytes == sum(cache.memory())


def test_what_cannot_be_cached_says_why():
    moe = random_model(ffn="moe")
    with pytest.raises(ValueError, match="capacity"):
        generate(moe, TOK, "abc", 3, use_cache=True)
    generate(moe, TOK, "abc", 3)
    funnel = random_model(n_layer=3, funnel=(1,))
    with pytest.raises(ValueError, match="funnel"):
        KVCache.for_model(funnel)
    with pytest.raises(ValueError, match="funnel"):
        funnel(torch.zeros(1, 4, dtype=torch.long), cache=KVCache([]))
    uncached = dataclasses.replace(ATTENTION["softmax"], cache=None, cache_reason="nobody wrote one")
    with pytest.raises(ValueError, match="softmax attention has no key/value cache: nobody wrote one"):
        uncached.new_cache(ModelConfig())


@pytest.mark.parametrize("kw", [
    dict(attention="sliding_window", window=3),
    dict(attention="dynamic_window", window=3, block_size=4),  # w = max(3, ceil(2 * 2)) = 4
    dict(attention="block_sparse", window=3, n_global=1, n_strided=1),
    dict(attention="hierarchical", window=4),
    dict(attention="softmax"),
])
def test_reachability_is_what_a_perturbed_token_really_changes(kw):
    model = random_model(n_layer=3, encoding="rope", **kw).double()
    T = 20
    t = T - 1
    ids = torch.randint(0, TOK.vocab_size, (1, T), generator=torch.Generator().manual_seed(2))
    names = [f"blocks.{L}.resid_post" for L in range(3)]
    with torch.no_grad():
        base = model(ids, capture=names).trace
        changed = [[] for _ in range(3)]
        direction = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        for j in range(T):
            def bump(x, j=j):  # a random direction: a constant one would vanish in the LayerNorm
                x = x.clone()
                x[:, j] += direction
                return x
            trace = model(ids, capture=names, edit={"embed": bump}).trace
            for L in range(3):
                if (trace[names[L]][0, t] - base[names[L]][0, t]).abs().max() > 1e-12:
                    changed[L].append(j)
    assert reachable(model.config, t) == changed
    if kw["attention"] in ("sliding_window", "dynamic_window"):
        w = 3 if kw["attention"] == "sliding_window" else 4
        assert changed == [list(range(t - L * (w - 1), t + 1)) for L in (1, 2, 3)]  # grows by w - 1 per layer


def test_the_memory_bench_reads_its_figures_from_runs():
    from explorer.kvcache import MemorySettings, measure, speedups

    s = MemorySettings(contexts=(12, 24), new_tokens=4, n_embd=16, n_head=2, window=4, repeats=1)
    out = measure(s)
    rows = {(r["kind"], r["context"], r["cached"]): r for r in out["results"]}
    assert len(rows) == len(s.kinds) * 2 * 2 and all(r["tokens_per_s"] > 0 for r in rows.values())
    per_vector = 2 * s.n_embd * 4  # a key and a value of every head, float32
    for n in s.contexts:  # N - 1 positions read when the last of the N tokens is written
        assert rows["softmax", n, True]["cache_bytes_per_layer"] == [per_vector * (n - 1)] * s.n_layer
        assert rows["sliding_window", n, True]["cache_bytes_per_layer"] == [per_vector * (s.window - 1)] * s.n_layer
        assert rows["linear", n, True]["cache_bytes_per_layer"] == [s.n_head * (8 * 8 + 8) * 4] * s.n_layer
        assert rows["softmax", n, False]["cache_bytes"] == 0
    assert {(r["kind"], r["context"]) for r in speedups(out)} == {(k, n) for k in s.kinds for n in s.contexts}
