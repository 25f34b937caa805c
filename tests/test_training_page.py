"""The Training page through AppTest: first open, links, uploads (good and bad), a tiny run trained to
the end, impossible settings and prompts with unknown characters."""
import math

from streamlit.testing.v1 import AppTest

import apptest_helpers as helpers
from apptest_helpers import assert_clean, boxed_texts, open_page, plotly_specs, run_until, texts
from explorer import corpus as corpora, device, textlm
from explorer.figures import md_escape

PAGE = "pages/training.py"
TINY = {"tr_layers": "1", "tr_heads": "2", "tr_width": "32", "tr_context": "16", "tr_batch": "16", "tr_steps": "100",
        "tr_lr": "0.01"}


def opened_with(params: dict) -> AppTest:
    return helpers.opened_with(PAGE, params, timeout=90)


def chart(at, title_start: str) -> dict:
    return next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith(title_start))


def line(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t["name"] == name)


def test_first_open_shows_the_untrained_model_and_its_charts():
    at = open_page(PAGE, timeout=90)
    assert len(plotly_specs(at)) >= 4  # loss, schedule, the selected head, every head
    assert any("Not trained yet" in m.value for m in at.markdown)
    emma = corpora.builtin()
    before = textlm.untrained_run(textlm.settings_for(emma), emma)
    held = line(chart(at, "loss on the text"), textlm.HELD_OUT)
    assert held["x"] == [0] and held["y"] == [before.probes[0][1]["held_out_loss"]]
    assert abs(held["y"][0] - math.log(emma.vocab_size)) < 0.1  # knowing nothing: about ln(76)
    lr = line(chart(at, "learning rate"), "learning rate")
    assert lr["y"] == textlm.schedule_series(textlm.TextSettings())["learning rate"][1]
    assert any(f"Runs on: **{device.describe(textlm.run_device())}**" in c and "883,027 characters" in c for c in texts(at.caption))
    assert len(at.text) >= 2  # the untrained model's sample at step 0 and the sample below
    for key, value in textlm.url_defaults().items():  # what a lesson starts from is what the page opens with
        assert at.session_state[key] == value, key


def test_a_link_restores_the_controls():
    params = {"tr_layers": "2", "tr_heads": "2", "tr_width": "64", "tr_context": "32", "tr_lr": "0.001",
              "tr_steps": "500", "tr_batch": "16", "tr_attention": "linear", "tr_encoding": "rope", "tr_seed": "5",
              "tr_temperature": "0.5", "tr_top_k": "5", "tr_chars": "100", "tr_prompt": "Harriet", "tr_head": "1"}
    at = opened_with(params)
    s = at.session_state
    assert (s["tr_layers"], s["tr_heads"], s["tr_width"], s["tr_context"], s["tr_lr"], s["tr_steps"]) == \
        (2, 2, 64, 32, 0.001, 500)
    assert (s["tr_attention"], s["tr_encoding"], s["tr_seed"], s["tr_batch"]) == ("linear", "rope", 5, 16)
    assert (s["tr_temperature"], s["tr_top_k"], s["tr_chars"], s["tr_prompt"], s["tr_head"]) == \
        (0.5, 5, 100, "Harriet", 1)
    assert not at.warning  # nothing in the link was ignored
    assert any(c.startswith("The prompt, then 100 characters") and "top-5" in c for c in texts(at.caption))
    assert chart(at, "layer 0, head 1")


def test_bad_uploads_show_the_message_and_keep_the_text_there_was():
    at = opened_with(TINY | {"tr_source": "Your own text"})
    assert any("cannot travel in a link" in c for c in texts(at.caption))
    good = ("The quick brown fox jumps over the lazy dog. " * 60).encode()
    at.file_uploader(key="tr_upload").set_value(("fox.txt", good, "text/plain")).run()
    assert_clean(at)
    fox = md_escape("fox.txt")  # a file's name is shown as typed, never as markdown
    assert any(f"**{fox}**" in c and "2,700 characters" in c for c in texts(at.caption))
    for name, data, why in (("empty.txt", b"", "is empty"), ("img.txt", b"\x89PNG\x00\x01" * 500, "NUL bytes"),
                            ("latin.txt", "caf\xe9 ".encode("latin-1") * 600, "not UTF-8"),
                            ("short.txt", b"Too short to learn from.", "at least 2,000")):
        at.file_uploader(key="tr_upload").set_value((name, data, "text/plain")).run()
        assert_clean(at)
        errors = texts(at.error)
        assert any(f"That file was not taken: {name.split('.')[0]}" in e and md_escape(why) in e and fox in e
                   for e in errors), (name, errors)
        assert at.session_state["tr_own"].name == "fox.txt"  # the previous text stays
        assert any(f"**{fox}**" in c for c in texts(at.caption))
        assert len(plotly_specs(at)) >= 4


def test_a_tiny_run_trains_to_the_end_and_its_held_out_loss_falls_below_ln_vocab():
    at = opened_with(TINY)
    at.button(key="tr_train").click().run()
    run_until(at, lambda a: "tr_handle" in a.session_state and a.session_state["tr_handle"].active, timeout_s=240)
    assert_clean(at)
    run = at.session_state["tr_handle"].result()
    emma = corpora.builtin()
    assert run.finished and run.step == 100 and [s for s, _ in run.probes] == [0, 100]
    held = line(chart(at, "loss on the text"), textlm.HELD_OUT)
    assert held["y"] == [m["held_out_loss"] for _, m in run.probes]
    assert held["y"][-1] < math.log(emma.vocab_size) - 0.5
    assert line(chart(at, "loss on the text"), textlm.TRAIN_LOSS)["y"][-1] == run.history[-1][1]
    assert chart(at, "learning rate")["layout"]["shapes"][0]["x0"] == 100  # the step marked
    found = next(m.value for m in at.markdown if "What came out" in m.value)
    for sentence in textlm.findings(run, emma):
        assert sentence in found
    assert boxed_texts(at)[:2] == [run.probes[-1][1]["sample"], run.probes[0][1]["sample"]]
    assert at.query_params["tr_trained"] == "1"
    assert any("after training" in c for c in texts(at.caption))


def test_impossible_settings_get_a_message_not_an_exception():
    at = opened_with({"tr_heads": "3"})
    assert any("cannot make a model" in e and "must divide the width" in e for e in texts(at.error))
    at = opened_with({"tr_heads": "4", "tr_width": "96", "tr_encoding": "rope", "tr_layers": "1"})
    assert not at.error  # 96 / 4 = 24: even, RoPE is fine


def test_a_prompt_with_unknown_characters_gets_a_message():
    at = opened_with(TINY)
    at.text_input(key="tr_prompt").set_value("Emma ☃ {x}").run()
    assert_clean(at)
    warning = next(w for w in texts(at.warning) if w.startswith("Nothing written"))
    assert "☃" in warning and "never uses" in warning
    at.text_input(key="tr_prompt").set_value("Emma").run()
    assert not any(w.startswith("Nothing written") for w in texts(at.warning))
