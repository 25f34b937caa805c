"""Mixture of experts, block layouts, norms and the funnel, against hand computations."""
import math

import pytest
import torch
import torch.nn.functional as F

from explorer.blocks import LAYOUTS, NORMS, RMSNorm, pool_pairs, spans, unpool_causal
from explorer.config import ModelConfig
from explorer.model import build_model, hook_names
from explorer.moe import MoE, Routing, balancing_loss, capacity, keep_within_capacity, top_k_route


def test_top_k_picks_the_largest_gates_and_renormalises_them():
    gates = torch.tensor([[0.1, 0.5, 0.15, 0.25], [0.4, 0.3, 0.2, 0.1]])
    experts, weights = top_k_route(gates, 2)
    assert experts.tolist() == [[1, 3], [0, 1]]
    assert torch.allclose(weights, torch.tensor([[0.5 / 0.75, 0.25 / 0.75], [0.4 / 0.7, 0.3 / 0.7]]))
    experts, weights = top_k_route(gates, 1)  # Switch: the gate itself, so the router learns from the loss
    assert experts.tolist() == [[1], [0]] and torch.equal(weights, torch.tensor([[0.5], [0.4]]))


def test_the_balancing_loss_is_switch_transformers_formula():
    gates = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.5, 0.25, 0.25]])
    first = torch.tensor([0, 0, 1, 0])
    f = [3 / 4, 1 / 4, 0]  # fraction of tokens whose first choice is each expert
    P = [(0.7 + 0.6 + 0.1 + 0.5) / 4, (0.2 + 0.3 + 0.8 + 0.25) / 4, (0.1 + 0.1 + 0.1 + 0.25) / 4]
    assert balancing_loss(gates, first).item() == pytest.approx(3 * sum(a * b for a, b in zip(f, P)))
    uniform = torch.full((6, 3), 1 / 3)
    assert balancing_loss(uniform, torch.tensor([0, 1, 2, 0, 1, 2])).item() == pytest.approx(1.0)


def test_capacity_overflow_drops_exactly_the_later_tokens_and_counts_them():
    assert capacity(8, 4, 1, 1.0) == 2 and capacity(8, 4, 2, 1.25) == 5 and capacity(3, 4, 1, 1.0) == 1
    experts = torch.tensor([[0], [0], [1], [0], [2], [0]])  # expert 0 asked by tokens 0, 1, 3, 5
    kept = keep_within_capacity(experts, 4, 2)
    assert kept[:, 0].tolist() == [True, True, True, False, True, False]  # first come, first served
    routing = Routing(torch.full((6, 4), 0.25), experts, kept)
    assert routing.dropped == pytest.approx(2 / 6)
    assert routing.load.tolist() == pytest.approx([0.5, 0.25, 0.25, 0.0])
    # with top-2, every first choice is served before any second choice: expert 0 takes the first
    # choices of tokens 0 and 2 and is then full for token 1's second choice; expert 1 takes token 1's
    # first choice and token 0's second, and is then full for token 2's second
    two = torch.tensor([[0, 1], [1, 0], [0, 1]])
    assert keep_within_capacity(two, 2, 2).tolist() == [[True, True], [True, False], [True, False]]


def test_capacity_matches_a_naive_first_come_first_served_loop():
    gen = torch.Generator().manual_seed(0)
    for k, E, cap in [(1, 4, 3), (2, 4, 5), (2, 3, 2), (3, 5, 4)]:
        experts = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(17)])  # (N, k)
        taken, want = [0] * E, torch.zeros(17, k, dtype=torch.bool)
        for rank in range(k):  # every token's first choice, then every token's second, ...
            for token in range(17):
                e = int(experts[token, rank])
                if taken[e] < cap:
                    taken[e] += 1
                    want[token, rank] = True
        assert torch.equal(keep_within_capacity(experts, E, cap), want)


def test_dropped_tokens_get_nothing_from_the_layer_so_only_the_residual_carries_them():
    torch.manual_seed(0)
    moe = MoE(8, 16, n_experts=2, top_k=1, capacity_factor=0.1, noise=0.0)  # capacity ceil(0.1*6/2) = 1
    x = torch.randn(1, 6, 8)
    trace = {}
    out, _ = moe(x, lambda n, t: trace.setdefault(n, t), "m")
    kept = trace["m.kept"][0, :, 0]
    assert int(kept.sum()) <= 2  # one token per expert
    assert torch.all(out[0, ~kept] == 0) and torch.all(out[0, kept].abs().sum(-1) > 0)


def test_a_mixture_of_one_expert_with_top_1_is_the_dense_layer_exactly():
    dense = build_model(ModelConfig(n_layer=2, ffn="dense"), seed=3)
    moe = build_model(ModelConfig(n_layer=2, ffn="moe", n_experts=1, top_k=1, capacity_factor=1.0), seed=3)
    # one expert: its gate is softmax over one logit = 1, whatever the router's weights
    state = {}
    for name, value in dense.state_dict().items():
        state[name.replace(".mlp.c_", ".mlp.experts.0.c_")] = value
    for i in range(2):
        state[f"blocks.{i}.mlp.router.weight"] = moe.state_dict()[f"blocks.{i}.mlp.router.weight"]
    moe.load_state_dict(state)
    x = torch.randint(0, 32, (3, 20))
    assert torch.equal(moe(x).logits, dense(x).logits)


def test_the_model_traces_routing_and_the_objective_adds_the_weighted_balancing_loss():
    cfg = ModelConfig(n_layer=2, ffn="moe", n_experts=4, top_k=2, aux_weight=0.5)
    m = build_model(cfg, seed=0)
    assert "blocks.1.moe.gates" in m.hook_names() and "blocks.1.moe.gates" not in hook_names(2)
    x = torch.randint(0, 32, (2, 16))
    out = m(x, x, capture=["blocks.*.moe.*"])
    r = Routing.from_trace(out.trace, 1)
    assert r.gates.shape == (32, 4) and r.experts.shape == (32, 2)
    assert torch.allclose(r.gates.sum(-1), torch.ones(32))
    assert out.aux_loss.item() > 0 and out.objective.item() == pytest.approx(out.loss.item() + 0.5 * out.aux_loss.item())
    out.objective.backward()
    assert m.blocks[0].mlp.router.weight.grad.abs().sum() > 0  # the router learns from both terms


def test_rmsnorm_is_its_formula():
    x = torch.randn(4, 8)
    n = RMSNorm(8)
    with torch.no_grad():
        n.weight.copy_(torch.linspace(0.5, 2, 8))
    want = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + 1e-5) * torch.linspace(0.5, 2, 8)
    assert torch.allclose(n(x), want, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS.names())
@pytest.mark.parametrize("norm", NORMS.names())
def test_each_layout_is_its_hand_written_forward(layout, norm):
    cfg = ModelConfig(n_layer=2, n_embd=32, n_head=2, layout=layout, norm=norm, encoding="learned")
    m = build_model(cfg, seed=1).eval()
    idx = torch.randint(0, 32, (2, 12))
    T = idx.shape[1]
    x = m.wte(idx) + m.pos.wpe.weight[:T]
    mask = torch.ones(T, T).tril().bool()

    def attn(blk, h):
        q, k, v = blk.attn.c_attn(h).split(32, dim=2)
        q, k, v = (t.view(2, T, 2, 16).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2) / math.sqrt(16)).masked_fill(~mask, float("-inf"))
        return blk.attn.c_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(2, T, 32))

    def mlp(blk, h):
        return blk.mlp.c_proj(F.gelu(blk.mlp.c_fc(h)))

    for blk in m.blocks:
        if layout == "pre_ln":
            x = x + attn(blk, blk.ln_1(x))
            x = x + mlp(blk, blk.ln_2(x))
        elif layout == "post_ln":
            x = blk.ln_1(x + attn(blk, x))
            x = blk.ln_2(x + mlp(blk, x))
        else:
            x = attn(blk, blk.ln_1(x))
            x = mlp(blk, blk.ln_2(x))
    want = m.lm_head(m.ln_f(x))
    assert torch.allclose(m(idx).logits, want, atol=1e-5)


def test_pooling_and_causal_unpooling():
    x = torch.arange(10.0).view(1, 5, 2)
    assert pool_pairs(x).tolist() == [[[1.0, 2.0], [5.0, 6.0]]]  # the 5th token has no pair yet
    up = unpool_causal(torch.tensor([[[1.0], [2.0]]]), 5)
    assert up[0, :, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]  # t gets the last pair ending at or before t
    assert spans(5, 2) == [[(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)], [(0, 1), (2, 3)], [(0, 3)]]


@pytest.mark.parametrize("funnel", [(1,), (1, 2)])
def test_the_funnel_keeps_the_length_and_stays_causal_and_prefix_invariant(funnel):
    cfg = ModelConfig(n_layer=3, funnel=funnel, block_size=64)
    m = build_model(cfg, seed=2).eval()
    x = torch.randint(0, 32, (2, 37))
    with torch.no_grad():
        full = m(x).logits
        assert full.shape == (2, 37, 32)
        for t in range(1, 37, 4):  # a prefix alone gives the logits it gets inside the full sequence
            assert (m(x[:, :t]).logits - full[:, :t]).abs().max() < 1e-5
        y = x.clone()
        y[:, 20:] = (y[:, 20:] + 1) % 32  # change the future: the past's logits do not move
        assert torch.equal(m(y).logits[:, :20], full[:, :20])
        coarse = m(x, capture=["blocks.*.attn.pattern"]).trace
    assert coarse["blocks.0.attn.pattern"].shape[-1] == 37
    assert coarse[f"blocks.{funnel[0]}.attn.pattern"].shape[-1] == 18  # the merged pairs


def test_impossible_settings_name_the_field_and_what_is_allowed():
    with pytest.raises(ValueError, match="top_k = 3.*n_experts = 2"):
        ModelConfig(ffn="moe", n_experts=2, top_k=3)
    with pytest.raises(ValueError, match="capacity_factor"):
        ModelConfig(ffn="moe", capacity_factor=0)
    with pytest.raises(ValueError, match="funnel"):
        ModelConfig(n_layer=2, funnel=(0,))
    with pytest.raises(ValueError, match="layout = 'sideways'.*pre_ln"):
        ModelConfig(layout="sideways")
