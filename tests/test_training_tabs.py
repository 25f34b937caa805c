"""The Training page's other tabs through AppTest: curriculum, mixed precision and data-parallel
comparisons opened from a link with tiny settings and run to the end through the scheduler, their
bad settings, checkpoints saved, reopened and refused, and the curriculum lesson."""
import io
import zipfile

from streamlit.testing.v1 import AppTest

import apptest_helpers as helpers
from apptest_helpers import assert_clean, plotly_specs, run_until, texts
from explorer import corpus as corpora, methods, textlm, train_ddp
from explorer.checkpoint import bundle
from explorer.figures import md_escape
from explorer.model import build_model
from explorer.precision import report_sentences

PAGE = "pages/training.py"


def opened_with(params: dict) -> AppTest:
    return helpers.opened_with(PAGE, params, timeout=120)


def finish(at: AppTest, name: str) -> AppTest:
    return run_until(at, lambda a: name in a.session_state and a.session_state[name].active, timeout_s=240)


def findings_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "What came out" in m.value)


def chart(at, title_start: str) -> dict:
    return next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith(title_start))


def test_curriculum_runs_to_the_end_and_draws_both_arms_on_one_plot():
    at = opened_with({"tr_tab": "Curriculum", "tr_cur_steps": "30", "tr_cur_length": "32", "tr_cur_start": "8",
                      "tr_cur_fraction": "0.5"})
    schedule = chart(at, "sequence length")
    settings = methods.CurriculumSettings(steps=30, length=32, start=8, fraction=0.5).for_corpus(corpora.builtin())
    assert schedule["data"][0]["y"] == settings.curriculum.schedule(32, 30)
    at.button(key="tr_cur_go").click().run()
    finish(at, "tr_cur_handle")
    assert_clean(at)
    run = at.session_state["tr_cur_handle"].result()
    assert run.finished and run.step == 30 and run.settings == settings
    loss = chart(at, "held-out loss against training time")
    assert {t["name"] for t in loss["data"]} == {"curriculum", "fixed"}
    for t in loss["data"]:
        assert (t["x"], t["y"]) == tuple(map(list, run.series()[t["name"]]))
    found = findings_text(at)
    for sentence in run.findings():
        assert sentence in found
    assert at.query_params["tr_cur_done"] == "1"


def test_a_start_length_above_the_full_length_gets_a_message():
    at = opened_with({"tr_tab": "Curriculum", "tr_cur_length": "32", "tr_cur_start": "64"})
    assert any(md_escape("start length = 64 is above the full length of 32") in e for e in texts(at.error))
    assert at.session_state["tr_cur_start"] == 64  # the controls stay as the link set them
    at = opened_with({"tr_tab": "Curriculum", "tr_cur_encoding": "rope", "tr_cur_length": "32"})
    assert not at.error


def test_mixed_precision_shows_time_per_step_the_report_and_the_device():
    at = opened_with({"tr_tab": "Mixed precision", "tr_prec_steps": "30"})
    assert any("Runs on: **CPU" in c and "bfloat16" in c for c in texts(at.caption))
    at.button(key="tr_prec_go").click().run()
    finish(at, "tr_prec_handle")
    assert_clean(at)
    run = at.session_state["tr_prec_handle"].result()
    assert run.finished and run.step == 30
    shown = {m.label: m.value for m in at.metric}
    for arm in ("bf16", "fp32"):
        assert shown[f"{arm}: time per step"] == f"{run.step_ms(arm):.0f} ms"
    found = findings_text(at)
    for sentence in run.findings():
        assert sentence in found
    assert any(s in found for s in report_sentences(run.report, "bf16"))
    table = helpers.shown_table(at, "tr_mp_where")
    assert list(table["where"]) == [w for w, _ in run.report] and list(table["dtype"]) == [d for _, d in run.report]
    assert dict(run.report)["loss"] == "float32" and dict(run.report)["queries, keys, values"] == "bfloat16"
    assert chart(at, "held-out loss against step") and chart(at, "held-out loss against training time")


def test_data_parallel_runs_two_workers_and_shows_the_comparison():
    at = opened_with({"tr_tab": "Data-parallel", "tr_ddp_workers": "2", "tr_ddp_steps": "10", "tr_ddp_batch": "4"})
    settings = train_ddp.DDPSettings(workers=2, steps=10, batch_size=4)
    code = [c.value for c in at.code]
    assert train_ddp.command_lines(settings)["launcher"] in code
    assert any(c.startswith("torchrun") and "-m explorer.train_ddp --steps 10 --batch-size 4" in c for c in code)
    at.button(key="tr_ddp_go").click().run()
    finish(at, "tr_ddp_handle")
    assert_clean(at)
    handle = at.session_state["tr_ddp_handle"]
    c = handle.result()
    assert c is not None and c.parallel.world == 2 and c.single.world == 1, (handle.status, handle.error)
    assert c.max_abs_diff < 1e-3
    shown = {m.label: m.value for m in at.metric}
    assert shown["Speed-up"] == f"{c.speedup:.2f}×"
    assert list(helpers.shown_table(at, "tr_ddp_workers")["rank"]) == [0, 1]
    found = findings_text(at)
    for sentence in c.findings:
        assert sentence in found


def test_a_global_batch_that_does_not_divide_gets_a_message():
    at = opened_with({"tr_tab": "Data-parallel", "tr_ddp_workers": "4", "tr_ddp_batch": "6"})
    assert any(md_escape("batch_size = 6") in e and "multiple of 4" in e for e in texts(at.error))
    assert at.session_state["tr_ddp_batch"] == 6


def tiny_model(corpus):
    settings = textlm.settings_for(corpus, n_layer=1, n_head=2, n_embd=32, context=16)
    return settings, build_model(settings.model_config(corpus.vocab_size), 0).eval()


def test_a_checkpoint_reopens_and_bad_ones_are_refused_keeping_the_model():
    emma = corpora.builtin()
    settings, model = tiny_model(emma)
    good = bundle(model, emma.chars, {"source": textlm.SOURCE, "corpus": emma.name, "title": emma.title,
                                      "digest": emma.digest, "settings": {}, "steps": 7})
    at = opened_with({"tr_tab": "Checkpoints"})
    at.file_uploader(key="tr_ckpt_open").set_value(("emma.zip", good, "application/zip")).run()
    assert_clean(at)
    assert at.session_state["tr_opened"].step == 7
    assert any("trained on the text chosen above" in s for s in texts(at.success))
    assert any(c.startswith("The prompt, then") for c in texts(at.caption))  # it writes
    lab = bundle(model, emma.chars, {"source": "attention_lab", "task": "reverse"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.safetensors", b"\x00" * 4)
        z.writestr("config.json", b"{}")
    for name, data, why in (("lab.zip", lab, "Attention Lab"), ("junk.zip", b"not a zip", "not a zip"),
                            ("truncated.zip", buf.getvalue(), "safetensors")):
        at.file_uploader(key="tr_ckpt_open").set_value((name, data, "application/zip")).run()
        assert_clean(at)
        assert any(why in e and "The opened model is unchanged" in e for e in texts(at.error)), (name, texts(at.error))
        assert at.session_state["tr_opened"].name == "emma.zip"
    other = corpora.Corpus("fox.txt", "The quick brown fox jumps over the lazy dog. " * 60)
    _, fox_model = tiny_model(other)
    fox = bundle(fox_model, other.chars, {"source": textlm.SOURCE, "corpus": other.name, "digest": other.digest,
                                          "steps": 3})
    at.file_uploader(key="tr_ckpt_open").set_value(("fox.zip", fox, "application/zip")).run()
    assert_clean(at)
    assert any("different text" in w and "different characters" in w for w in texts(at.warning))


def test_the_curriculum_lesson_opens_the_curriculum_tab_and_starts():
    at = AppTest.from_file(helpers.APP, default_timeout=120)
    at.query_params["lesson"] = "curriculum"
    at.run()
    assert_clean(at)
    assert at.session_state["tr_tab"] == "Curriculum"
    handle = at.session_state["tr_cur_handle"]
    assert handle.job.settings == methods.CurriculumSettings().for_corpus(corpora.builtin())
    handle.release(at.session_state["_holder"])  # the default comparison takes a minute: not run here


def test_a_link_keeps_the_controls_of_a_closed_tab():
    at = opened_with({"tr_cur_steps": "30", "tr_prec_steps": "60", "tr_ddp_workers": "3", "tr_prompt": "Emma"})
    assert not any("ignored" in w for w in texts(at.warning))
    s = at.session_state
    assert (s["tr_cur_steps"], s["tr_prec_steps"], s["tr_ddp_workers"], s["tr_prompt"]) == (30, 60, 3, "Emma")
