"""Direct preference optimisation (explorer.dpo): the loss against its formula on hand-computed
numbers and the direction of its gradient, sequence log-probs against a naive per-token loop, and
a short seeded run on a tiny model: the scripted preference's win rate rises, KL from the reference
grows from 0, and the reference stays bit for bit what it was."""
import math
import random

import pytest
import torch

from explorer import dpo
from explorer.config import ModelConfig
from explorer.corpus import Corpus
from explorer.model import build_model
from explorer.tasks import TASKS, sentence
from explorer.train import TrainConfig, Trainer


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_dpo_loss_is_the_papers_formula_on_hand_computed_numbers():
    # pair 1: chosen log-ratio -2 - (-2.5) = 0.5, rejected -3 - (-2.5) = -0.5; β = 0.5 -> z = 0.5
    # pair 2: both log-ratios 0 -> z = 0
    pc, pr = torch.tensor([-2.0, -1.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.5, -1.0]), torch.tensor([-2.5, -1.0])
    loss, chosen, rejected = dpo.dpo_loss(pc, pr, rc, rr, beta=0.5)
    # -log σ(0.5) = log(1 + e^-0.5) = 0.474077; -log σ(0) = log 2 = 0.693147; their mean
    assert float(loss) == pytest.approx((0.4740769841801067 + 0.6931471805599453) / 2, abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.25, 0.0])  # β (π_c - ref_c)
    assert rejected.tolist() == pytest.approx([-0.25, 0.0])


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-2.0, -1.0], requires_grad=True)
    pr = torch.tensor([-3.0, -1.0], requires_grad=True)
    rc, rr = torch.tensor([-2.5, -1.0]), torch.tensor([-2.5, -1.0])
    loss, _, _ = dpo.dpo_loss(pc, pr, rc, rr, beta=0.5)
    loss.backward()
    # d/dπ_c of -log σ(βΔ)/B = -β σ(-βΔ) / B: descent raises the chosen, lowers the rejected
    expect = [-0.5 * (1 / (1 + math.exp(0.5))) / 2, -0.5 * 0.5 / 2]
    assert pc.grad.tolist() == pytest.approx(expect)
    assert pr.grad.tolist() == pytest.approx([-g for g in expect])
    assert all(g < 0 for g in pc.grad) and all(g > 0 for g in pr.grad)


def tiny(vocab, block=24, seed=0):
    return build_model(ModelConfig(vocab_size=vocab, block_size=block, n_layer=1, n_head=2, n_embd=32), seed)


@torch.no_grad()
def test_sequence_logp_equals_a_naive_per_token_loop():
    model = tiny(11, block=16, seed=3).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights: every token matters to the next
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    prompts = torch.randint(0, 11, (3, 5), generator=gen)
    completions = torch.randint(0, 11, (3, 7), generator=gen)
    got = dpo.sequence_logp(model, prompts, completions)
    for b in range(3):
        ids, total = prompts[b].tolist(), 0.0
        for tok in completions[b].tolist():
            logits = model(torch.tensor([ids])).logits[0, -1]
            total += float(torch.log_softmax(logits.double(), -1)[tok])
            ids.append(tok)
        assert float(got[b]) == pytest.approx(total, abs=1e-4)
    with pytest.raises(dpo.PreferenceError):
        dpo.sequence_logp(model, prompts, torch.zeros(3, 13, dtype=torch.long))  # 5 + 13 - 1 > 16


@pytest.fixture(scope="module")
def toy_text():
    """A small text of the toy language (plenty of 'e's), and a char model trained on it for a little."""
    rng = random.Random(0)
    corpus = Corpus("toy.txt", " ".join(sentence(rng) for _ in range(600)))
    torch.set_num_threads(1)
    model = tiny(corpus.vocab_size, block=32, seed=0)
    Trainer(model, corpus, 24, TrainConfig(steps=60, batch_size=16, lr=1e-2, warmup=5)).advance()
    return corpus, model.eval()


def text_run(corpus, model, **fields):
    settings = dpo.DPOSettings(**dict(dict(beta=0.5, lr=1e-3, steps=30, pairs=16, sample_length=12,
                                            eval_every=10, eval_samples=64), **fields))
    return dpo.DPOTrainer(model, corpus.tokenizer, dpo.corpus_prompts(corpus, 8), "fewer_e", settings)


def reference_samples(tr):
    """The reference's evaluation samples, drawn again the way ``measure`` draws them."""
    gen = torch.Generator().manual_seed(tr.settings.seed + 7919)
    prompts = tr.prompts(gen, tr.settings.eval_samples)
    ids = dpo.sample(tr.reference, prompts, tr.settings.sample_length, tr.settings.temperature, gen)
    return [tr.tokenizer.decode(r) for r in ids]


def test_dpo_raises_the_win_rate_moves_away_from_the_reference_and_leaves_it_unchanged(toy_text):
    corpus, model = toy_text
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tr = text_run(corpus, model)
    tr.advance()
    first, last = tr.measurements[0], tr.measurements[-1]
    assert first.step == 0 and last.step == 30
    assert first.kl == 0.0 and first.win_rate == 0.5  # policy == reference: same samples, same scores
    assert last.win_rate > 0.6 and last.policy_score > first.policy_score  # fewer e's than the reference
    assert last.kl > 0.01 and not dpo.collapsed(tr.measurements)
    for k, v in tr.reference.state_dict().items():
        assert torch.equal(v, before[k])  # the frozen reference, bit for bit
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # and the model handed in
    assert not any(p.requires_grad for p in tr.reference.parameters())
    assert all(h["pairs"] > 0 for h in tr.history)
    text = " ".join(dpo.findings(tr))
    assert f"{last.win_rate:.0%}" in text and f"{last.kl:.3f}" in text and "No collapse" in text
    ties = sum(tr.preference.score("", t) == 0 for t in reference_samples(tr)) / 64  # a naive recount
    assert last.reference_best == ties and f"possible here is {1 - ties / 2:.0%}" in text


def test_too_large_a_step_collapses_the_policy_and_findings_say_so(toy_text):
    corpus, model = toy_text
    tr = text_run(corpus, model, lr=1e-2, steps=20)  # ten times the step of the run above
    tr.advance()
    first, last = tr.measurements[0], tr.measurements[-1]
    assert dpo.collapsed(tr.measurements)
    assert last.entropy < 0.25 * first.entropy or last.kl > 1.0
    text = " ".join(dpo.findings(tr))
    assert "collapsed" in text and f"{last.kl:.2f}" in text


def test_human_choices_become_chosen_and_rejected_pairs_and_bad_ones_raise():
    tok = TASKS["reverse"].tokenizer
    pairs = dpo.HumanPairs((("abc=", "cba", "abc", "a"), ("ab=", "ab", "ba", "b"))).pairs(tok)
    assert [[tok.decode(t) for t in p] for p in pairs] == [["abc=", "cba", "abc"], ["ab=", "ba", "ab"]]
    with pytest.raises(dpo.PreferenceError, match="'a' or 'b'"):
        dpo.HumanPairs((("abc=", "cba", "abc", "c"),)).pairs(tok)
    with pytest.raises(dpo.PreferenceError, match="itself"):
        dpo.HumanPairs((("abc=", "cba", "cba", "a"),)).pairs(tok)


def test_the_reversal_preference_scores_by_the_tasks_rule():
    rev = dpo.PREFERENCES["reversal"]
    task = TASKS["reverse"]
    assert rev.score("abcd=", task.expected("abcd")) == 1.0
    assert rev.score("abcd=", "dcxx") == 0.5
    assert dpo.PREFERENCES["fewer_e"].score("x", "the bee") == -3.0


def test_training_on_human_choices_raises_the_chosen_answers_likelihood_against_the_reference():
    task = TASKS["reverse"]
    tok = task.tokenizer
    model = tiny(tok.vocab_size, block=8, seed=1).eval()
    human = dpo.HumanPairs((("abc=", "cba", "abc", "a"), ("xyz=", "xzy", "zyx", "b")))
    settings = dpo.DPOSettings(beta=0.5, lr=1e-2, steps=5, sample_length=3, eval_every=5, eval_samples=8)
    tr = dpo.DPOTrainer(model, tok, dpo.task_prompts(task, 3), "reversal", settings, human=human)
    tr.advance()
    assert [h["pairs"] for h in tr.history] == [2] * 5
    assert tr.history[-1]["loss"] < tr.history[0]["loss"] and tr.history[-1]["margin"] > 0
    for p, c, r in human.pairs(tok):
        with torch.no_grad():
            up = dpo.sequence_logp(tr.policy, p, c) - dpo.sequence_logp(tr.reference, p, c)
            down = dpo.sequence_logp(tr.policy, p, r) - dpo.sequence_logp(tr.reference, p, r)
        assert float(up - down) > 0


def test_the_job_runs_in_slices_and_publishes_the_same_run_as_the_trainer():
    task = TASKS["reverse"]
    tok = task.tokenizer
    model = tiny(tok.vocab_size, block=8, seed=2).eval()
    settings = dpo.DPOSettings(lr=1e-2, steps=4, pairs=8, sample_length=3, eval_every=2, eval_samples=16)

    def build():
        return dpo.DPOTrainer(model, tok, dpo.task_prompts(task, 3), "reversal", settings)

    job = dpo.DPOJob(("dpo", settings), "DPO", build, peak_bytes=1e6)
    assert job.progress() == (0.0, "starting")
    slices = 0
    while not job.step(0.0):  # a zero slice: one step each
        slices += 1
    run = job.result()
    assert slices == 3 and run.finished and run.step == 4 and job.progress()[0] == 1.0
    alone = build()
    alone.advance()
    assert run.measurements == alone.measurements and run.history == alone.history  # seeded: slices change nothing
    assert all(torch.equal(a, b) for a, b in zip(run.policy.state_dict().values(), alone.policy.state_dict().values()))


def test_on_a_half_trained_reverse_model_dpo_gets_more_answer_letters_right():
    task = TASKS["reverse"]
    model = tiny(task.tokenizer.vocab_size, block=task.context(4), seed=0)
    Trainer(model, task, 4, TrainConfig(steps=100, batch_size=32, lr=3e-3, warmup=10)).advance()
    settings = dpo.DPOSettings(beta=0.5, lr=3e-3, steps=30, sample_length=4, eval_every=30, eval_samples=64)
    tr = dpo.DPOTrainer(model.eval(), task.tokenizer, dpo.task_prompts(task, 4), "reversal", settings)
    tr.advance()
    first, last = tr.measurements[0], tr.measurements[-1]
    assert first.policy_score < 0.5  # half-trained: under half the sampled answer letters right
    assert last.win_rate > 0.6 and last.policy_score > first.policy_score + 0.05
    assert 0 < last.kl < dpo.COLLAPSE_KL and not dpo.collapsed(tr.measurements, one_answer=True)
