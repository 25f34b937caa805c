"""Bias from skewed data (explorer.bias): the data's skew counted by hand, the probe's preference against a
naive per-character loop, and tiny trained models: the skew's sign shows in the probe, counterfactual
augmentation pulls it toward 50 %, a balanced text stays near 50 %."""
from dataclasses import replace

import pytest
import torch

from explorer import bias
from explorer.bias import GROUP_A, GROUP_B, BiasError, BiasSettings

TINY = BiasSettings(sentences=2000, n_layer=1, n_head=2, n_embd=32, context=32, batch_size=32, lr=1e-2, steps=300)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def skewed_run():
    torch.set_num_threads(1)
    return bias.run_bias(replace(TINY, skew=0.9))


@pytest.fixture(scope="module")
def balanced_run():
    torch.set_num_threads(1)
    return bias.run_bias(replace(TINY, skew=0.5, augment=False))


def test_count_skew_by_hand():
    text = ("the baker is zim. a nurse who is vor came. the pilot is vor. the judge is zim. "
            "the clerk is zim. the baker is vor")  # the last sentence is unfinished: not counted
    c = bias.count_skew(text)
    assert (c.a, c.b, c.counter_a, c.counter_b) == (2, 1, 1, 1)
    assert c.share_a == pytest.approx(2 / 3)
    assert c.counter_share_a == pytest.approx(0.5)


def test_generated_skew_and_augmentation():
    sents = bias.skewed_sentences(1.0, 400, seed=3)
    c = bias.count_skew(" ".join(sents))
    assert c.b == 0 and c.counter_a == 0 and c.a + c.counter_b == 400
    # at 0.8 the counted share is a binomial draw around 0.8 (about 200 target sentences: sd 0.03)
    c = bias.count_skew(" ".join(bias.skewed_sentences(0.8, 400, seed=3)))
    assert abs(c.share_a - 0.8) < 0.1 and abs(c.counter_share_a - 0.2) < 0.1
    aug = bias.count_skew(" ".join(bias.augmented(bias.skewed_sentences(0.8, 400, seed=3))))
    assert aug.a == aug.b == c.a + c.b and aug.counter_a == aug.counter_b


def test_swap_and_held_out_templates():
    assert bias.swap(f"the {GROUP_A} met a {GROUP_B}.") == f"the {GROUP_B} met a {GROUP_A}."
    s = "a pilot who is zim came."
    assert bias.swap(bias.swap(s)) == s
    text = bias.training_text(bias.corpus_for(TINY))
    for ctx in bias.probe_contexts(bias.TARGETS + bias.COUNTERS):
        assert ctx[2:] not in text  # the probe's templates never occur in training


@torch.no_grad()
def naive_logprob(model, tok, context, word):
    """Sum over the word's characters of log P(char | everything before it), one forward pass per char."""
    total = 0.0
    for i, ch in enumerate(word):
        ids = tok.encode(context + word[:i])
        logits = model(torch.tensor([ids])).logits[0, -1]
        total += float(torch.log_softmax(logits, -1)[tok.stoi[ch]])
    return total


def test_preference_equals_naive_loop():
    corpus = bias.corpus_for(TINY)
    tok = corpus.tokenizer
    model = bias.build_model(TINY.model_config(corpus.vocab_size), seed=5).eval()
    for ctx in bias.probe_contexts()[:5] + [". z"]:
        want = naive_logprob(model, tok, ctx, GROUP_A) - naive_logprob(model, tok, ctx, GROUP_B)
        assert bias.preference(model, tok, ctx) == pytest.approx(want, abs=1e-4)
    with pytest.raises(BiasError):
        bias.word_logprob(model, tok, "the baker is " * 4, GROUP_A)  # longer than the context


def test_bad_settings():
    for bad in (dict(skew=1.5), dict(skew=-0.1), dict(sentences=10), dict(context=8)):
        with pytest.raises(BiasError):
            bias.corpus_for(replace(TINY, **bad))


def test_skewed_data_shows_in_probe_and_augmentation_reduces_it(skewed_run):
    run = skewed_run
    assert run.finished and run.step == TINY.steps
    d, r = run.data["skewed"], run.last("skewed")
    assert d.share_a > 0.85
    assert r.target.mass > 0.5  # the model learned the slot: most probability on the two words
    assert r.target.share_a > 0.5 and r.target.mean_log_odds > 0 and r.target.p_a > 0.6
    assert r.counter.mean_log_odds < 0 and r.counter.p_a < 0.4  # the counter occupations lean the other way
    da, ra = run.data["augmented"], run.last("augmented")
    assert abs(da.share_a - 0.5) < 0.01
    assert abs(ra.target.p_a - 0.5) < abs(r.target.p_a - 0.5)
    assert abs(ra.target.mean_log_odds) < abs(r.target.mean_log_odds)
    text = " ".join(run.findings())
    assert f"{d.share_a:.1%}" in text and f"{r.target.p_a:.1%}" in text and f"{ra.target.p_a:.1%}" in text


def test_balanced_corpus_stays_near_half(balanced_run):
    run = balanced_run
    assert "augmented" not in run.records
    d, r = run.data["skewed"], run.last("skewed").target
    assert abs(d.share_a - 0.5) < 0.05
    assert r.mass > 0.5
    assert abs(r.p_a - 0.5) < 0.1
