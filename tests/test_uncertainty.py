"""Uncertainty (explorer.uncertainty): entropy and ECE against hand computations, reliability bins,
temperature scaling recovering a known temperature, per-token probabilities and entropies against a
naive loop, flags, disjoint calibration and test splits, and the shared shading view's escaping."""
import math

import numpy as np
import pytest
import torch

from explorer import corpus as texts, figures, textlm, uncertainty as unc
from explorer.corpus import Corpus
from explorer.model import build_model
from explorer.tasks import TASKS

TINY = dict(n_layer=1, n_head=2, n_embd=32, context=16, batch_size=16, lr=1e-2, steps=80, warmup=5, every=80)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



@pytest.fixture(scope="module")
def trained(emma):
    """A tiny character model trained briefly (80 steps) on Emma."""
    torch.set_num_threads(1)
    trainer = textlm.build_trainer(textlm.settings_for(emma, **TINY), emma)
    trainer.advance()
    return trainer.model.eval()


# ---------------------------------------------------------------------------------------------- entropy and ECE by hand
def test_entropy_against_hand_values():
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.25] * 4, [1.0, 0, 0, 0]])
    h = unc.entropy(p)
    assert h.tolist() == pytest.approx([1.5 * math.log(2), math.log(4), 0.0], abs=1e-6)


def test_reliability_bins_and_ece_by_hand():
    probs = [0.15, 0.18, 0.3, 0.55, 0.62, 0.95, 0.99, 1.0]
    right = [0, 1, 1, 1, 0, 1, 1, 1]
    r = unc.reliability(probs, right, bins=10)
    # bins are right-closed: 0.3 lies in (0.2, 0.3], 1.0 in (0.9, 1.0]
    assert r.counts == (0, 2, 1, 0, 0, 1, 1, 0, 0, 3)
    assert r.confidence[1] == pytest.approx(0.165) and r.accuracy[1] == pytest.approx(0.5)
    assert r.confidence[2] == pytest.approx(0.3) and r.accuracy[2] == 1.0
    assert r.confidence[9] == pytest.approx(0.98) and r.accuracy[9] == 1.0
    assert r.accuracy[4] != r.accuracy[4]  # empty bins are nan
    hand = (2 * abs(0.5 - 0.165) + 1 * 0.7 + 1 * 0.45 + 1 * 0.62 + 3 * 0.02) / 8
    assert hand == pytest.approx(0.3125)
    assert unc.ece(probs, right, bins=10) == pytest.approx(hand)
    # one bin: |mean accuracy - mean confidence|
    assert unc.ece(probs, right, bins=1) == pytest.approx(abs(np.mean(right) - np.mean(probs)))
    # an edge itself closes the bin below it: 0.5 lies in (0, 0.5], 0 joins the first bin
    assert unc.reliability([0.5, 1.0, 0.0], [1, 1, 0], bins=2).counts == (2, 1)
    assert unc.ece([0.7] * 10, [1] * 7 + [0] * 3) == pytest.approx(0.0)  # right 70 % of the time at 0.7


def test_bad_calibration_input_says_why():
    with pytest.raises(ValueError, match="one of each"):
        unc.ece([0.5, 0.6], [1])
    with pytest.raises(ValueError, match="empty"):
        unc.ece([], [])
    with pytest.raises(ValueError, match="bins"):
        unc.reliability([0.5], [1], bins=0)
    with pytest.raises(ValueError, match="probability"):
        unc.ece([1.5], [1])


# ---------------------------------------------------------------------------------------------- temperature scaling
def synthetic(factor: float, n: int = 20_000, v: int = 10, seed: int = 0):
    """Labels drawn from softmax(z) (so z is calibrated), logits ``factor * z``: over-confident by
    ``factor`` when it is above 1. Returns a Split."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, generator=g) * 2.0
    y = torch.multinomial(torch.softmax(z, -1), 1, generator=g)[:, 0]
    return unc.Split(z * factor, y)


@pytest.mark.parametrize("factor", [3.0, 0.5, 1.0])
def test_temperature_scaling_recovers_a_known_temperature(factor):
    s = synthetic(factor)
    t = unc.fit_temperature(s.logits, s.targets)
    assert t == pytest.approx(factor, rel=0.05)
    # it is the NLL's minimum (against a grid) and never above the NLL at T = 1
    grid = min(unc.nll(s.logits, s.targets, x) for x in np.geomspace(0.1, 10, 200))
    assert unc.nll(s.logits, s.targets, t) <= grid + 1e-9
    assert unc.nll(s.logits, s.targets, t) <= unc.nll(s.logits, s.targets, 1.0)


def test_fitting_never_raises_the_nll_even_when_no_temperature_helps():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(500, 5, generator=g), torch.randint(0, 5, (500,), generator=g)  # labels unrelated
    t = unc.fit_temperature(logits, y)
    assert unc.nll(logits, y, t) <= unc.nll(logits, y, 1.0)
    assert t > 5  # unrelated labels: the flatter the better, up to the search's bound


def test_report_on_over_confident_logits_and_its_findings():
    cal, test = synthetic(3.0, seed=0), synthetic(3.0, seed=1)
    r = unc.report(cal, test)
    assert r.fitted_t == pytest.approx(3.0, rel=0.05)
    conf, right = unc.top1(test.logits, test.targets, 1.0)
    assert r.before.ece == pytest.approx(unc.ece(conf, right)) == pytest.approx(r.row(1.0).ece)
    conf_f, right_f = unc.top1(test.logits, test.targets, r.fitted_t)
    assert r.fitted_row.ece == pytest.approx(unc.ece(conf_f, right_f))
    assert r.fitted_row.ece < 0.5 * r.before.ece
    assert (right_f == right).all() and r.accuracy == pytest.approx(right.mean())
    assert r.cal_nll[1] <= r.cal_nll[0]
    assert [x.temperature for x in r.rows][:3] == [0.5, 1.0, 2.0]
    text = " ".join(unc.findings(r))
    assert "over-confident" in text and "lowers ECE" in text and f"T = {r.fitted_t:.3f}" in text


def test_findings_say_when_ece_barely_moves():
    r = unc.report(synthetic(1.0, seed=2), synthetic(1.0, seed=3))
    assert abs(r.fitted_row.ece - r.before.ece) < unc.BARELY
    assert any("barely moves ECE" in f for f in unc.findings(r))


# ---------------------------------------------------------------------------------------------- a trained model
def test_corpus_splits_are_the_two_halves_of_the_held_out_text():
    text = ("abc " * 300)[:900] + "b" * 50 + "c" * 50  # the last 100 characters are held out
    corpus = Corpus("halves", text)
    assert corpus.tokenizer.decode(corpus.held_out) == "b" * 50 + "c" * 50
    model = build_model(textlm.settings_for(corpus, **TINY).model_config(corpus.vocab_size), 0)
    cal, test = unc.corpus_splits(model, corpus, windows=100, length=8)
    tok = corpus.tokenizer
    assert set(tok.decode(cal.targets)) == {"b"} and set(tok.decode(test.targets)) == {"c"}
    assert len(cal.targets) == len(test.targets) == 6 * 8  # windows start at 0, 8, ..., 40 of each 50


def test_calibration_of_a_briefly_trained_model(trained, emma):
    settings = unc.CalibrationSettings(windows=32)
    r = unc.calibrate(trained, emma, settings)
    cal, test = unc.corpus_splits(trained, emma, 32)
    assert r.n_cal == len(cal.targets) == 32 * 16 and r.n_test == len(test.targets) == 32 * 16
    assert not torch.equal(cal.targets, test.targets)
    assert r.fitted_t == unc.fit_temperature(cal.logits, cal.targets)  # fitted on the calibration split ...
    conf, right = unc.top1(test.logits, test.targets, r.fitted_t)
    assert r.fitted_row.ece == pytest.approx(unc.ece(conf, right))  # ... judged on the test split
    assert r.cal_nll[1] <= r.cal_nll[0]
    assert r.nll == pytest.approx(float(torch.nn.functional.cross_entropy(test.logits, test.targets)), rel=1e-5)
    state = "over-confident" if r.confidence - r.accuracy > unc.CLOSE else \
        "under-confident" if r.confidence - r.accuracy < -unc.CLOSE else "close to calibrated"
    assert state in unc.findings(r)[0]


def test_task_splits_use_answer_positions_of_fresh_examples():
    task = TASKS["copy"]
    from explorer.config import ModelConfig

    model = build_model(ModelConfig(vocab_size=len(task.chars), block_size=task.context(6), n_layer=1, n_head=2,
                                    n_embd=32), 0)
    cal, test = unc.task_splits(model, task, examples=20, length=6, seed=4)
    assert len(cal.targets) == len(test.targets) == 20 * 6  # the answer's 6 characters, the prompt masked
    assert not torch.equal(cal.targets, test.targets)  # different seeds, different examples
    r = unc.calibrate(model, task, unc.CalibrationSettings(examples=20, length=6))
    assert r.n_test == 120 and "answer positions" in r.source


# ---------------------------------------------------------------------------------------------- per-token uncertainty
@torch.no_grad()
def naive(model, ids, start, temperature, top_k):
    """Each written token's (probability, entropy) by a plain loop: the last block_size tokens, the
    sampler's distribution, -sum p ln p."""
    out = []
    for j in range(start, len(ids)):
        logits = model(torch.tensor([ids[:j][-model.config.block_size:]])).logits[0, -1]
        p = torch.softmax(logits / temperature, -1) if temperature > 0 else torch.softmax(logits, -1)
        if temperature > 0 and top_k:
            kth = sorted(p.tolist(), reverse=True)[top_k - 1]
            p = torch.tensor([x if x >= kth else 0.0 for x in p.tolist()])
            p = p / p.sum()
        out.append((float(p[ids[j]]), sum(-x * math.log(x) for x in p.tolist() if x > 0)))
    return out


@pytest.mark.parametrize("n,temperature,top_k", [(10, 0.8, None), (40, 1.0, 5), (12, 0.0, None)])
def test_token_probabilities_and_entropies_against_a_naive_loop(trained, emma, n, temperature, top_k):
    prompt = "Emma "
    infos = unc.token_uncertainty(trained, emma.tokenizer, prompt, n, temperature, top_k, seed=3)
    gen = textlm.generate(trained, emma.tokenizer, prompt, n, temperature, top_k, 3, slide=True)
    assert "".join(t.char for t in infos) == gen.text and len(infos) == n
    ids = emma.tokenizer.encode(prompt + gen.text)
    for t, (p, h) in zip(infos, naive(trained, ids, len(prompt), temperature, top_k)):
        assert t.prob == pytest.approx(p, abs=1e-5) and t.entropy == pytest.approx(h, abs=1e-4)
    if top_k:
        assert all(t.entropy <= math.log(top_k) + 1e-6 for t in infos)


def test_flags_follow_the_threshold(trained, emma):
    infos = unc.token_uncertainty(trained, emma.tokenizer, "Harriet ", 30, 1.0, None, seed=0, threshold=0.0)
    hs = sorted(t.entropy for t in infos)
    assert all(t.flagged for t in infos)  # every entropy is above 0
    mid = (hs[10] + hs[11]) / 2
    again = unc.token_uncertainty(trained, emma.tokenizer, "Harriet ", 30, 1.0, None, seed=0, threshold=mid)
    assert [t.flagged for t in again] == [t.entropy > mid for t in again] and sum(t.flagged for t in again) == 19
    assert not any(t.flagged for t in unc.token_uncertainty(trained, emma.tokenizer, "Harriet ", 30, 1.0, None,
                                                            seed=0, threshold=100.0))
    with pytest.raises(ValueError, match="nats"):
        unc.token_uncertainty(trained, emma.tokenizer, "Harriet ", 5, threshold=-1)


def test_the_shared_shading_view_escapes_markup():
    infos = [unc.TokenInfo(c, p, h, f) for c, p, h, f in
             zip("<b>&\"x'", [0.9, 0.2, 0.5, 0.1, 0.3, 0.7, 0.4], [0.1, 2.0, 0.7, 3.0, 1.0, 0.2, 1.6],
                 [False, True, False, True, False, False, True])]
    for by in ("probability", "entropy"):
        out = unc.uncertainty_html(infos, by=by)
        assert "<b>" not in out and "&lt;" in out and "&gt;" in out and "&amp;" in out and "&quot;" in out
        assert out.count('class="tok"') == 7 and out.count("outline: 2px dashed") == 3
    darkest = unc.uncertainty_html(infos, by="entropy").split('class="tok"')[4]  # the largest entropy, 3.0
    assert "rgba(214, 39, 40, 1.00)" in darkest
    # the Attention Lab's answers go through the same view
    text, probs = "<i>", [0.5, 0.6, 0.7]
    assert figures.probability_html(text, probs, "<j>") == figures.tokens_html(text, probs, expected="<j>")
    assert "<i>" not in figures.probability_html(text, probs)
    with pytest.raises(ValueError, match="entropy"):
        figures.tokens_html("ab", [0.5, 0.5], by="entropy")
