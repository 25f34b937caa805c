"""The Safeguards page's Uncertainty tab through AppTest: first open (the untrained model's shaded text
and calibration, before any run), a tiny run from a link trained and calibrated through the scheduler
and drawn from its result, bad prompts and link values, a closed tab keeping its link's values, the
lesson, the run shared with the Training page; and the tab's library glue against hand numbers."""
import math

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

import apptest_helpers as helpers
from apptest_helpers import assert_clean, plotly_specs, run_until, shown_table, texts
from explorer import safeguards, textlm, uncertainty as unc
from explorer.figures import md_escape

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PAGE = "pages/safeguards.py"
TINY = {"sg_unc_steps": "10", "sg_unc_windows": "32", "sg_unc_chars": "50"}


def opened_with(params: dict) -> AppTest:
    return helpers.opened_with(PAGE, params, timeout=120)


def chart(at, title_start: str) -> dict:
    return next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith(title_start))


def findings_text(at) -> str:
    return next(m.value for m in at.markdown if "What came out" in m.value)


def busy(at) -> bool:
    s = at.session_state
    return any(k in s and s[k].active for k in ("sg_unc_train", "sg_unc_cal")) or "sg_unc_cal" not in s


def check_views(at, m: unc.Measured, threshold: float = 1.5, temperature: float = 1.0) -> None:
    """The page's reliability diagram, curve, table and findings are those of ``m``."""
    rel = m.reliability(temperature)
    bars = chart(at, f"reliability at T = {temperature:g}")["data"][0]
    full = [i for i, c in enumerate(rel.counts) if c]
    assert bars["y"] == [round(rel.accuracy[i], 4) for i in full]
    assert bars["text"] == [f"{rel.counts[i]:,}" for i in full]
    assert f"ECE {rel.ece:.4f}" in chart(at, "reliability")["layout"]["title"]["text"]
    curve = chart(at, "ECE and NLL against temperature")
    assert curve["data"][0]["x"] == list(unc.GRID) and curve["data"][0]["y"] == [round(e, 5) for e in m.grid_ece]
    assert curve["layout"]["shapes"][0]["x0"] == m.report.fitted_t
    table = shown_table(at, "sg_unc_temps")
    assert list(table["ECE"]) == m.table()["ECE"] and list(table["temperature"]) == m.table()["temperature"]
    found = findings_text(at)
    for sentence in unc.findings(m.at_threshold(threshold)):
        assert sentence in found


# ---------------------------------------------------------------------------------------------- the page
def test_first_open_shows_the_untrained_model_shaded_and_calibrated(emma):
    at = opened_with({"sg_unc_chars": "50"})
    s = at.session_state
    for key, value in safeguards.url_defaults().items():  # what a lesson starts from is what the page opens with
        if (key.startswith("sg_unc_") or key == "sg_tab") and key != "sg_unc_chars":
            assert s[key] == value, key
    assert len(plotly_specs(at)) == 2
    assert any("Not trained yet" in m.value for m in at.markdown)
    assert "sg_unc_train" not in s  # nothing heavy started
    m = unc.untrained(emma)  # what the page drew (computed once per process)
    check_views(at, m)
    assert m.report.n_test == unc.UNTRAINED_WINDOWS * 64
    assert abs(m.report.confidence - 1 / emma.vocab_size) < 0.02  # it knows nothing, and says so
    assert unc.untrained_note(m, emma.vocab_size) in texts(at.info)
    infos = unc.write(m.model, emma, "Emma", 50, 1.0, 1.5)
    assert at.get("html")[0].proto.body == unc.uncertainty_html(infos, "entropy")
    assert unc.flag_summary(infos, 1.5, emma.vocab_size) in texts(at.markdown)
    assert any("700 steps is that page's default" not in c and "Training page's run at 250 steps" in c
               for c in texts(at.caption))


def test_a_link_trains_and_calibrates_a_tiny_model_and_draws_its_result(emma):
    at = opened_with(TINY | {"sg_unc_done": "1", "sg_unc_threshold": "3.5", "sg_unc_rel_t": "0.5",
                             "sg_unc_by": "probability"})
    run_until(at, busy, timeout_s=240)
    assert_clean(at)
    s = at.session_state
    settings = textlm.settings_for(emma, steps=10)
    assert s["sg_unc_train"].job.key == ("textlm", settings)  # the Training page's job, by its key
    run = s["sg_unc_train"].result()
    assert run.finished and run.step == 10
    m = s["sg_unc_cal"].result()
    assert s["sg_unc_cal"].job.key == unc.calibration_key(settings, 32) and m.steps == 10
    assert m.report.n_test == 32 * 64 and m.held_out_loss == run.probes[-1][1]["held_out_loss"]
    check_views(at, m, threshold=3.5, temperature=0.5)
    infos = unc.write(run.model, emma, "Emma", 50, 1.0, 3.5)
    assert at.get("html")[0].proto.body == unc.uncertainty_html(infos, "probability")
    assert unc.flag_summary(infos, 3.5, emma.vocab_size) in texts(at.markdown)
    assert m.train_seconds == run.seconds
    assert not any("Before training" in i for i in texts(at.info))  # the untrained model's note has gone
    assert any(f"Trained 10 of 10 steps ({run.seconds:.1f} s of training on this server)" in t for t in texts(at.markdown))
    assert at.query_params["sg_unc_done"] == "1"
    assert not any("Training page's run" in c for c in texts(at.caption))  # 10 steps: not a Training page choice

    at.text_input(key="sg_unc_prompt").set_value("Emma 漢<b>").run()  # characters Emma never uses: named
    assert_clean(at)
    warning = next(w for w in texts(at.warning) if "Nothing written" in w)
    assert md_escape("'漢'") in warning and md_escape("'<'") in warning and "never uses" in warning
    assert at.session_state["sg_unc_prompt"] == "Emma 漢<b>" and len(plotly_specs(at)) == 2  # the rest stays
    at.text_input(key="sg_unc_prompt").set_value("").run()  # empty: from a new line
    assert_clean(at)
    assert not at.warning and at.get("html")


def test_odd_link_values_are_ignored_and_a_closed_tab_keeps_the_link(emma):
    at = opened_with({"sg_unc_steps": "7", "sg_unc_threshold": "nan"})
    assert at.session_state["sg_unc_steps"] == unc.DEFAULTS["sg_unc_steps"]
    at = opened_with({"sg_tab": safeguards.TABS[1], "sg_unc_steps": "100", "sg_unc_prompt": "Harriet",
                      "sg_unc_by": "probability"})
    s = at.session_state
    assert (s["sg_unc_steps"], s["sg_unc_prompt"], s["sg_unc_by"]) == (100, "Harriet", "probability")
    assert "sg_unc_train" not in s


def test_the_lesson_opens_the_tab_and_starts_the_training_pages_run(emma):
    at = AppTest.from_file(helpers.APP, default_timeout=120)
    at.query_params["lesson"] = "uncertainty"
    at.run()
    assert_clean(at)
    assert at.session_state["sg_tab"] == "Uncertainty"
    handle = at.session_state["sg_unc_train"]
    assert handle.job.key == ("textlm", unc.model_settings(emma, unc.DEFAULTS["sg_unc_steps"]))
    handle.release(at.session_state["_holder"])  # (the shelf's run: tests/test_shareable.py opens it finished)
    # the Training page's Train at the same steps submits the very same job
    page = helpers.opened_with("pages/training.py", {"tr_steps": "250"}, timeout=120)
    page.button(key="tr_train").click().run()
    assert page.session_state["tr_handle"].job.key == handle.job.key
    page.session_state["tr_handle"].release(page.session_state["_holder"])
    assert unc.training_page_query(700) == "" and unc.training_page_query(250) == "?tr_steps=250"
    assert unc.training_page_query(10) is None


# ---------------------------------------------------------------------------------------------- the library glue
def small_measured() -> unc.Measured:
    """Three test predictions with known entropies and right/wrong marks (logits make the report)."""
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([0, 0, 2, 1])
    split = unc.Split(logits, targets)
    r = unc.report(split, split, unc.CalibrationSettings(bins=2))
    return unc.Measured(r, split, np.array([0.5, 2.0, 3.0, 0.1]), np.array([0.0, 1.0, 0.0, 1.0]), (1.0,),
                        (r.before.ece,), (r.nll,), 5, 1.0, 2)


def test_flag_figures_at_another_threshold_by_hand():
    m = small_measured()
    r = m.at_threshold(1.0)  # flags the 2nd and 3rd: one wrong of two; unflagged: one wrong of two
    assert (r.flagged_share, r.error_flagged, r.error_unflagged, r.threshold) == (0.5, 0.5, 0.5, 1.0)
    r = m.at_threshold(0.3)  # flags three: one wrong of three; unflagged: the 4th, wrong
    assert r.flagged_share == 0.75 and r.error_flagged == pytest.approx(1 / 3) and r.error_unflagged == 1.0
    assert math.isnan(m.at_threshold(5.0).error_flagged)
    assert r.fitted_t == m.report.fitted_t and r.rows == m.report.rows  # nothing else moves
    with pytest.raises(ValueError, match="nats"):
        m.at_threshold(-1.0)


def test_reliability_at_a_temperature_and_the_table_by_hand():
    m = small_measured()
    rel = m.reliability(1.0)  # top-1 probabilities: softmax rows; right: rows 1 and 3 (0-based 0 and 2)
    p = torch.softmax(m.test.logits.double(), -1).max(-1).values.numpy()
    assert rel.counts == (int((p <= 0.5).sum()), int((p > 0.5).sum()))
    assert rel.ece == pytest.approx(unc.ece(p, [1, 0, 1, 0], bins=2))
    table = m.table()
    assert table["temperature"][:3] == ["0.5", "1", "2"] and table["temperature"][3].endswith("(fitted)")
    assert table["accuracy"] == [0.5] * 4
    assert table["ECE"][1] == round(m.report.before.ece, 4)


def test_flag_summary_and_flags_by_hand():
    infos = [unc.TokenInfo("a", 0.9, 0.2, False), unc.TokenInfo("b", 0.1, 2.4, False),
             unc.TokenInfo("c", 0.5, 1.0, False)]
    flagged = unc.flagged_at(infos, 0.5)
    assert [t.flagged for t in flagged] == [False, True, True]
    text = unc.flag_summary(flagged, 0.5, 76)
    assert text.startswith("2 of 3 characters flagged (entropy above 0.5 nats)")
    assert "from 0.20 to 2.40 nats, 1.20 on average" in text and "ln 76 = 4.33" in text


def test_bench_figures_quick():
    f = unc.bench_figures(quick=True)
    assert f["steps"] == 10 and f["test_predictions"] == 32 * 64
    assert 0 < f["accuracy"] < 1 and 0.05 <= f["fitted_t"] <= 20
    assert f["ece_t1"] >= 0 and f["nll_fitted"] <= f["nll_t1"] + 0.05


def test_findings_say_when_the_model_is_already_calibrated():
    from test_uncertainty import synthetic

    calibrated = unc.report(synthetic(1.0, seed=2), synthetic(1.0, seed=3))
    assert calibrated.before.ece < unc.CALIBRATED and abs(calibrated.fitted_row.ece - calibrated.before.ece) < unc.BARELY
    assert any("barely moves ECE" in f and "already calibrated at this scale" in f for f in unc.findings(calibrated))
    over = unc.report(synthetic(3.0, seed=0), synthetic(3.0, seed=1))
    assert not any("already calibrated" in f for f in unc.findings(over))


def test_the_definitions_numbers_are_emmas(emma):
    """The Definitions expander names ln V for Emma's V characters: both computed here from the corpus."""
    v = emma.vocab_size
    assert f"ln {v} = {math.log(v):.2f} for Emma's {v})" in unc.DEFINITIONS


def test_the_default_text_is_written_once_per_server_and_a_typed_prompt_stays_in_its_session(emma, monkeypatch):
    """The example prompt's text is the same for every student (a shared model, seed 0): the second
    student is handed the first one's, from the server-wide store. A prompt a student typed is
    written for that session only, and never enters the shared store."""
    import ui

    calls = []
    write = unc.write
    monkeypatch.setattr(unc, "write", lambda *a: calls.append(a[2]) or write(*a))
    ui._shared_results().store.clear()
    first, second = opened_with({"sg_unc_chars": "50"}), opened_with({"sg_unc_chars": "50"})
    assert calls == ["Emma"]  # written once, for both
    assert first.get("html")[0].proto.body == second.get("html")[0].proto.body
    typed = opened_with({"sg_unc_chars": "50", "sg_unc_prompt": "Harriet"})
    assert calls == ["Emma", "Harriet"]
    assert not any("Harriet" in repr(key) for key in ui._shared_results().store)
    assert [key[1] for key in typed.session_state["sg_unc_written"]] == ["Harriet"]
    opened_with({"sg_unc_chars": "50", "sg_unc_prompt": "Harriet"})  # another student typing the same
    assert calls == ["Emma", "Harriet", "Harriet"]
