"""Training really learns; generation and the tasks behave; everything is seeded."""
import random

import pytest
import torch

from explorer.config import ModelConfig
from explorer.generate import generate
from explorer.model import build_model
from explorer.tasks import IGNORE, TASKS, UnknownCharacters, grammatical, sentence
from explorer.train import TrainConfig, Trainer, evaluate


def small_model(task, length, **kw):
    cfg = dict(vocab_size=task.tokenizer.vocab_size, block_size=task.context(length), n_layer=2, n_head=4,
               n_embd=64, encoding="learned")
    cfg.update(kw)
    return build_model(ModelConfig(**cfg), seed=0)


def test_model_learns_reverse():
    task = TASKS["reverse"]
    model = small_model(task, 8)
    before = evaluate(model, task, 8)["accuracy"]
    seen = []
    trainer = Trainer(model, task, 8, TrainConfig(steps=250, seed=0), watch=torch.zeros(1, 16, dtype=torch.long))
    trainer.run(callback=seen.append, every=50)
    after = evaluate(model, task, 8)
    assert before < 0.2
    assert after["accuracy"] >= 0.95, after
    # the callback saw the loss fall and got attention snapshots of every layer
    assert [p.step for p in seen] == [50, 100, 150, 200, 250]
    assert seen[-1].loss < seen[0].loss
    assert len(seen[-1].attentions) == 2 and seen[-1].attentions[0].shape == (4, 16, 16)
    # and it writes reversed strings
    out = generate(model, task.tokenizer, "abcdefgh=", 8)
    assert out.text == "hgfedcba"
    assert all(0.5 < p <= 1 for p in out.probs)


def test_training_is_deterministic_and_resumable():
    task = TASKS["copy"]
    a, b = small_model(task, 4, n_layer=1), small_model(task, 4, n_layer=1)
    ta = Trainer(a, task, 4, TrainConfig(steps=20, seed=3))
    tb = Trainer(b, task, 4, TrainConfig(steps=20, seed=3))
    ta.run()
    tb.run(steps=7)
    tb.run(steps=5)
    tb.run()  # resumed in three slices
    assert ta.step == tb.step == 20
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


def test_symbolic_batches_mask_the_prompt():
    for name, fn in [("copy", lambda s: s), ("reverse", lambda s: s[::-1]), ("sort", lambda s: "".join(sorted(s)))]:
        task = TASKS[name]
        x, y = task.batch(torch.Generator().manual_seed(0), 3, 5)
        assert x.shape == y.shape == (3, 10)
        for row_x, row_y in zip(x, y):
            text = task.tokenizer.decode(row_x)
            src = text[:5]
            assert text[5] == "="
            answer = task.tokenizer.decode(row_y[row_y != IGNORE])
            assert answer == fn(src)
            assert (row_y[:4] == IGNORE).all()


def test_induction_and_grammar_tasks():
    task = TASKS["induction"]
    x, y = task.batch(torch.Generator().manual_seed(0), 2, 6)
    text = task.tokenizer.decode(torch.cat([x[0], y[0, -1:]]))
    assert text[:6] == text[6:]
    rng = random.Random(0)
    assert all(grammatical(sentence(rng)) for _ in range(200))
    assert not grammatical("the cat sees.")
    g = TASKS["grammar"]
    x, _ = g.batch(torch.Generator().manual_seed(0), 2, 16)
    assert x.shape == (2, 64)  # context = 4 x length


def test_generation_modes_and_errors():
    task = TASKS["grammar"]
    model = small_model(task, 16, n_layer=1)
    greedy = [generate(model, task.tokenizer, "the ", 10).text for _ in range(2)]
    assert greedy[0] == greedy[1]
    s1 = generate(model, task.tokenizer, "the ", 10, temperature=1.0, top_k=3, seed=5)
    s2 = generate(model, task.tokenizer, "the ", 10, temperature=1.0, top_k=3, seed=5)
    assert s1.text == s2.text and len(s1.probs) == 10
    with pytest.raises(UnknownCharacters) as err:
        generate(model, task.tokenizer, "The Cat!", 3)
    assert err.value.chars == ["T", "C", "!"]
    with pytest.raises(ValueError, match="empty"):
        generate(model, task.tokenizer, "", 3)
    with pytest.raises(ValueError, match="context is 64"):
        generate(model, task.tokenizer, "a" * 60, 10)
