"""The model's named hook points, the logit lens, reading trained weights under another config, and
generation's sampling controls."""
import pytest
import torch

from explorer.config import ModelConfig
from explorer.generate import generate
from explorer.model import GPT, build_model, hook_names, logit_lens, with_config
from explorer.tasks import TASKS


def model(**kw):
    cfg = dict(vocab_size=20, block_size=16, n_layer=3, n_head=4, n_embd=32, encoding="rope")
    cfg.update(kw)
    return build_model(ModelConfig(**cfg), seed=0).eval()


def test_hook_points_are_the_tensors_the_forward_pass_used():
    m = model()
    x = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        out = m(x, capture=True)
        t = out.trace
    assert set(t) == set(m.hook_names()) == set(hook_names(3, pos_table=False))  # RoPE adds no table
    for i in range(2):  # the stream leaving one block is the stream entering the next
        assert torch.equal(t[f"blocks.{i}.resid_post"], t[f"blocks.{i + 1}.resid_pre"])
    for i in range(3):
        b = f"blocks.{i}"
        # each head's output is its pattern applied to its values
        torch.testing.assert_close(t[f"{b}.attn.pattern"] @ t[f"{b}.attn.v"], t[f"{b}.attn.z"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t[f"{b}.resid_pre"] + t[f"{b}.attn_out"], t[f"{b}.resid_mid"])
        torch.testing.assert_close(t[f"{b}.resid_mid"] + t[f"{b}.mlp_out"], t[f"{b}.resid_post"])
    torch.testing.assert_close(m.lm_head(t["ln_final"]), out.logits)
    torch.testing.assert_close(m.ln_f(t["blocks.2.resid_post"]), t["ln_final"])
    assert torch.equal(t["logits"], out.logits)


def test_nothing_is_recorded_unless_asked_and_names_fail_loudly():
    m = model()
    x = torch.randint(0, 20, (1, 16))
    assert m(x).trace == {} and m(x).attentions is None
    with pytest.raises(KeyError, match="valid: embed, blocks.0.resid_pre"):
        m(x, capture=["blocks.0.attention"])
    with pytest.raises(KeyError, match="no hook point"):
        m(x, edit={"blocks.9.attn.z": lambda z: z})
    only = m(x, capture=["blocks.*.attn.pattern"]).trace
    assert sorted(only) == [f"blocks.{i}.attn.pattern" for i in range(3)]


def test_an_edit_changes_exactly_what_it_names():
    m = model()
    x = torch.randint(0, 20, (1, 16))

    def ablate_head_1(z):
        z = z.clone()
        z[:, 1] = 0
        return z

    with torch.no_grad():
        base = m(x, capture=["blocks.0.attn.z", "blocks.1.attn.z"]).trace
        edited = m(x, capture=["blocks.0.attn.z", "blocks.1.attn.z"], edit={"blocks.0.attn.z": ablate_head_1}).trace
    assert torch.equal(edited["blocks.0.attn.z"][:, 1], torch.zeros_like(base["blocks.0.attn.z"][:, 1]))
    assert torch.equal(edited["blocks.0.attn.z"][:, [0, 2, 3]], base["blocks.0.attn.z"][:, [0, 2, 3]])
    assert not torch.allclose(edited["blocks.1.attn.z"], base["blocks.1.attn.z"])  # and it flows downstream


def test_logit_lens_reads_every_layer_and_its_last_row_is_the_model():
    m = model()
    x = torch.randint(0, 20, (1, 16))
    lens = logit_lens(m, x, top=2)
    assert lens["layers"] == ["embedding", "after block 0", "after block 1", "after block 2"]
    assert lens["tokens"].shape == (4, 16, 2) and lens["norm"].shape == (4, 16)
    with torch.no_grad():
        assert (lens["tokens"][-1, :, 0] == m(x).logits[0].argmax(-1).numpy()).all()


def test_with_config_reads_the_trained_weights():
    m = model(encoding="learned")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # "trained": no longer what a fresh build gives
    x = torch.randint(0, 20, (1, 16))
    same = with_config(m, m.config)
    assert same is not m
    torch.testing.assert_close(same(x).logits, m(x).logits)
    two_heads = with_config(m, ModelConfig(**{**m.config.__dict__, "n_head": 2}))
    for (name, a), (_, b) in zip(m.state_dict().items(), two_heads.state_dict().items()):
        assert torch.equal(a, b), name


def test_top_k_one_is_greedy_and_top_k_limits_the_choices():
    task = TASKS["grammar"]
    m = build_model(ModelConfig(vocab_size=task.tokenizer.vocab_size, block_size=64, n_layer=1, n_head=2,
                                n_embd=32), seed=3)
    greedy = generate(m, task.tokenizer, "the ", 20).text
    for seed in range(5):  # at temperature 2 an untrained model's choices are nearly uniform: top-1 must rule them
        assert generate(m, task.tokenizer, "the ", 20, temperature=2.0, top_k=1, seed=seed).text == greedy
    free = {generate(m, task.tokenizer, "the ", 20, temperature=2.0, seed=s).text for s in range(5)}
    assert len(free) > 1


def test_gpt_has_no_hidden_state_between_calls():
    m = model()
    x = torch.randint(0, 20, (1, 16))
    a = m(x, capture=True).trace
    b = m(x).trace
    assert a and b == {}
    assert isinstance(m, GPT)


def test_seeded_builds_give_the_same_weights_when_sessions_build_at_once():
    """Torch's generator is one per process: two sessions initialising models at the same moment
    must still each get their seed's weights (a classroom sees the docs' picture)."""
    import threading

    from explorer.fusion import FusionConfig, build

    configs = {"gpt": lambda: build_model(ModelConfig(n_layer=2, n_embd=64), 0),
               "fusion": lambda: build(FusionConfig(), 0)}
    want = {k: make().state_dict() for k, make in configs.items()}
    for _ in range(5):
        got = {}
        threads = [threading.Thread(target=lambda k=k, make=make: got.__setitem__(k, make().state_dict()))
                   for k, make in configs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in configs:
            assert all(torch.equal(got[k][n], want[k][n]) for n in want[k]), k
