"""The Safeguards page's Privacy tab: the page's job against ``privacy.compare`` (the same numbers), ε
before training against the accountant, a tiny run opened from a link and run to the end through the
scheduler, Stop, impossible settings, the output filter on typed text, the lesson, and the bench."""
import dataclasses
import json
import math

import pytest
from streamlit.testing.v1 import AppTest

import apptest_helpers as helpers
from apptest_helpers import assert_clean, boxed_texts, plotly_specs, run_until, shown_table, texts
from explorer import accountant, bench, privacy
from explorer.corpus import builtin
from explorer.figures import md_escape

pytestmark = pytest.mark.usefixtures("one_thread")

PAGE = "pages/safeguards.py"
TINY = {"sg_tab": "Privacy", "sg_dp_steps": "10", "sg_dp_batch": "8"}


def tiny_settings(**dp) -> privacy.PrivacySettings:
    return privacy.PrivacySettings(dataclasses.replace(privacy.DPSettings(), **({"steps": 10, "batch_size": 8} | dp)))


def opened_with(params: dict) -> AppTest:
    return helpers.opened_with(PAGE, params, timeout=120)


def finish(at: AppTest) -> AppTest:
    return run_until(at, lambda a: "sg_dp_handle" in a.session_state and a.session_state["sg_dp_handle"].active,
                     timeout_s=240)


def chart(at, title_start: str) -> dict:
    return next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith(title_start))


# ---------------------------------------------------------------------------------------------- the library's glue
def the_same_as_compare(run: privacy.PrivacyRun) -> None:
    """The page's job (both arms in turns, in slices, measured along the way) gives the numbers
    ``privacy.compare`` gives in one go for the same settings (one arm after the other)."""
    c, settings = run.comparison, run.settings
    ref = privacy.compare(builtin().text, privacy.setup(settings.canary).config, settings.dp, settings.canary)
    assert (c.dp_exposure, c.plain_exposure) == (ref.dp_exposure, ref.plain_exposure)
    assert (c.dp_held_out, c.plain_held_out) == (ref.dp_held_out, ref.plain_held_out)
    assert c.dp.epsilon == ref.dp.epsilon == pytest.approx(accountant.epsilon(8 / 1127, 1.0, 10, 1e-5))
    assert c.dp.losses == ref.dp.losses and c.plain.losses == ref.plain.losses
    assert c.dp.clipped_share == ref.dp.clipped_share and c.windows_with_canary == ref.windows_with_canary
    assert privacy.findings(c) == privacy.findings(ref) == run.findings()
    # the curve: step 0 and every `every` steps, its last point the final held-out loss
    steps, losses = run.series()["with DP"]
    assert steps == [0, 2, 4, 6, 8, 10] and settings.every == 2
    assert losses[-1] == round(c.dp_held_out, 4) and run.curves["without DP"][-1] == (10, c.plain_held_out)
    assert run.scores["with DP"][0] == pytest.approx(c.dp_exposure.log_perplexity)
    assert len(run.scores["without DP"]) == c.plain_exposure.candidates == 6 ** 5  # the digits 1 2 3 4 5 8


def test_epsilon_before_training_is_the_accountants():
    d = privacy.PrivacySettings()
    assert privacy.setup(d.canary).examples == 1127 and privacy.sampling_rate(d) == 32 / 1127
    assert privacy.epsilon_now(d) == pytest.approx(4.0866, abs=1e-3)  # the module's default comparison: ε = 4.09
    series = privacy.epsilon_series(32 / 1127, 1.0, 1e-5, 400)
    xs, ys = series["σ = 1 (chosen)"]
    assert ys[xs.index(400)] == pytest.approx(accountant.epsilon(32 / 1127, 1.0, 400, 1e-5), abs=1e-4)
    assert series["σ = 2"][1][xs.index(50)] == pytest.approx(accountant.epsilon(32 / 1127, 2.0, 50, 1e-5), abs=1e-4)
    assert ys == sorted(ys)  # more steps, more ε


def test_impossible_settings_and_filter_input_are_said():
    assert "noise above 0" in privacy.problem(tiny_settings(noise_multiplier=0.0))
    assert "clip norm must be above 0" in privacy.problem(tiny_settings(clip=0.0))
    assert "only 1,127 windows" in privacy.problem(tiny_settings(batch_size=2048))
    assert privacy.problem(tiny_settings()) is None
    with pytest.raises(privacy.PrivacyError, match="noise"):
        privacy.PrivacyJob(tiny_settings(noise_multiplier=0.0))
    assert "1 / 1,127 windows" in privacy.delta_warning(tiny_settings(delta=1e-3))
    assert privacy.delta_warning(tiny_settings(delta=1e-4)) is None
    assert "empty" in privacy.filter_problem("  \n") and "4,001 characters" in privacy.filter_problem("x" * 4001)
    text = "mail a.b@example.com, PIN 4 8 1"
    assert privacy.span_rows(text, privacy.redact(text)[1]) == {
        "kind": ["email", "number"], "characters": ["5–20", "26–31"], "text hidden": ["a.b@example.com", "4 8 1"]}
    assert privacy.miss_rows()["should hide"] == [c.private for c in privacy.known_misses()]


# ---------------------------------------------------------------------------------------------- the tab
def test_a_tiny_run_from_a_link_shows_epsilon_first_then_both_arms_exposure_and_findings():
    at = opened_with(TINY)
    assert len(plotly_specs(at)) == 1  # before any run: the accountant's ε only
    eps = chart(at, "ε against steps")
    q = 8 / 1127
    chosen = next(t for t in eps["data"] if t["name"] == "σ = 1 (chosen)")
    assert chosen["y"][chosen["x"].index(10)] == pytest.approx(accountant.epsilon(q, 1.0, 10, 1e-5), abs=1e-4)
    assert eps["layout"]["shapes"][0]["x0"] == 10  # the chosen steps marked
    assert any(f"ε = {accountant.epsilon(q, 1.0, 10, 1e-5):.2f} at δ = 1e-05" in m for m in texts(at.markdown))
    at.button(key="sg_dp_go").click().run()
    finish(at)
    assert_clean(at)
    run = at.session_state["sg_dp_handle"].result()
    assert run.finished and run.settings == tiny_settings()
    assert len(plotly_specs(at)) == 4
    loss = chart(at, "held-out loss against steps")
    for arm, (xs, ys) in run.series().items():
        trace = next(t for t in loss["data"] if t["name"] == arm)
        assert (trace["x"], trace["y"]) == (xs, ys)
    c = run.comparison
    the_same_as_compare(run)
    dp_hist = chart(at, "with DP: exposure")
    assert dp_hist["layout"]["shapes"][0]["x0"] == pytest.approx(c.dp_exposure.log_perplexity, abs=1e-3)
    assert f"rank {c.plain_exposure.rank:,} of 7,776" in chart(at, "without DP")["layout"]["annotations"][0]["text"]
    shown = {m.label: m.value for m in at.metric}
    assert shown["ε (DP arm)"] == f"{c.dp.epsilon:.2f}"
    assert shown["Exposure without DP"] == f"{c.plain_exposure.exposure:.2f} bits"
    found = next(m for m in texts(at.markdown) if "What came out" in m)
    for sentence in privacy.findings(c):
        assert sentence in found
    assert "group-privacy" in found and "Opacus" in " ".join(texts(at.markdown))
    assert at.query_params["sg_dp_done"] == "1"


def test_stop_keeps_the_curves_so_far_and_bad_settings_get_messages():
    at = opened_with({"sg_tab": "Privacy", "sg_dp_steps": "800", "sg_dp_batch": "8"})
    at.button(key="sg_dp_go").click().run()
    run_until(at, lambda a: a.session_state["sg_dp_handle"].job.live() is None, timeout_s=60)
    at.button(key="sg_dp_stop").click().run()
    assert_clean(at)
    assert "sg_dp_handle" not in at.session_state
    stopped = next(m for m in texts(at.markdown) if m.startswith("Stopped after"))
    assert "of 800 steps each" in stopped and not any("What came out" in m for m in texts(at.markdown))
    assert len(plotly_specs(at)) == 2  # ε and the curves so far
    assert "sg_dp_done" not in at.query_params

    at = opened_with({"sg_tab": "Privacy", "sg_dp_sigma": "0.0"})
    assert any(md_escape("noise_multiplier = 0.0: DP-SGD needs noise above 0") in e for e in texts(at.error))
    assert at.session_state["sg_dp_sigma"] == 0.0
    at = opened_with({"sg_tab": "Privacy", "sg_dp_batch": "2048"})
    assert any(md_escape("only 1,127 windows") in e for e in texts(at.error))
    assert at.session_state["sg_dp_text"] == privacy.FILTER_EXAMPLE  # the filter is still there
    at = opened_with({"sg_tab": "Privacy", "sg_dp_delta": "0.001"})
    assert any(md_escape("1 / 1,127 windows") in w for w in texts(at.warning))


def test_the_filter_shows_typed_text_as_text_with_its_catches_and_its_misses():
    hostile = "<img src=x onerror=alert(1)> **bold** mail [me](http://x) at eve@example.org, PIN 4 8 1 5 2"
    at = opened_with({"sg_tab": "Privacy", "sg_dp_text": hostile})
    out, spans = privacy.redact(hostile)
    assert out in boxed_texts(at)  # shown as typed
    tables = {k: shown_table(at, k) for k in ("sg_dp_spans", "sg_dp_misses", "sg_dp_over")}
    assert tables["sg_dp_spans"]["text hidden"].tolist() == ["1", "eve@example.org", "4 8 1 5 2"]
    assert tables["sg_dp_misses"]["should hide"].tolist() == [c.private for c in privacy.known_misses()]
    assert tables["sg_dp_over"]["filter output"].tolist() == [o for _, o in privacy.over_redactions()]
    assert not any("<img" in m for m in texts(at.markdown))
    indented = "  two spaces first,\n    then four: call 555 0100  "
    at.text_area(key="sg_dp_text").set_value(indented).run()
    assert privacy.redact(indented)[0] in boxed_texts(at)  # its spaces kept, leading and trailing
    at.text_area(key="sg_dp_text").set_value("   ").run()
    assert any("Nothing filtered: the box is empty" in w for w in texts(at.warning))
    at.text_area(key="sg_dp_text").set_value("9" * 5000).run()
    assert any(md_escape("5,000 characters") in w for w in texts(at.warning))


def test_a_link_keeps_the_values_of_the_closed_tab():
    at = opened_with({"sg_dp_sigma": "2.5", "sg_dp_times": "16", "sg_dp_text": "call 555"})
    assert not any("ignored" in w for w in texts(at.warning))
    s = at.session_state
    assert (s["sg_dp_sigma"], s["sg_dp_times"], s["sg_dp_text"]) == (2.5, 16, "call 555")


def test_the_privacy_lesson_opens_the_tab_and_starts_the_default_run():
    at = AppTest.from_file(helpers.APP, default_timeout=120)
    at.query_params["lesson"] = "privacy"
    at.run()
    assert_clean(at)
    assert at.session_state["sg_tab"] == "Privacy"
    handle = at.session_state["sg_dp_handle"]
    assert handle.job.settings == privacy.PrivacySettings()
    handle.release(at.session_state["_holder"])  # the default comparison takes most of a minute: not run here


def test_bench_figures_quick(tmp_path):
    """``python -m explorer.bench safeguards --only privacy --quick --json``: the module's figures, written."""
    out = tmp_path / "safeguards.json"
    bench.main(["safeguards", "--only", "privacy", "--quick", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["quick"] is True and set(written) == {"device", "threads", "quick", "privacy"}
    f = written["privacy"]
    assert f["steps"] == 20 and f["sigma"] == 1.0 and f["delta"] == 1e-5
    assert f["epsilon"] == pytest.approx(accountant.epsilon(16 / 1127, 1.0, 20, 1e-5), abs=1e-4)
    assert 0 <= f["exposure_dp_bits"] <= f["exposure_max_bits"] == pytest.approx(math.log2(6 ** 5))
    assert f["held_out_loss_dp"] > 0 and f["held_out_loss_plain"] > 0
