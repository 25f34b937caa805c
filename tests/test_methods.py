"""Training methods: the device, bf16 mixed precision (and where precision stays float32, measured),
the sequence-length curriculum, and the two comparison jobs run through a scheduler."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from explorer import methods
from explorer.attention._base import causal_pattern, reference_attention
from explorer.blocks import NORMS
from explorer.config import ModelConfig
from explorer.corpus import builtin
from explorer.curriculum import Curriculum, CurriculumError
from explorer.device import describe, move, pick_device
from explorer.jobs import DONE, Scheduler
from explorer.model import build_model
from explorer.precision import (ADAM, FP32_PLACES, FUSED_SOFTMAX, LOGITS, LOSS, MLP_OUT, NORMS_OUT, PRECISIONS, QKV,
                                WEIGHTS, precision_report, report_sentences)
from explorer.train import TrainConfig, Trainer


def text_model(corpus, length=64, **kw):
    cfg = dict(vocab_size=corpus.vocab_size, block_size=length, n_layer=2, n_embd=64, n_head=4)
    cfg.update(kw)
    return build_model(ModelConfig(**cfg), seed=0)


class Spy:
    """A corpus that records the length and device of every batch it hands out."""

    def __init__(self, corpus):
        self.corpus, self.lengths = corpus, []

    def batch(self, gen, batch_size, length, split="train"):
        x, y = self.corpus.batch(gen, batch_size, length, split)
        self.lengths.append((x.shape[0], x.shape[1]))
        return x, y


# ---------------------------------------------------------------------------------------------- device
def test_device_is_picked_automatically_and_described():
    d = pick_device()
    assert d.type == ("cuda" if torch.cuda.is_available() else "cpu")
    text = describe(d)
    assert text.startswith("CUDA: ") if d.type == "cuda" else text.startswith("CPU, ")
    if not torch.cuda.is_available():
        assert "no CUDA GPU found" in describe("cpu")


def test_batch_follows_the_models_device():
    corpus = builtin()
    model = text_model(corpus, n_layer=1, n_embd=32)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].device))
    Trainer(model, corpus, 64, TrainConfig(steps=2, batch_size=4)).advance()
    assert seen and all(d == next(model.parameters()).device for d in seen)
    # tuples of tensors (the multimodal task's (images, words)) travel too
    x = (torch.zeros(2), (torch.ones(3), torch.ones(1)))
    moved = move(x, torch.device("meta"))
    assert moved[0].device.type == "meta" and moved[1][1].device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_moved_to_cuda_trains_there_in_bf16():
    corpus = builtin()
    model = text_model(corpus).to("cuda")
    tr = Trainer(model, corpus, 64, TrainConfig(steps=40, batch_size=16, precision="bf16"))
    tr.advance()
    assert next(model.parameters()).device.type == "cuda"
    assert corpus.held_out_loss(model, 64, 4, 16) < 0.75 * corpus.uniform_loss()
    report = dict(precision_report(model, *corpus.batch(torch.Generator().manual_seed(0), 2, 64), "bf16"))
    assert all(report[w] == "float32" for w in FP32_PLACES if w in report), report
    assert report[QKV] == report[LOGITS] == "bfloat16"


# ---------------------------------------------------------------------------------------------- precision
def test_bf16_autocast_trains_and_learns():
    corpus = builtin()
    model = text_model(corpus, 32)
    before = corpus.held_out_loss(model, 32, 4, 16)
    tr = Trainer(model, corpus, 32, TrainConfig(steps=30, batch_size=16, lr=3e-3, warmup=5, precision="bf16"))
    tr.advance()
    after = corpus.held_out_loss(model, 32, 4, 16)
    assert before == pytest.approx(corpus.uniform_loss(), abs=0.1)  # knows nothing at first: ln(vocab)
    assert after < 0.75 * corpus.uniform_loss(), after
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32


def test_bf16_really_changes_the_arithmetic_and_unknown_precisions_are_refused():
    corpus = builtin()
    runs = {}
    for p in ("fp32", "bf16"):
        tr = Trainer(text_model(corpus), corpus, 64, TrainConfig(steps=3, batch_size=8, precision=p))
        tr.advance()
        runs[p] = [h[1] for h in tr.history]
    assert runs["fp32"][0] == pytest.approx(runs["bf16"][0], abs=0.05)  # the same model, the same batch
    assert runs["fp32"] != runs["bf16"]  # ... computed in another arithmetic
    with pytest.raises(ValueError, match="precision = 'fp8'"):
        TrainConfig(precision="fp8")


def test_precision_report_bf16_keeps_norms_softmax_loss_and_optimizer_state_float32():
    corpus = builtin()
    model = text_model(corpus, n_layer=2)
    x, y = corpus.batch(torch.Generator().manual_seed(0), 2, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = dict(precision_report(model, x, y, "bf16"))
    for where in (NORMS_OUT, WEIGHTS, FUSED_SOFTMAX, LOSS, ADAM):
        assert report[where] == "float32", (where, report)
    for where in (QKV, MLP_OUT, LOGITS):  # matrix-multiply outputs
        assert report[where] == "bfloat16", (where, report)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched
    assert set(dict(precision_report(model, x, y, "fp32")).values()) == {"float32"}
    text = " ".join(report_sentences(list(report.items()), "bf16"))
    assert "precision stayed float32 in norm outputs, attention weights (softmax)" in text and "but not" not in text


def test_our_norms_and_softmax_compute_in_float32_on_bfloat16_input():
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(4, 7, 32, generator=g)).bfloat16()
    for name in NORMS.names():
        norm = NORMS[name].make(32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = norm(x)
        exact = norm(x.float())  # the same numbers, normalised in float32
        assert out.dtype == torch.bfloat16
        assert torch.equal(out, exact.bfloat16()), name  # = float32 arithmetic, rounded once at the end
    q, k, v = (torch.randn(1, 2, 9, 8, generator=g).bfloat16() for _ in range(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = reference_attention(q, k, v, causal_pattern(9))
    assert res.weights.dtype == torch.float32
    scores = (q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~causal_pattern(9), float("-inf"))  # bfloat16
    want = torch.softmax(scores.float(), -1)  # the bfloat16 scores' softmax, computed in float32
    assert torch.allclose(res.weights, want, atol=1e-6)
    assert not torch.allclose(F.softmax(scores, -1).float(), want, atol=1e-6)  # in bfloat16 it would differ


# ---------------------------------------------------------------------------------------------- curriculum
def test_curriculum_schedule_starts_short_never_shrinks_and_reaches_full_length():
    c = Curriculum(start=16, fraction=0.5, multiple=8)
    sched = c.schedule(128, 200)
    assert sched[0] == 16
    assert all(a <= b for a, b in zip(sched, sched[1:]))
    assert c.full_at(200) == 100 and sched[99] < 128 and all(L == 128 for L in sched[100:])
    assert all(L % 8 == 0 for L in sched)
    assert len(set(sched)) > 10  # it really grows, step by step
    assert c.tokens(128, 200, 4) == 4 * sum(sched) < 4 * 128 * 200
    assert Curriculum(start=300).schedule(64, 10) == [64] * 10  # a start beyond the full length is the full length
    assert Curriculum(fraction=0).schedule(64, 5) == [64] * 5
    for bad in (dict(start=0), dict(fraction=1.5), dict(multiple=0)):
        with pytest.raises(CurriculumError):
            Curriculum(**bad)


def test_each_training_batch_has_the_scheduled_length_and_the_same_number_of_sequences():
    corpus = builtin()
    spy = Spy(corpus)
    cur = Curriculum(start=8, fraction=0.6, multiple=4)
    tr = Trainer(text_model(corpus, n_layer=1, n_embd=32), spy, 64, TrainConfig(steps=30, batch_size=2, curriculum=cur))
    tr.advance()
    assert spy.lengths == [(2, L) for L in cur.schedule(64, 30)]
    # min_length still draws each step's length at random from [min_length, length]
    spy2 = Spy(corpus)
    Trainer(text_model(corpus, n_layer=1, n_embd=32), spy2, 64, TrainConfig(steps=20, batch_size=2, min_length=10)).advance()
    assert all(10 <= L <= 64 for _, L in spy2.lengths) and len({L for _, L in spy2.lengths}) > 3
    with pytest.raises(ValueError, match="one or the other"):
        TrainConfig(min_length=4, curriculum=cur)


# ---------------------------------------------------------------------------------------------- comparisons
TINY = dict(n_layer=1, n_embd=32, n_head=2, length=32, batch_size=4, steps=20, every=5, eval_batches=1, warmup=2)


@pytest.fixture
def scheduler():
    s = Scheduler(memory_budget_bytes=4e9, workers=1, slice_s=0.05)
    yield s
    s.shutdown()


def test_curriculum_comparison_runs_through_the_scheduler(scheduler):
    corpus = builtin()
    settings = methods.CurriculumSettings(start=8, **TINY).for_corpus(corpus)
    assert settings.digest == corpus.digest and corpus.text not in repr(settings)
    handle = scheduler.submit(methods.job(settings, corpus))
    assert handle.wait(60) == DONE
    run = handle.result()
    assert run.finished and run.step == 20
    assert run.schedule == Curriculum(8, 0.5, 8).schedule(32, 20)
    for arm in ("curriculum", "fixed"):
        recs = run.records[arm]
        assert [r.step for r in recs] == [0, 5, 10, 15, 20]
        assert all(a.seconds <= b.seconds for a, b in zip(recs, recs[1:]))
        assert recs[-1].loss < recs[0].loss  # both learn
    assert run.records["fixed"][-1].tokens == 20 * 4 * 32
    assert run.records["curriculum"][-1].tokens == 4 * sum(run.schedule)
    found = run.findings()
    assert len(found) >= 3 and f"{run.records['fixed'][-1].loss:.2f}" in found[1]
    assert found[2].startswith("As Li et al.") or found[2].startswith("Against the textbook")
    assert hash(settings) == hash(dataclasses.replace(settings))  # a job key


def test_precision_comparison_runs_through_the_scheduler(scheduler):
    corpus = builtin()
    settings = methods.PrecisionSettings(**TINY).for_corpus(corpus)
    handle = scheduler.submit(methods.job(settings, corpus))
    assert handle.wait(60) == DONE
    run = handle.result()
    assert set(run.records) == {"bf16", "fp32"} and run.finished
    assert dict(run.report)[LOSS] == "float32" and dict(run.report)[LOGITS] == "bfloat16"
    found = run.findings()
    assert found[0].startswith("Time per step: bf16 ") and f"{run.step_ms('fp32'):.0f} ms" in found[0]
    assert any("precision stayed float32" in f for f in found)
    assert ("slower here" in " ".join(found)) == (run.step_ms("bf16") > run.step_ms("fp32"))


def test_settings_must_name_the_corpus_they_are_run_on():
    corpus = builtin()
    with pytest.raises(ValueError, match="for_corpus"):
        methods.job(methods.CurriculumSettings(**TINY), corpus)  # no digest
    assert set(methods.url_defaults()) == {"tr_cur_steps", "tr_cur_length", "tr_cur_start", "tr_cur_fraction",
                                         "tr_cur_encoding", "tr_prec_steps"}
    assert all(p in PRECISIONS for p in methods.PrecisionSettings().precisions)
