"""The Lab's teacher tools: a link that reopens a re-read view, rewinding to a checkpoint, two models
side by side, an estimate before training, 'About this model', and lessons that set the whole view."""
import re

from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_clean, open_page, plotly_specs, run_until, texts
from explorer import lab


def busy(at) -> bool:
    return any(k in at.session_state and at.session_state[k].training for k in ("lab_run", "lab_run_b"))


def app_with(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(params)
    at.run()
    return at


def test_a_copied_link_of_a_reread_view_trains_the_run_and_reads_it_under_the_view():
    # trained as softmax with 4 heads, shown as sliding_window with 2 heads: the link says both
    at = app_with({"lab_length": "6", "lab_steps": "60", "lab_attention": "sliding_window", "lab_window": "3",
                   "lab_heads": "2", "lab_trained": "1", "lab_from": "attention:softmax;n_head:4"})
    run_until(at, busy)
    assert_clean(at)
    run = at.session_state["lab_run"]
    assert (run.settings.attention, run.settings.n_head) == ("softmax", 4)
    assert any("trained weights read with the new" in i for i in texts(at.info))
    assert at.query_params["lab_from"] in ("attention:softmax;n_head:4", "n_head:4;attention:softmax")
    bad = app_with({"lab_trained": "1", "lab_from": "n_head:3", "lab_steps": "20", "lab_length": "4"})
    assert any("could not be read" in w for w in texts(bad.warning))  # said, and the view as shown is trained
    run_until(bad, busy)
    assert_clean(bad)


def test_rewinding_shows_the_model_at_an_earlier_checkpoint():
    at = app_with({"lab_length": "6", "lab_steps": "160", "lab_until_learned": "false", "lab_trained": "1"})
    run_until(at, busy)
    steps = at.sidebar.select_slider(key="lab_step").options
    assert len(steps) > 2 and steps[0] == "0" and steps[-1] == "160"
    right_now = next(c for c in texts(at.caption) if "characters right" in c)
    at.sidebar.select_slider(key="lab_step").set_value(0).run()  # the untrained start
    assert_clean(at)
    right_then = next(c for c in texts(at.caption) if "characters right" in c)
    assert int(right_then.split()[0]) < int(right_now.split()[0])
    loss = next(s for s in plotly_specs(at) if s["data"] and s["data"][0].get("name") == "loss")
    assert loss["layout"]["shapes"][0]["x0"] == 0  # the curve marks the step shown


def test_two_models_side_by_side_with_one_link():
    at = app_with({"lab_length": "6", "lab_steps": "60", "lab_tab": "Compare", "lab_b_attention": "linear",
                   "lab_b_heads": "2"})
    assert_clean(at)
    at.button(key="lab_train_both").click().run()
    run_until(at, busy)
    assert_clean(at)
    b = at.session_state["lab_run_b"]
    assert (b.settings.attention, b.settings.n_head) == ("linear", 2) and b.current().finished
    grids = [s for s in plotly_specs(at) if s["data"] and s["data"][0].get("name", "").startswith("layer ")]
    assert len(grids) >= 3  # the main grid, A's and B's
    assert len([c for c in texts(at.caption) if "attention FLOPs for this input" in c]) == 2
    assert at.query_params["lab_b_trained"] == "1"  # (the controls' own parameters are the browser's to write)


def test_the_estimate_and_the_about_box():
    at = open_page("pages/attention_lab.py")
    at.session_state["lab_input"] = "helloworld"
    import ui

    assert ui.scheduler().submit(lab.calibration_job(), "test").wait(120) == "done"  # once per server, in the background
    at.run()
    estimate = next(c for c in texts(at.caption) if c.startswith("About "))
    assert re.match(r"About \d+ s of training alone for 300 steps", estimate)
    about = " ".join(m.value for m in next(e for e in at.expander if e.label == "About this model").markdown)
    assert "exactly **16** characters" in about and "Your input has 10 characters" in about
