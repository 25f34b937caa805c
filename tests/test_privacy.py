"""Privacy (explorer.privacy, explorer.accountant): per-example clipping against a naive loop, the
noise's scale, the RDP accountant against published values and a numerical integral, exposure on a
hand-made ranking, the canary's insertion, and the output filter's catches and misses."""
import math

import pytest
import torch
import torch.nn.functional as F

from explorer import accountant, privacy
from explorer.config import ModelConfig
from explorer.corpus import Corpus
from explorer.model import build_model


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(vocab=7, block=8, seed=0):
    return build_model(ModelConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=16), seed)


def naive_grads(model, x, y):
    """Each example's gradient by its own backward pass (tied weights: ``parameters()`` lists once)."""
    out = []
    for i in range(len(x)):
        model.zero_grad()
        model(x[i:i + 1], y[i:i + 1]).loss.backward()
        out.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
    return out


# --------------------------------------------------------------------------- per-example gradients, clipping, noise
def test_per_example_grads_equal_a_naive_loop_and_clipping_bounds_every_example():
    model = tiny()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 7, (6, 8), generator=gen), torch.randint(0, 7, (6, 8), generator=gen)
    grads = privacy.per_example_grads(model, x, y)
    loop = naive_grads(model, x, y)
    assert "lm_head.weight" not in grads  # tied to wte.weight: one tensor holding both uses
    for i, g in enumerate(loop):
        for k in g:
            torch.testing.assert_close(grads[k][i], g[k], rtol=1e-4, atol=1e-6)
    naive_norms = torch.tensor([math.sqrt(sum(float(t.pow(2).sum()) for t in g.values())) for g in loop])
    clip = float(naive_norms.median())  # half the examples above C, half below
    clipped, norms = privacy.clip_per_example(grads, clip)
    torch.testing.assert_close(norms, naive_norms, rtol=1e-4, atol=1e-6)
    after = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in clipped.values()))
    assert (after <= clip * (1 + 1e-5)).all()  # EVERY example bounded by C
    for i in range(len(x)):
        if naive_norms[i] > clip:  # clipped to norm C exactly, direction kept
            assert after[i] == pytest.approx(clip, rel=1e-4)
        else:  # untouched
            assert after[i] == pytest.approx(float(naive_norms[i]), rel=1e-4)
    summed, _ = privacy.clip_and_sum(grads, clip)
    for k in summed:
        expect = sum(g[k] * min(1.0, clip / (float(n) + 1e-6)) for g, n in zip(loop, naive_norms))
        torch.testing.assert_close(summed[k], expect, rtol=1e-4, atol=1e-6)


def test_noise_has_standard_deviation_sigma_c_over_batch():
    s = privacy.DPSettings(noise_multiplier=1.3, clip=0.7)
    zeros = {"w": torch.zeros(400_000)}
    noisy = privacy.noisy_gradient(zeros, s, 16, torch.Generator().manual_seed(0))["w"]
    assert float(noisy.std()) == pytest.approx(1.3 * 0.7 / 16, rel=0.01)
    assert abs(float(noisy.mean())) < 5 * 1.3 * 0.7 / 16 / math.sqrt(400_000)
    ones = {"w": torch.ones(3)}
    quiet = privacy.DPSettings(noise_multiplier=1e-9, clip=1.0)
    torch.testing.assert_close(privacy.noisy_gradient(ones, quiet, 4, torch.Generator())["w"], torch.full((3,), 0.25))


def test_poisson_sampling_draws_each_example_with_probability_q():
    gen = torch.Generator().manual_seed(0)
    sizes = [len(privacy.poisson_batch(1000, 0.05, gen)) for _ in range(400)]
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.03)  # mean q·N
    assert min(sizes) < 45 < 55 < max(sizes)  # the batch size varies (not a fixed-size draw)


def test_windows_are_disjoint_and_shifted():
    ids = torch.arange(23)
    x, y = privacy.windows(ids, 5)
    assert x.shape == (4, 5) and x.flatten().tolist() == list(range(20))
    torch.testing.assert_close(y, x + 1)


def test_one_dp_sgd_step_is_clip_sum_noise_divide_then_sgd():
    corpus = Corpus("c", "".join(f"row {i % 10} of a small text\n" for i in range(120)))
    config = ModelConfig(vocab_size=corpus.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16)
    s = privacy.DPSettings(noise_multiplier=0.8, clip=0.05, batch_size=12, steps=1, lr=0.1, optimizer="sgd", seed=4)
    run = privacy.train_dp(corpus, config, s)
    # the same step by hand: Poisson draw, per-example gradients by a loop, clip each, sum, noise, / B
    x_all, y_all = privacy.windows(corpus.train, 8)
    gen_sample, gen_noise = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
    idx = privacy.poisson_batch(len(x_all), 12 / len(x_all), gen_sample)
    model = build_model(config, 4)
    loop = naive_grads(model, x_all[idx], y_all[idx])
    for name, p in model.named_parameters():
        total = torch.zeros_like(p)
        for g in loop:
            norm = math.sqrt(sum(float(t.pow(2).sum()) for t in g.values()))
            total += g[name] * min(1.0, 0.05 / (norm + 1e-6))
        noisy = (total + 0.8 * 0.05 * torch.randn(p.shape, generator=gen_noise)) / 12
        torch.testing.assert_close(dict(run.model.named_parameters())[name], p.detach() - 0.1 * noisy,
                                   rtol=1e-4, atol=1e-6)
    assert run.clipped_share == 1.0  # C = 0.05 is below every example's gradient norm here


# --------------------------------------------------------------------------- the accountant
def test_accountant_matches_opacus_published_value():
    # opacus/tests/accountants_test.py: σ = 1.5, q = 0.04, int(90 / 0.04) steps, δ = 1e-5 → ε = 7.32911117143
    eps = accountant.epsilon(0.04, 1.5, int(90 / 0.04), 1e-5)
    assert eps == pytest.approx(7.32911117143, abs=1e-6)  # the same conversion and orders: to 1e-6


def test_accountant_matches_tf_privacy_mnist_tutorial():
    # TF-Privacy's MNIST tutorial: N = 60000, batch 256, σ = 1.1, 60 epochs, δ = 1e-5 → ε ≈ 3.0 (classic
    # conversion, the one TF-Privacy then used; the improved conversion gives a little less)
    q, steps = 256 / 60000, int(math.ceil(60 * 60000 / 256))
    rdp = accountant.compute_rdp(q, 1.1, steps)
    classic = accountant.classic_epsilon(accountant.ORDERS, rdp, 1e-5)
    assert classic == pytest.approx(3.0, abs=0.1)
    assert accountant.epsilon(q, 1.1, steps, 1e-5) < classic


def _rdp_by_integration(q, sigma, alpha):
    """RDP of the sampled Gaussian at order α by numerically integrating E_{μ0}[(μ/μ0)^α] (float64)."""
    z = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    mu0 = torch.exp(-z ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    ratio = (1 - q) + q * torch.exp((2 * z - 1) / (2 * sigma ** 2))
    a = torch.trapezoid(mu0 * ratio ** alpha, z)
    return math.log(float(a)) / (alpha - 1)


@pytest.mark.parametrize("alpha", [2, 3.5, 8, 12.7])
def test_rdp_matches_numerical_integration(alpha):
    assert accountant.rdp_sampled_gaussian(0.05, 1.2, alpha) == pytest.approx(_rdp_by_integration(0.05, 1.2, alpha),
                                                                               rel=1e-6)


def test_rdp_edge_cases_and_errors():
    assert accountant.rdp_sampled_gaussian(1.0, 2.0, 5) == pytest.approx(5 / 8)  # the plain Gaussian: α / 2σ²
    assert accountant.rdp_sampled_gaussian(0.0, 2.0, 5) == 0
    assert accountant.compute_rdp(0.1, 1.0, 10, [2])[0] == pytest.approx(10 * accountant.compute_rdp(0.1, 1.0, 1, [2])[0])
    assert accountant.epsilon(0.1, 1.0, 200, 1e-5) > accountant.epsilon(0.1, 1.0, 100, 1e-5)
    assert accountant.epsilon(0.1, 0.0, 10, 1e-5) == math.inf
    with pytest.raises(ValueError, match="δ"):
        accountant.epsilon(0.1, 1.0, 10, 0.0)
    with pytest.raises(ValueError, match="sampling rate"):
        accountant.rdp_sampled_gaussian(1.5, 1.0, 2)


# --------------------------------------------------------------------------- canaries and exposure
def test_rank_exposure_on_a_hand_made_ranking():
    # secret's log-perplexity 2.0; others 1.0 (more likely), 3.0, 4.0, 5.0 → rank 2 of 5
    rank, size, exp = privacy.rank_exposure(2.0, [1.0, 3.0, 4.0, 5.0])
    assert (rank, size) == (2, 5) and exp == pytest.approx(math.log2(5) - 1)
    assert privacy.rank_exposure(0.5, [1.0] * 7)[2] == pytest.approx(3.0)  # the most likely of 8: log2 8
    assert privacy.rank_exposure(9.0, [1.0] * 7)[2] == pytest.approx(0.0)  # the least likely: 0 bits
    assert privacy.rank_exposure(1.0, [1.0, 1.0, 1.0])[0] == 3  # ties: 1 + ceil(3 / 2)


def test_exposure_ranks_log_perplexities_from_a_naive_loop():
    chars = "my PIN is0123456789"
    tok = Corpus("t", chars * 200).tokenizer
    model = tiny(vocab=len(tok.chars), block=16, seed=3).eval()
    cands = privacy.digit_secrets(2)  # "0 0" ... "9 9": all 100
    scores = privacy.log_perplexities(model, tok, "my PIN is ", cands)
    for i in (0, 37, 99):  # the sum of −log p of each secret character, one forward pass per character
        ids = tok.encode("my PIN is " + cands[i])
        naive = 0.0
        for t in range(len(ids) - 3, len(ids)):
            logits = model(torch.tensor([ids[max(0, t - 16):t]])).logits[0, -1]
            naive -= float(F.log_softmax(logits, -1)[ids[t]])
        assert float(scores[i]) == pytest.approx(naive, rel=1e-4)
    e = privacy.exposure(model, tok, "my PIN is {}", "4 2", cands)
    better = int((scores < scores[cands.index("4 2")]).sum())
    assert e.candidates == 100 and e.rank == 1 + better
    assert e.exposure == pytest.approx(math.log2(100) - math.log2(1 + better))
    with pytest.raises(ValueError, match="same format"):
        privacy.exposure(model, tok, "my PIN is {}", "4 2", ["1 2 3"])


def test_digit_secrets_all_or_a_sample():
    assert privacy.digit_secrets(2)[:3] == ["0 0", "0 1", "0 2"] and len(privacy.digit_secrets(3)) == 1000
    s = privacy.digit_secrets(5, sample=50, seed=1)
    assert len(set(s)) == 50 and all(len(c) == 9 for c in s)
    assert privacy.digit_secrets(2, alphabet="48") == ["4 4", "4 8", "8 4", "8 8"]


def test_insert_canary_puts_whole_lines_in_the_training_part():
    text = "".join(f"line {i} of the text.\n" for i in range(500))
    out = privacy.insert_canary(text, "my PIN is 4 8 1 5 2", 6, seed=2)
    assert out.count("my PIN is 4 8 1 5 2\n") == 6
    assert out.replace("my PIN is 4 8 1 5 2\n", "") == text
    corpus = Corpus("c", out)
    train = corpus.tokenizer.decode(corpus.train)
    assert train.count("my PIN is 4 8 1 5 2") == 6  # none in the held-out tenth
    assert out == privacy.insert_canary(text, "my PIN is 4 8 1 5 2", 6, seed=2)  # seeded
    assert len(privacy.secret_windows(corpus, "4 8 1 5 2", 64)) in range(6, 13)  # 1 or 2 windows each


# --------------------------------------------------------------------------- the output filter
def test_redact_catches_emails_and_numbers():
    out, spans = privacy.redact("mail jane.fairfax@example.co.uk or call +44 20 7946 0958, PIN 4 8 1 5 2.")
    assert out == "mail [REDACTED] or call [REDACTED], PIN [REDACTED]."
    assert [k for _, _, k in spans] == ["email", "number", "number"]
    assert privacy.redact("nothing private here")[0] == "nothing private here"


def test_known_misses_are_the_obfuscated_forms():
    misses = {c.private: c.leaked for c in privacy.known_misses()}
    assert "four eight one five two" in misses and misses["four eight one five two"] == "four eight one five two"
    assert "jane dot fairfax at example dot com" in misses
    assert misses["4 8 l 5 2"] == "l"  # a letter for a digit splits the span: the l survives
    assert "one" in misses["4-8-one-5-2"]
    caught = {t for t, _ in privacy.MISS_EXAMPLES} - {c.text for c in privacy.known_misses()}
    assert caught == {"my PIN is 4 8 1 5 2", "write to jane.fairfax@example.com today", "call 020-7946-0958 after six"}


def test_over_redactions_are_the_harmless_numbers():
    assert privacy.over_redactions() == [
        ("Volume 1, Chapter 12", "Volume [REDACTED], Chapter [REDACTED]"),
        ("Emma was born in 1796 and married at 21.", "Emma was born in [REDACTED] and married at [REDACTED]."),
        ("she walked 2 miles at 3 o'clock", "she walked [REDACTED] miles at [REDACTED] o'clock"),
    ]  # the names pass: the filter knows nothing of people


# --------------------------------------------------------------------------- the comparison, tiny
def test_compare_runs_both_arms_and_findings_state_its_numbers():
    base = "".join(f"Emma walked to Highbury on day {i % 7} and met Harriet there.\n" for i in range(120))
    canary = privacy.CanarySettings(secret="4 8 1", times=3, candidates=None, chars=len(base))
    vocab = privacy.canaried_corpus(base, canary).vocab_size
    config = ModelConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, n_embd=16)
    dp = privacy.DPSettings(noise_multiplier=1.0, clip=1.0, batch_size=8, steps=5, lr=1e-2)
    c = privacy.compare(base, config, dp, canary)
    assert c.dp.epsilon == pytest.approx(accountant.epsilon(8 / c.dp.examples, 1.0, 5, 1e-5))
    assert c.alphabet == "01234568"  # the digits of the text: the days 0-6 and the secret's 8
    assert c.plain.epsilon == math.inf and c.dp_exposure.candidates == 8 ** 3
    text = " ".join(privacy.findings(c))
    assert f"ε = {c.dp.epsilon:.2f}" in text and f"{c.plain_held_out:.3f}" in text
    with pytest.raises(ValueError, match="noise"):
        privacy.DPSettings(noise_multiplier=0).validate()
    # the verdict follows the exposures: lower with DP, no memorisation to remove, or no effect
    e = privacy.Exposure
    c.plain_exposure, c.dp_exposure = e(8.0, 2, 512, 1.0, 9.0), e(1.0, 256, 512, 9.0, 9.0)
    assert any("DP lowered the canary's exposure by 7.00 bits" in f for f in privacy.findings(c))
    c.dp_held_out, c.plain_held_out = 2.6, 2.1
    assert any("weaker model overall (held-out loss +0.500" in f for f in privacy.findings(c))
    c.plain_exposure, c.dp_exposure = e(1.5, 180, 512, 1.0, 9.0), e(1.2, 222, 512, 9.0, 9.0)
    assert any("barely memorised" in f for f in privacy.findings(c))
    c.plain_exposure, c.dp_exposure = e(6.0, 8, 512, 1.0, 9.0), e(6.5, 6, 512, 9.0, 9.0)
    assert any("DP did not lower" in f for f in privacy.findings(c))
