"""The Memory page's library: writing with a cache and what it holds, reach against measured
forgetting, turns, and the measurement job."""
import numpy as np
import pytest
import torch

from explorer import memory as mem
from explorer.generate import generate
from explorer.kvcache import reachable


def model(**kw):
    return mem.model_for(mem.MemorySettings(**kw))


TEXT = mem.conversation(mem.DEFAULT_TURNS)


@pytest.mark.parametrize("kind", ["sliding_window", "softmax", "linear"])
def test_writing_with_the_cache_writes_what_reading_again_writes(kind):
    m = model(attention=kind)
    w = mem.write(m, TEXT, 10)
    assert w.cached and w.reason == ""
    assert w.text == generate(m, mem.TOKENIZER, TEXT, 10, use_cache=False).text
    assert len(w.held) == len(w.memory) == 10


def test_a_rolling_cache_holds_the_last_window_and_its_bytes_are_the_tensors():
    s = mem.MemorySettings(window=6)
    w = mem.write(mem.model_for(s), TEXT, 5)
    for step, grid in enumerate(w.held):
        read = len(TEXT) + step  # positions read once the step-th character is written
        for layer in grid:
            assert list(np.flatnonzero(layer == mem.HELD)) == list(range(read - (s.window - 1), read))
    # keys and values of w - 1 positions, heads x head size floats each, per layer
    assert w.memory[-1] == [2 * (s.window - 1) * 64 * 4] * s.n_layer
    assert "rolling window" in w.labels[0]


def test_linear_folds_everything_into_a_state_of_constant_size():
    w = mem.write(model(attention="linear"), TEXT, 6)
    assert w.memory[0] == w.memory[-1]
    assert (w.held[-1] == mem.FOLDED).sum(1).tolist() == [len(TEXT) + 5] * 2


def test_past_the_context_full_attention_writes_without_a_cache_and_says_why():
    long = mem.conversation(list(mem.DEFAULT_TURNS) * 3)
    w = mem.write(model(attention="softmax"), long, 4)
    assert not w.cached and "past the context" in w.reason and w.held == []


@pytest.mark.parametrize("kind,window,layers", [("sliding_window", 8, 2), ("sliding_window", 4, 3), ("softmax", 8, 2)])
def test_forgotten_is_exactly_what_is_out_of_reach(kind, window, layers):
    m = model(attention=kind, window=window, n_layer=layers)
    f = mem.forgetting(m, TEXT)
    reached = f.reach[-1].astype(bool)
    assert (f.change[~reached] < mem.FORGET_TOL).all()  # out of reach: the prediction does not move
    assert (f.change[reached] > mem.FORGET_TOL).all()  # in reach: every character moves it
    if kind == "sliding_window":
        assert reached.sum() == layers * (window - 1) + 1
        assert f.reach[0].sum() == window


def test_past_the_context_the_oldest_characters_are_forgotten():
    long = mem.conversation(list(mem.DEFAULT_TURNS) * 3)
    f = mem.forgetting(model(attention="softmax"), long)
    assert f.out_of_context == len(long) - 64
    assert (f.change[: f.out_of_context] == 0).all() and (f.change[f.out_of_context:] > mem.FORGET_TOL).all()


def test_reach_grid_follows_the_library():
    config = mem.MemorySettings(window=5, n_layer=3).config()
    grid = mem.reach_grid(config, 30)
    for layer, positions in enumerate(reachable(config, 30)):
        assert list(np.flatnonzero(grid[layer])) == positions
    assert "3 layers stacked reach 12 back" in mem.reach_words(mem.MemorySettings(window=5, n_layer=3))


def test_turns_are_checked():
    assert "empty" in mem.check_turn("   ")
    assert "é" in mem.check_turn("café")
    assert f"at most {mem.MAX_TURN}" in mem.check_turn("a" * (mem.MAX_TURN + 1))
    assert mem.check_turn("<b>hi</b> & 'you'") is None  # markup characters are just characters
    kept, dropped = mem.clean_turns(["ok", "", "naïve"] + ["t"] * mem.MAX_TURNS)
    assert kept == ["t"] * mem.MAX_TURNS and len(dropped) == 3


def test_the_measurement_job_measures_every_point():
    s = mem.MeasureSettings(kinds=("softmax", "sliding_window"), max_n=128, repeats=1)
    job = mem.MeasureJob(s)
    while not job.step(0.1):
        assert 0 < job.progress()[0] < 1
    rows = job.result()
    assert [(r["kind"], r["context"], r["cached"]) for r in rows] == s.points()
    by = {(r["kind"], r["context"], r["cached"]): r for r in rows}
    assert by["softmax", 128, True]["cache_bytes"] > by["softmax", 64, True]["cache_bytes"]
    assert by["sliding_window", 128, True]["cache_bytes"] == by["sliding_window", 64, True]["cache_bytes"]
    lines = mem.speedup_lines(rows)
    assert "grows with the text" in lines[0] and "stays the same size" in lines[1]


def test_the_forgetting_view_escapes_what_was_typed():
    from explorer.figures import forgetting_html

    turns = ["<img src=x onerror=alert(1)>"]
    f = mem.forgetting(model(), mem.conversation(turns))
    out = forgetting_html(turns, f)
    assert "<img" not in out and out.count("&lt;") == 1 and out.count("&gt;") == 1
    import re
    shown = "".join(re.findall(r'<span class="mem-ch"[^>]*>(.*?)</span>', out))
    assert shown == "&lt;img␣src=x␣onerror=alert(1)&gt;⏎"  # every character, escaped, in order


def test_the_window_lesson_states_what_the_library_computes():
    from explorer.lessons import LESSONS

    lesson = LESSONS["window_memory"]
    v = lesson.settings
    s = mem.MemorySettings(attention=v["mem_attention"], window=v["mem_window"], n_layer=v["mem_layers"])
    f = mem.forgetting(mem.model_for(s), TEXT)
    assert f"the last {f.summary()['reached']} of the conversation" in lesson.explanation
    assert f"each layer adds {s.window - 1}" in lesson.explanation
    name = TEXT.index("Ada")
    assert f.forgotten[name: name + 3].all()  # "The name in the first turn is struck through"
    assert f"A sliding window of {s.window} keys in each of {s.n_layer} layers" in lesson.explanation
