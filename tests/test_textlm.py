"""The text run (explorer.textlm): sampling past the context, top-k, the schedule the page draws, and
the held-out loss the probe measures, each against a naive computation."""
import math

import pytest
import torch
import torch.nn.functional as F

from explorer import corpus as texts, textlm
from explorer.model import build_model

TINY = dict(n_layer=1, n_head=2, n_embd=32, context=16, batch_size=16, lr=1e-2, steps=100, every=50,
            sample_chars=40)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



def tiny_model(corpus, seed=0):
    return build_model(textlm.settings_for(corpus, **TINY).model_config(corpus.vocab_size), seed).eval()


@torch.no_grad()
def naive_greedy(model, ids, n, context):
    """Write ``n`` tokens greedily, each from the last ``context`` tokens only (nanoGPT's sampler)."""
    ids = list(ids)
    for _ in range(n):
        logits = model(torch.tensor([ids[-context:]])).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids


def test_sampling_writes_past_the_context_reading_only_the_last_characters(emma):
    model = tiny_model(emma, seed=3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # large random weights: every character of the window sways the next one
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    prompt = "Emma Woodhouse, handsome, clever"  # 32 characters: already twice the context of 16
    out = textlm.sample(model, emma, prompt, 60, temperature=0.0)
    assert len(out.text) == 60 and len(out.ids) == len(prompt) + 60 > 16
    ids = emma.tokenizer.encode(prompt)
    assert out.ids == naive_greedy(model, ids, 60, 16)
    assert out.ids != naive_greedy(model, ids, 60, 15)  # the window's length matters to what it writes


def test_top_k_1_is_greedy_at_any_temperature_and_top_k_limits_the_draws(emma):
    model = tiny_model(emma, seed=1)
    greedy = textlm.sample(model, emma, "Harriet", 50, temperature=0.0)
    for seed in (0, 7):
        assert textlm.sample(model, emma, "Harriet", 50, temperature=1.5, top_k=1, seed=seed).text == greedy.text
    wild = textlm.sample(model, emma, "Harriet", 50, temperature=1.5, top_k=0, seed=7)
    assert wild.text != greedy.text  # an untrained model's draws: anything goes
    # with top-k = 3 every written character is among the 3 likeliest after what came before
    gen = textlm.sample(model, emma, "Harriet", 30, temperature=2.0, top_k=3, seed=5)
    with torch.no_grad():
        for i in range(len("Harriet"), len(gen.ids)):
            logits = model(torch.tensor([gen.ids[max(0, i - 16):i]])).logits[0, -1]
            assert gen.ids[i] in torch.topk(logits, 3).indices.tolist()


def test_same_seed_same_sample_and_an_empty_prompt_starts_from_a_new_line(emma):
    model = tiny_model(emma)
    a = textlm.sample(model, emma, "", 30, temperature=1.0, seed=4)
    assert a.text == textlm.sample(model, emma, "", 30, temperature=1.0, seed=4).text
    assert emma.tokenizer.decode(a.ids).startswith("\n") and textlm.probe_prompt(emma) == "\n"
    assert textlm.probe_start_words(emma) == "a new line"
    one_line = texts.from_bytes(b"abc " * 600, "line.txt")
    assert textlm.probe_prompt(one_line) == "a" and textlm.probe_start_words(one_line) == "the text's first character ('a')"


def test_unknown_characters_are_named_in_the_message(emma):
    with pytest.raises(textlm.PromptError) as e:
        textlm.sample(tiny_model(emma), emma, "Emma ☃ paid €5", 10)
    message = str(e.value)
    assert "'☃'" in message and "'€'" in message and "Emma" in message and "76 characters" in message
    assert "'E'" not in message  # only the unknown ones


def test_the_schedule_series_is_lr_at_warming_up_then_decaying_to_a_tenth():
    s = textlm.TextSettings()
    steps, lrs = textlm.schedule_series(s)["learning rate"]
    config = s.train_config()
    assert steps == list(range(s.steps)) and lrs == [config.lr_at(i) for i in steps]
    assert max(lrs) == pytest.approx(s.lr) and lrs.index(max(lrs)) == s.warmup - 1
    assert lrs[-1] == pytest.approx(0.1 * s.lr, rel=1e-3)


@torch.no_grad()
def naive_held_out(model, corpus, length, batches, batch_size, seed=1234):
    """Mean next-character cross-entropy on the held-out windows, position by position."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(batches):
        start = torch.randint(0, len(corpus.held_out) - length, (batch_size,), generator=gen)
        total = 0.0
        for s in start.tolist():
            window = corpus.held_out[s: s + length + 1]
            logp = F.log_softmax(model(window[None, :-1]).logits[0], dim=-1)  # (length, vocab)
            total += -logp[torch.arange(length), window[1:]].mean().item()
        losses.append(total / batch_size)
    return sum(losses) / batches


def test_the_probe_measures_the_held_out_loss_and_training_lowers_it(emma):
    settings = textlm.settings_for(emma, **TINY)
    job = textlm.training_job(settings, emma)
    while not job.step(5.0):
        pass
    run = job.live()
    assert run.finished and [s for s, _ in run.probes] == [0, 50, 100]
    first, last = run.probes[0][1]["held_out_loss"], run.probes[-1][1]["held_out_loss"]
    assert abs(first - emma.uniform_loss()) < 0.1  # untrained: about ln(76)
    assert last == pytest.approx(naive_held_out(run.model, emma, 16, settings.eval_batches, settings.batch_size),
                                 abs=1e-4)
    assert last < emma.uniform_loss() - 0.8  # it learned the letters' frequencies at least
    assert all(len(m["sample"]) == settings.sample_chars for _, m in run.probes)
    assert set(run.probes[-1][1]["sample"]) <= set(emma.chars)
    untrained = textlm.untrained_run(settings, emma)
    assert untrained.probes[0][1]["held_out_loss"] == pytest.approx(first)  # the page's first view is step 0
    found = textlm.findings(run, emma)
    assert f"{first:.2f} nats per character at step 0" in found[0] and f"{last:.2f} at step 100" in found[0]


def test_a_run_names_its_corpus_by_digest_never_by_text(emma):
    settings = textlm.settings_for(emma, **TINY)
    assert settings.digest == emma.digest and len(settings.digest) == 64
    assert emma.text[:100] not in repr(settings)
    other = texts.from_bytes(emma.text[:5000].encode(), "emma")  # the same name, another text
    with pytest.raises(ValueError, match="not 'emma'|for the text"):
        textlm.training_job(settings, other)
    assert textlm.training_job(textlm.TextSettings(**TINY), emma).key[1].digest == ""  # "" stands for the built-in


def test_impossible_settings_are_a_message():
    assert "must divide the width" in textlm.TextSettings(n_head=3).problem(76)
    assert textlm.TextSettings().problem(76) is None
    assert math.isclose(textlm.TextSettings().model_config(76).vocab_size, 76)
