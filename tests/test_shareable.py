"""Shareable state, URL notices and lessons, through AppTest."""
import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_clean, multimodal_busy, plotly_specs, run_until, texts
import ui
from explorer import lessons, urlstate
from explorer.lessons import LESSONS
from explorer.pages import PAGES
from explorer.shelf import Shelf, key_text


def app_with(params: dict, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.query_params.update(params)
    at.run()
    assert_clean(at)
    return at


def grid_heads(at) -> int:
    for spec in plotly_specs(at):
        if spec["data"] and spec["data"][0].get("name", "").startswith("layer "):
            return len({t["name"].split(" head ")[1] for t in spec["data"]})
    raise AssertionError("no grid")


def test_url_restores_config_input_and_selected_head():
    at = app_with({"lab_task": "copy", "lab_length": "6", "lab_attention": "sliding_window", "lab_window": "3",
                   "lab_heads": "2", "lab_encoding": "rope", "lab_layers": "3", "lab_input": "banana",
                   "lab_layer": "2", "lab_head": "1"})
    s = at.session_state
    assert (s["lab_task"], s["lab_length"], s["lab_attention"], s["lab_window"], s["lab_heads"]) == \
        ("copy", 6, "sliding_window", 3, 2)
    assert (s["lab_encoding"], s["lab_layers"], s["lab_input"], s["lab_layer"], s["lab_head"]) == \
        ("rope", 3, "banana", 2, 1)
    assert grid_heads(at) == 2
    big = next(sp for sp in plotly_specs(at) if sp["layout"].get("title", {}).get("text") == "layer 2, head 1")
    assert big["layout"]["xaxis"]["ticktext"][:6] == list("banana")
    assert not at.warning


def test_bad_and_unknown_parameters_get_a_notice_not_a_crash():
    at = app_with({"lab_heads": "3x", "lab_attention": "<script>", "lab_steps": "-5", "utm_source": "mail",
                   "lab_length": "999"})
    notice = " ".join(texts(at.warning))
    assert "unknown parameter 'utm_source'" in notice
    for name in ("lab_heads", "lab_attention", "lab_steps", "lab_length"):
        assert f"'{name}=" in notice, (name, notice)
    s = at.session_state
    assert (s["lab_heads"], s["lab_attention"], s["lab_steps"], s["lab_length"]) == (4, "softmax", 300, 16)
    assert "utm_source" not in at.query_params


def test_url_notices_logic():
    before = {"a": ["1"], "b": ["x"], "c": ["4"], "lesson": ["reverse"]}
    after = {"a": ["1"]}
    msgs, unknown = urlstate.notices(before, after, {"a": 1, "b": "y", "c": 4})
    assert unknown == [] and len(msgs) == 1 and "'b=x'" in msgs[0]  # c=4 was the default: applied
    msgs, unknown = urlstate.notices({"zz": ["1"]}, {}, {})
    assert unknown == ["zz"]


QUICK = {  # lessons that train, measure or run: made quick for the test; a value in the link beats the lesson's
    "complexity": {"cx_max_n": "1024", "cx_repeats": "1"},
    "positions": {"pe_steps": "50", "pe_train_len": "4"},
    "attention_lab": {"lab_steps": "40"},
    "experts": {"moe_steps": "50", "moe_res_steps": "20"},
    "multimodal": {"mm_steps": "100"},
    "incontext": {"icl_steps": "250"},
    "memory": {},
    "training": {"tr_cur_steps": "30", "tr_cur_length": "32", "tr_cur_start": "8"},
    "safeguards": {"sg_unc_steps": "10", "sg_unc_windows": "32", "sg_unc_chars": "50", "sg_dp_steps": "10",
                   "sg_dp_batch": "8", "sg_bias_steps": "50", "sg_bias_sentences": "500", "sg_fb_steps": "2"},
}


def busy(at) -> bool:
    s = at.session_state
    handles = [s[k] for k in ("cx_handle", "moe_handle", "moe_res_handle", "icl_handle", "mem_handle", "tr_handle",
                                  "tr_cur_handle", "tr_prec_handle", "tr_ddp_handle", "sg_unc_train", "sg_unc_cal",
                                  "sg_dp_handle", "sg_bias_handle", "sg_fb_handle", "sg_fb_base_handle") if k in s] + list(
        s["pe_handles"] if "pe_handles" in s else [])
    if "lab_run" in s:
        return s["lab_run"].training
    if "sg_unc_train" in s and "sg_unc_cal" not in s:  # trained, its calibration not started yet
        return True
    return any(h.active for h in handles) or multimodal_busy(at)


@pytest.mark.parametrize("lesson_id", LESSONS.names())  # one test each: its own timeout, and a failure names it
def test_every_lesson_opens_its_page_with_its_settings(lesson_id):
    lesson = LESSONS[lesson_id]
    assert lesson.page in PAGES, lesson_id
    assert all(k.startswith(PAGES[lesson.page].prefix) for k in lesson.settings), lesson_id  # keys it owns
    shipped = lesson_id in Shelf().lessons()  # its runs came with the app: opened as a student opens it
    quick = {} if shipped else QUICK[lesson.page]
    before = {h.id for h in list(ui.scheduler()._by_key.values())}
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params.update({"lesson": lesson_id, **quick})
    at.run()
    # (AppTest shows app.py's own elements on the first run only; a browser shows them on every run)
    assert any(f"Lesson: {lesson.title}" in m.value for m in at.markdown), lesson_id
    assert shipped == any(lessons.SHIPPED in c.value for c in at.caption), lesson_id  # said only where true
    run_until(at, busy)
    assert_clean(at)
    for key, value in lesson.settings.items():
        if key not in quick:
            assert at.session_state[key] == value, (lesson_id, key)
    if shipped:  # every run the lesson asked for came from the shelf, and it trained nothing the shelf lacks
        handles = {key_text(k): h for k, h in list(ui.scheduler()._by_key.items())}
        wanted = [e["key"] for e in Shelf().index().values() if lesson_id in e["lessons"]]
        assert wanted and all(handles[k].shipped for k in wanted if k in handles), lesson_id
        assert any(k in handles for k in wanted), lesson_id
        trained = [h.job.title for h in handles.values() if h.id not in before and h.job.shippable and not h.shipped]
        assert not trained, f"{lesson_id} trained {trained}: the shelf lacks them (python scripts/shelf.py {lesson_id})"
    if lesson.page == "complexity":
        assert at.session_state["cx_max_n"] == 1024  # the link's explicit value won
        assert any("Wall time" in sp["layout"].get("title", {}).get("text", "") for sp in plotly_specs(at))
    if lesson.page == "attention_lab" and not shipped:
        assert at.session_state["lab_run"].current().step <= 40
    if lesson_id == "uncertainty":  # a shipped run's seconds were not spent on this server, and it says so
        said = [m.value for m in at.markdown if "s of training" in m.value]
        assert said and all("s of training when the app was built" in s for s in said), said
    if lesson_id == "reverse":  # the lesson says to drag "Show the model at step" back to the start: it is there
        rewind = at.select_slider(key="lab_step")
        assert "Show the model at step" in lesson.explanation and rewind.label == "Show the model at step"
        assert rewind.options[0] == "0" and len(rewind.options) > 3
    if lesson.page in ("positions", "experts", "multimodal", "incontext", "training", "safeguards"):
        assert any("What came out" in m.value for m in at.markdown)
    if lesson.page == "memory":
        assert any("What the model forgets" in m.value for m in at.markdown)
    assert not any("ignored" in w for w in texts(at.warning)), texts(at.warning)


def test_unknown_lesson_is_a_notice():
    at = app_with({"lesson": "flying"})
    assert any("unknown lesson 'flying'" in w for w in texts(at.warning))


def test_presentation_mode_is_a_shareable_toggle():
    at = app_with({"present": "true"})
    assert at.session_state["present"] is True
    styles = [e.proto.body for e in at.get("html") if e.proto.body.startswith("<style>")]
    assert styles and "h1" in styles[0]
    at.toggle(key="present").set_value(False).run()
    assert not [e for e in at.get("html") if "font-size: 3.2rem" in e.proto.body]
