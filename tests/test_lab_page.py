"""The Attention Lab page, run through streamlit.testing.v1.AppTest."""
import numpy as np
import pytest

from apptest_helpers import assert_clean, iframes, open_page, plotly_specs, texts
from explorer.attention import ATTENTION
from explorer.encodings import ENCODINGS

PAGE = "pages/attention_lab.py"


@pytest.fixture(scope="module")
def trained():
    """One page session with a quickly trained reverse model (length 8)."""
    at = open_page(PAGE)
    at.sidebar.slider(key="lab_length").set_value(8)
    at.sidebar.number_input(key="lab_steps").set_value(250)
    at.run()
    at.button(key="lab_train").click().run(timeout=180)
    assert_clean(at)
    return at


def grid(at):
    """The layers x heads grid: the figure whose traces are all named 'layer l head h'."""
    for spec in plotly_specs(at):
        if spec["data"] and spec["data"][0].get("name", "").startswith("layer "):
            return spec
    raise AssertionError("no attention grid drawn")


def test_page_opens_with_untrained_model_and_maps():
    at = open_page(PAGE)
    assert "untrained" in at.markdown[-1].value or any("untrained" in m.value for m in at.markdown)
    g = grid(at)
    assert len(g["data"]) == 2 * 4  # default: 2 layers x 4 heads
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Parameters"].replace(",", "")) > 10_000
    assert int(metrics["Attention FLOPs (this input)"].replace(",", "")) > 0
    assert at.session_state["lab_render_s"] > 0  # the page records its server time for the benchmark
    assert len(iframes(at)) == 0  # the bertviz tabs are closed: nothing computed or sent
    for tab in ("bertviz head view", "bertviz model view"):
        at.session_state["lab_tab"] = tab
        at.run()
        assert_clean(at)
        assert len(iframes(at)) == 1 and "d3js.org v5.7.0" in iframes(at)[0] and "cdnjs" not in iframes(at)[0]
        assert not any(s["layout"].get("title", {}).get("text", "").startswith("layer 0, head")
                       for s in plotly_specs(at))  # the selected-head map is not drawn meanwhile
    at.session_state["lab_tab"] = "Selected head"
    at.run()


@pytest.mark.parametrize("encoding", ENCODINGS.names())
@pytest.mark.parametrize("kind", ATTENTION.names())
def test_every_kind_and_encoding_renders(kind, encoding):
    at = open_page(PAGE)
    at.sidebar.selectbox(key="lab_attention").set_value(kind)
    at.sidebar.selectbox(key="lab_encoding").set_value(encoding)
    at.run()
    assert_clean(at)
    if encoding == "alibi" and kind == "linear":
        assert any("ALiBi" in e for e in texts(at.error))
        return
    assert not at.error, texts(at.error)
    g = grid(at)
    z = np.array(g["data"][0]["z"])
    assert np.allclose(z.sum(1), 1, atol=0.02)  # every row is a distribution (rounded for transport)
    assert np.allclose(np.triu(z, 1), 0)  # causal
    if kind == "dynamic_window":  # the rule, worked out for this input: T = 33 -> max(8, 12) = 12
        assert any("max(8, 12) = 12" in c for c in texts(at.caption)), texts(at.caption)


def test_training_learns_and_maps_show_the_anti_diagonal(trained):
    at = trained
    run = at.session_state["lab_run"]
    assert run.trainer.step == 250
    assert any("8 of 8 characters right" in c for c in texts(at.caption)), texts(at.caption)
    # the loss curve was drawn, and the maps refreshed while training
    assert any(s["data"][0].get("name") == "loss" for s in plotly_specs(at))
    assert len(at.session_state["lab_refresh_times"]) >= 2
    # some head attends from the position that writes answer char t to input char L - 1 - t
    L = 8
    best = 0.0
    for trace in grid(at)["data"]:
        z = np.array(trace["z"])
        best = max(best, float(np.mean([z[L + t, L - 1 - t] for t in range(L)])))
    assert best > 0.8, best


def test_heads_and_window_change_without_retraining(trained):
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
    assert any("trained weights read with the new" in i for i in texts(at.info))
    assert at.session_state["lab_run"].id == run_id  # the trained model is still there
    at.sidebar.selectbox(key="lab_attention").set_value("softmax").run()


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
    at.sidebar.selectbox(key="lab_heads").set_value(3).run()  # 64 is not divisible by 3
    assert_clean(at)
    assert any("n_head = 3" in e and "divide" in e for e in texts(at.error))
    assert at.session_state["lab_run"] is run
    at.sidebar.selectbox(key="lab_heads").set_value(4)
    at.text_input(key="lab_input").set_value("dcba").run()
    assert not at.warning and not at.error
    assert at.session_state["lab_run"] is run


def test_typed_markup_is_shown_as_text(trained):
    at = trained
    at.text_input(key="lab_input").set_value("<img src=x onerror=alert(1)>").run()
    warning = texts(at.warning)[0]
    assert "<img" not in warning and "\\<" in warning  # each character escaped for markdown


def test_stop_and_reset(trained):
    at = trained
    at.button(key="lab_reset").click().run()
    assert "lab_run" not in at.session_state
    assert any("untrained" in m.value for m in at.markdown)
