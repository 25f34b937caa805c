"""The Memory page through AppTest: the conversation and its turns, links, bad input, the cache
views, and measuring."""
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_clean, open_page, plotly_specs, run_until, texts
from explorer import memory as mem

PAGE = "pages/memory.py"


def opened_with(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert_clean(at)
    return at


def titles(at) -> list[str]:
    return [sp["layout"]["title"]["text"] for sp in plotly_specs(at)]


def test_first_open_shows_the_example_conversation_and_what_it_forgets():
    at = open_page(PAGE, timeout=60)
    assert at.query_params["mem_turn"] == list(mem.DEFAULT_TURNS)
    assert len(titles(at)) == 3
    f = mem.forgetting(mem.model_for(mem.MemorySettings()), mem.conversation(mem.DEFAULT_TURNS)).summary()
    said = next(m.value for m in at.markdown if "What the model forgets" in m.value)
    assert f"Of the {f['characters']} characters, the next one written can depend on {f['reached']};" in said
    assert f"the other {f['characters'] - f['reached']} are out of reach" in said
    assert any("2 layers stacked reach 14 back (2 × 7)" in c for c in texts(at.caption))


def test_turns_are_added_removed_and_carried_by_the_link():
    at = open_page(PAGE, timeout=60)
    at.text_input(key="mem_next").set_value("Where do I live?").run()
    at.button(key="mem_add").click().run()
    assert_clean(at)
    assert at.session_state["mem_turns"][-1] == "Where do I live?"
    assert at.query_params["mem_turn"][-1] == "Where do I live?"
    assert at.session_state["mem_next"] == ""
    at.button(key="mem_remove").click().run()
    assert at.session_state["mem_turns"] == list(mem.DEFAULT_TURNS)
    link = opened_with({"mem_turn": ["Hello there.", "Bonjour, ça va?"], "mem_attention": "softmax"})
    assert link.session_state["mem_turns"] == ["Hello there."]
    assert any("turn 2" in w and "ç" in w for w in texts(link.warning))  # the bad turn is named, not run


def test_a_bad_turn_gets_a_message_and_stays_in_the_box():
    at = open_page(PAGE, timeout=60)
    at.text_input(key="mem_next").set_value("naïve <b>café</b>").run()
    at.button(key="mem_add").click().run()
    assert_clean(at)
    assert any("That turn was not added" in w and "Your text is still in the box" in w for w in texts(at.warning))
    assert at.session_state["mem_next"] == "naïve <b>café</b>"
    assert at.session_state["mem_turns"] == list(mem.DEFAULT_TURNS)
    at.text_input(key="mem_next").set_value("   ").run()
    at.button(key="mem_add").click().run()
    assert any("empty" in w for w in texts(at.warning))


def test_markup_typed_as_a_turn_is_shown_as_text():
    at = open_page(PAGE, timeout=60)
    at.text_input(key="mem_next").set_value("<script>alert(1)</script>").run()
    at.button(key="mem_add").click().run()
    html = next(m.value for m in at.markdown if 'class="mem-turns"' in m.value)
    assert "<script" not in html and "&lt;" in html


def test_each_kind_shows_its_own_cache():
    at = opened_with({"mem_attention": "linear"})
    assert any("running state" in c for c in texts(at.caption))
    at = opened_with({"mem_attention": "softmax", "mem_context": "32"})  # the conversation is longer than 32
    assert any("Written without a cache" in i and "past the context" in i for i in texts(at.info))
    said = next(m.value for m in at.markdown if "What the model forgets" in m.value)
    assert f"({len(mem.conversation(mem.DEFAULT_TURNS)) - 32} of them are past the context)" in said
    assert len(titles(at)) == 1  # no cache to draw


def test_bad_link_values_are_ignored_with_a_message():
    at = opened_with({"mem_window": "1", "mem_attention": "<b>nope</b>", "mem_step": "999"})
    assert_clean(at)
    assert at.session_state["mem_window"] == mem.MemorySettings().window
    assert at.session_state["mem_attention"] == "sliding_window"
    assert len(titles(at)) == 3


def test_measuring_draws_speed_and_memory_and_says_what_came_out():
    at = opened_with({"mem_kinds": ["softmax", "linear"], "mem_max_n": "256"})
    at.button(key="mem_measure").click().run()
    run_until(at, lambda a: "mem_handle" in a.session_state and a.session_state["mem_handle"].active, timeout_s=120)
    assert_clean(at)
    fig = next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith("Writing a token"))
    assert {t["name"] for t in fig["data"]} == {"softmax, cached", "softmax, read again", "linear, cached",
                                                "linear, read again"}
    rows = at.session_state["mem_handle"].result()
    assert len(rows) == 2 * 3 * 2  # two kinds, contexts 64/128/256, cached and not
    lines = [m.value for m in at.markdown if "the cache makes writing" in m.value]
    assert lines and "**softmax**" in lines[0] and "grows with the text" in lines[0] and "stays the same size" in lines[0]
    assert at.query_params["mem_measured"] == "1"
    words = mem.measured_model_words(mem.MeasureSettings(("softmax", "linear"), 256))
    assert "2 layers, width 64, 4 heads, window 8" in words and "fastest of 3 runs" in words
    assert any(words in c for c in texts(at.caption))


def test_the_example_conversation_is_computed_once_per_server_and_typed_turns_stay_in_the_session(monkeypatch):
    import ui

    calls = []
    forgetting = mem.forgetting
    monkeypatch.setattr(mem, "forgetting", lambda model, text: calls.append(text) or forgetting(model, text))
    ui._shared_results().store.clear()
    open_page(PAGE, timeout=60)
    open_page(PAGE, timeout=60)
    assert calls == [mem.conversation(mem.DEFAULT_TURNS)]  # the second student was handed the first one's
    typed = ["My name is Eve.", "Who am I?"]
    opened_with({"mem_turn": typed})
    assert calls[1:] == [mem.conversation(typed)]
    assert not any("Eve" in repr(key) for key in ui._shared_results().store)
