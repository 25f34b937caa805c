"""The Attention Lab page, run through streamlit.testing.v1.AppTest."""
import gc
import re

import numpy as np
import pytest
import torch

from apptest_helpers import assert_clean, iframes, open_page, plotly_specs, run_until, texts
from explorer.attention import ATTENTION
from explorer.encodings import ENCODINGS
import ui

PAGE = "pages/attention_lab.py"


def training(at) -> bool:
    run = at.session_state["lab_run"] if "lab_run" in at.session_state else None
    return run is not None and run.training


def trained_page(length: int = 8, steps: int = 250):
    """A page session with a quickly trained reverse model."""
    at = open_page(PAGE)
    at.sidebar.slider(key="lab_length").set_value(length)
    at.sidebar.number_input(key="lab_steps").set_value(steps)
    at.run()
    at.button(key="lab_train").click().run()
    run_until(at, training)
    assert_clean(at)
    return at


@pytest.fixture
def trained():
    """A fresh page session (its own state: no test depends on another's changes) whose run is
    trained once per server and shared, as a classroom's would be."""
    return trained_page()


def grid(at):
    """The layers x heads grid: the figure whose traces are all named 'layer l head h'."""
    for spec in plotly_specs(at):
        if spec["data"] and spec["data"][0].get("name", "").startswith("layer "):
            return spec
    raise AssertionError("no attention grid drawn")


def test_page_opens_with_untrained_model_and_maps():
    at = open_page(PAGE)
    assert any("untrained" in m.value for m in at.markdown)
    g = grid(at)
    assert len(g["data"]) == 2 * 4  # default: 2 layers x 4 heads
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Parameters"].replace(",", "")) > 10_000
    assert int(metrics["Attention FLOPs (this input)"].replace(",", "")) > 0
    assert at.session_state["lab_render_s"] > 0  # the page records its server time for the benchmark
    assert len(iframes(at)) == 0  # the bertviz tabs are closed: nothing computed or sent
    for spec in plotly_specs(at):  # every axis draws its labels unmeasured, in set margins (ui.plotly_figure)
        axes = [v for k, v in spec["layout"].items() if k.startswith(("xaxis", "yaxis"))]
        assert axes and all(a.get("ticklabeloverflow") == "allow" and a.get("automargin") is False
                            for a in axes), spec["layout"].get("title")
        if spec["layout"]["xaxis"].get("title", {}).get("text"):  # room below for the labels and the title
            assert spec["layout"]["margin"]["b"] >= ui.X_TITLE_ROOM, spec["layout"].get("title")
    for tab in ("bertviz head view", "bertviz model view"):
        at.session_state["lab_tab"] = tab
        at.run()
        assert_clean(at)
        assert len(iframes(at)) == 1 and "d3js.org v5.7.0" in iframes(at)[0] and "cdnjs" not in iframes(at)[0]
        assert not any(s["layout"].get("title", {}).get("text", "").startswith("layer 0, head")
                       for s in plotly_specs(at))  # the selected-head map is not drawn meanwhile


def test_inside_the_model_shows_the_residual_stream_and_the_logit_lens():
    at = open_page(PAGE)
    at.session_state["lab_tab"] = "Inside the model"
    at.run()
    assert_clean(at)
    titles = [s["layout"].get("title", {}).get("text", "") for s in plotly_specs(at)]
    lens = next(s for s in plotly_specs(at) if s["layout"].get("title", {}).get("text", "").startswith("logit lens"))
    assert lens["data"][0]["y"] == ["embedding", "after block 0", "after block 1"]  # 2 layers + the embedding
    assert len(lens["data"][0]["x"]) == 16 + 1 + 16  # every position: input, separator, answer
    assert "residual stream norm per layer" in titles
    grads = next(s for s in plotly_specs(at) if s["layout"].get("title", {}).get("text", "").startswith("gradient norm"))
    from explorer import lab
    from explorer.residuals import block_grad_norms

    settings = at.session_state["lab_settings"]
    x, y = settings.task_obj.batch(torch.Generator().manual_seed(lab.GRAD_SEED), 64, settings.length)
    want = block_grad_norms(lab.untrained(settings), x, y)  # the page shows the untrained model here
    assert grads["data"][0]["y"] == pytest.approx(want, rel=1e-4) and len(want) == settings.n_layer
    shown = lab.untrained(settings)
    lab.gradient_norms(shown, settings)
    assert all(p.grad is None for p in shown.parameters())  # the shown (shared) model is never written to:
    assert not shown.training  # measured on a copy, so not even its mode changes


@pytest.mark.parametrize("encoding", ENCODINGS.names())
@pytest.mark.parametrize("kind", ATTENTION.names())
def test_every_kind_and_encoding_renders(kind, encoding):
    at = open_page(PAGE)
    at.sidebar.selectbox(key="lab_attention").set_value(kind)
    at.sidebar.selectbox(key="lab_encoding").set_value(encoding)
    at.run()
    assert_clean(at)
    if ENCODINGS[encoding].biases_scores and not ATTENTION[kind].explicit_scores:
        assert any("ALiBi" in e for e in texts(at.error))
        return
    assert not at.error, texts(at.error)
    g = grid(at)
    z = np.array(g["data"][0]["z"])
    assert np.allclose(np.triu(z, 1), 0)  # causal
    if not (kind == "linear" and encoding == "rope"):
        assert np.allclose(z.sum(1), 1, atol=0.02)  # every row is a distribution (rounded for transport)
    if ATTENTION[kind].size_control is not None:  # the kind's own label on its size control
        assert at.sidebar.number_input(key="lab_window").label == ATTENTION[kind].size_control.label
    if kind == "dynamic_window":  # the rule, worked out for this model: T_ctx = 33 -> max(8, 12) = 12
        assert any("max(8, 12) = 12" in c for c in texts(at.caption)), texts(at.caption)
    if ATTENTION[kind].weights_note:
        assert ATTENTION[kind].weights_note in texts(at.caption)


def test_training_learns_stops_when_learned_and_maps_show_the_anti_diagonal(trained):
    at = trained
    run = at.session_state["lab_run"].current()
    assert run.learned_at is not None and run.step < 250  # stopped early, and says where
    assert any("learned at step" in m.value for m in at.markdown)
    assert any("8 of 8 characters right" in c for c in texts(at.caption)), texts(at.caption)
    assert any(s["data"][0].get("name") == "loss" for s in plotly_specs(at))
    assert at.query_params["lab_trained"] == "1"  # the link now reproduces this trained view
    # some head attends from the position that writes answer char t to input char L - 1 - t
    L = 8
    best = 0.0
    for trace in grid(at)["data"]:
        z = np.array(trace["z"])
        best = max(best, float(np.mean([z[L + t, L - 1 - t] for t in range(L)])))
    assert best > 0.8, best


def test_heads_and_window_change_without_retraining_and_say_the_price(trained):
    at = trained
    run_id = at.session_state["lab_run"].id
    at.sidebar.selectbox(key="lab_heads").set_value(1).run()
    assert_clean(at)
    assert len(grid(at)["data"]) == 2  # 2 layers x 1 head
    at.sidebar.selectbox(key="lab_heads").set_value(4)
    at.sidebar.selectbox(key="lab_attention").set_value("sliding_window").run()
    at.sidebar.number_input(key="lab_window").set_value(3).run()
    assert_clean(at)
    z = np.array(grid(at)["data"][0]["z"])
    i, j = np.indices(z.shape)
    assert np.allclose(z[(i - j) >= 3], 0) and np.allclose(z[j > i], 0)  # a band of width 3
    assert np.allclose(z.sum(1), 1, atol=0.02)  # all of each row's weight lies in the band
    notice = next(i for i in texts(at.info) if "trained weights read with the new" in i)
    assert "Token accuracy on fresh examples" in notice and re.search(r"\*\*\d+%\*\* now, \d+% as trained", notice)
    assert at.session_state["lab_run"].id == run_id  # the trained model is still there


def test_bad_inputs_get_messages_and_keep_the_model(trained):
    at = trained
    run = at.session_state["lab_run"]
    cases = {
        "": "empty",
        "abcdefghijklmnop": "at most 8",
        "Hi <b>!": "does not know",
    }
    for text, words in cases.items():
        at.text_input(key="lab_input").set_value(text).run()
        assert_clean(at)
        assert any(words in w for w in texts(at.warning)), (text, texts(at.warning))
        assert at.session_state["lab_run"] is run
    assert at.sidebar.selectbox(key="lab_heads").options == ["1", "2", "4", "8", "16"]  # only what width 64 takes
    at.sidebar.selectbox(key="lab_attention").set_value("linear")
    at.sidebar.selectbox(key="lab_encoding").set_value("alibi").run()  # ALiBi needs explicit scores
    assert_clean(at)
    error = " ".join(texts(at.error))
    assert "Positional encoding = 'alibi' with Attention = 'linear'" in error and "n_head" not in error
    assert at.session_state["lab_run"] is run
    at.sidebar.selectbox(key="lab_attention").set_value("softmax")
    at.sidebar.selectbox(key="lab_encoding").set_value("learned")
    at.text_input(key="lab_input").set_value("dcba").run()
    assert not at.warning and not at.error
    assert at.session_state["lab_run"] is run


def test_typed_markup_is_shown_as_text(trained):
    at = trained
    at.text_input(key="lab_input").set_value("<img src=x onerror=alert(1)>").run()
    warning = texts(at.warning)[0]
    assert "<img" not in warning and "\\<" in warning  # each character escaped for markdown


def test_stop_keeps_the_model_and_reset_forgets_it():
    at = open_page(PAGE)
    at.sidebar.number_input(key="lab_steps").set_value(20000)  # a long run, so that it is still running
    at.sidebar.slider(key="lab_length").set_value(6)
    at.sidebar.toggle(key="lab_until_learned").set_value(False)
    at.run()
    at.button(key="lab_train").click().run()
    assert at.session_state["lab_run"].training
    run_until(at, lambda a: (a.session_state["lab_run"].current() is None
                             or a.session_state["lab_run"].current().step < 20))  # let it learn a little
    assert not at.button(key="lab_stop").disabled
    at.button(key="lab_stop").click().run()
    assert_clean(at)
    run = at.session_state["lab_run"]
    assert not run.training and run.current() is not None  # stopped, and the model it had is kept
    kept = run.current().step
    assert kept < 20000 and run.handle.wait(10) == "cancelled"  # nobody else watched it: the server stopped it
    assert any(f"trained {kept} of 20000 steps" in m.value for m in at.markdown)
    assert "lab_trained" not in at.query_params  # a stopped run is not a finished view
    at.button(key="lab_reset").click().run()
    assert "lab_run" not in at.session_state
    assert any("untrained" in m.value for m in at.markdown)


def test_a_session_that_is_gone_stops_the_run_it_alone_held():
    """A student starts a long run and closes the tab: when Streamlit frees that session's state, the
    run stops (the finalizer ui.holder set tells the scheduler) instead of holding a core to its end."""
    at = open_page(PAGE)
    at.sidebar.number_input(key="lab_steps").set_value(20000)
    at.sidebar.number_input(key="lab_seed").set_value(4321)  # a run of its own: no other test holds it
    at.sidebar.toggle(key="lab_until_learned").set_value(False)
    at.run()
    at.button(key="lab_train").click().run()
    handle = at.session_state["lab_run"].handle
    assert handle.active
    del at  # the session's state goes with it
    gc.collect()
    assert handle.wait(10) == "cancelled" and handle.job.live().step < 20000


def test_a_new_head_count_under_alibi_says_the_slopes_changed():
    at = trained_page(steps=40)
    at.sidebar.selectbox(key="lab_encoding").set_value("alibi").run()  # another model: train it
    at.button(key="lab_train").click().run()
    run_until(at, training)
    at.sidebar.selectbox(key="lab_heads").set_value(2).run()
    notice = next(i for i in texts(at.info) if "trained weights read with the new" in i)
    assert "ALiBi gives each head its own slope" in notice and "0.0625 instead of 0.25" in notice
