"""The Safeguards page's Bias tab through AppTest: the training text shown before any run (sentences, their
counterfactual copies, counts, probe templates, the data's chart), a tiny run started with the button and run
to the end through the scheduler (charts, findings, one probe read from both models), bad and closed-tab link
values, the lesson; and the tab's library glue (bars, series, per-occupation log-odds, one probe, the seed-noise
sentence) against hand numbers."""
import math
from dataclasses import replace

import pytest
from streamlit.testing.v1 import AppTest

import apptest_helpers as helpers
from apptest_helpers import assert_clean, boxed_texts, plotly_specs, run_until, shown_table, texts
from explorer import bias
from explorer.bias import BiasRecord, BiasRun, BiasSettings, DataCounts, ProbeResult

PAGE = "pages/safeguards.py"
TINY = {"sg_tab": "Bias", "sg_bias_steps": "50", "sg_bias_sentences": "500"}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def opened_with(params: dict) -> AppTest:
    return helpers.opened_with(PAGE, params, timeout=120)


def chart(at, title_start: str) -> dict:
    return next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith(title_start))


def test_first_open_shows_the_data_without_training():
    at = opened_with({"sg_tab": "Bias", "sg_bias_skew": "0.7", "sg_bias_sentences": "500"})
    settings = bias.settings_from(0.7, True, 600, 500, 0)
    assert "sg_bias_handle" not in at.session_state
    specs = plotly_specs(at)
    assert len(specs) == 1  # the data's skew only: nothing trained
    data = bias.data_counts(settings)
    bars = chart(at, "share of zim")
    assert [t["y"] for t in bars["data"]] == [[d.share_a, d.counter_share_a] for d in data.values()]
    code = boxed_texts(at)
    pairs = bias.examples(settings)
    assert "\n".join(a for a, _ in pairs) in code and "\n".join(b for _, b in pairs) in code
    table = shown_table(at, "sg_bias_counts")
    assert list(table["target: share saying zim"]) == [f"{d.share_a:.1%}" for d in data.values()]
    assert any(all(bias.template_label(t) in m for t in bias.PROBE_TEMPLATES) for m in texts(at.markdown))
    assert at.selectbox(key="sg_bias_occupation").disabled


def test_a_tiny_run_finishes_with_its_charts_findings_and_one_probe():
    at = opened_with({**TINY, "sg_bias_skew": "0.9"})
    at.button(key="sg_bias_go").click().run()
    run_until(at, lambda a: "sg_bias_handle" in a.session_state and a.session_state["sg_bias_handle"].active)
    assert_clean(at)
    run = at.session_state["sg_bias_handle"].result()
    assert run.finished and run.step == 50 and run.settings == bias.settings_from(0.9, True, 50, 500, 0)
    assert len(plotly_specs(at)) == 3
    groups, series = bias.share_bars(run.data, run)
    assert [t["y"] for t in chart(at, "share of zim")["data"]] == list(series.values())
    lines, _ = bias.step_series(run)
    steps_chart = chart(at, "target occupations")
    for t in steps_chart["data"]:
        assert (t["x"], t["y"]) == tuple(map(list, lines[t["name"]]))
    occs, odds = bias.occupation_log_odds(run)
    assert [t["y"] for t in chart(at, "log-odds")["data"]] == list(odds.values())
    found = next(m.value for m in at.markdown if "What came out" in m.value)
    for sentence in run.findings():
        assert sentence in found
    assert shown_table(at, "sg_bias_probe_table").to_dict("records") == bias.probe_detail(run, "baker", bias.PROBE_TEMPLATES[0])
    at.selectbox(key="sg_bias_occupation").set_value("nurse").run()
    at.selectbox(key="sg_bias_template").set_value(bias.PROBE_TEMPLATES[2]).run()
    assert shown_table(at, "sg_bias_probe_table").to_dict("records") == bias.probe_detail(run, "nurse", bias.PROBE_TEMPLATES[2])
    assert at.query_params["sg_bias_done"] == "1"


def test_closed_tab_keeps_link_values_and_without_augmentation_one_text():
    at = opened_with({"sg_tab": "Uncertainty", "sg_bias_skew": "0.3", "sg_bias_occupation": "guard",
                      "sg_bias_augment": "false", "sg_bias_steps": "100"})
    assert not any("ignored" in w for w in texts(at.warning))
    s = at.session_state
    assert (s["sg_bias_skew"], s["sg_bias_occupation"], s["sg_bias_augment"], s["sg_bias_steps"]) == (
        0.3, "guard", False, 100)
    at = opened_with({"sg_tab": "Bias", "sg_bias_augment": "false", "sg_bias_sentences": "500"})
    assert list(shown_table(at, "sg_bias_counts")["text"]) == ["skewed"]
    assert [t["name"] for t in chart(at, "share of zim")["data"]] == ["skewed text"]


def test_the_bias_lesson_opens_the_tab_and_starts_the_run():
    at = AppTest.from_file(helpers.APP, default_timeout=120)
    at.query_params["lesson"] = "bias"
    at.run()
    assert_clean(at)
    assert at.session_state["sg_tab"] == "Bias"
    handle = at.session_state["sg_bias_handle"]
    assert handle.job.settings == replace(BiasSettings(), skew=0.9, augment=True)
    handle.release(at.session_state["_holder"])  # the default run takes most of a minute: not run here


# ---------------------------------------------------------------------------------------------- the glue
def hand_run(skew_prefs=(2.0, -1.0, 0.5, 0.5) * 3, aug_prefs=(0.1, -0.1, 0.0, 0.2) * 3, mass=0.9) -> BiasRun:
    """A run with probe results set by hand: log P(A) = pref / 2, log P(B) = -pref / 2 for every probe."""
    def result(prefs):
        return ProbeResult(tuple(prefs), mass, tuple(p / 2 for p in prefs), tuple(-p / 2 for p in prefs))

    counter = (-1.0, -2.0, -3.0, -4.0) * 3
    records = {"skewed": [BiasRecord(0, result([0.0] * 12), result([0.0] * 12)),
                          BiasRecord(100, result(skew_prefs), result(counter))],
               "augmented": [BiasRecord(100, result(aug_prefs), result(counter))]}
    data = {"skewed": DataCounts(90, 10, 10, 90), "augmented": DataCounts(100, 100, 100, 100)}
    return BiasRun(replace(BiasSettings(), steps=100), data, records, 100, True)


def test_glue_against_hand_numbers():
    run = hand_run()
    groups, series = bias.share_bars(run.data, run)
    assert series["skewed text"] == [0.9, 0.1] and series["augmented text"] == [0.5, 0.5]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want = (3 * (sig(2) + sig(-1) + 2 * sig(0.5))) / 12
    assert series["model on the skewed text: P(zim)"][0] == pytest.approx(want)
    occs, odds = bias.occupation_log_odds(run)
    assert occs == list(bias.TARGETS + bias.COUNTERS)
    assert odds["model on the skewed text"] == pytest.approx([2.0, -1.0, 0.5, 0.5, -1.0, -2.0, -3.0, -4.0])
    lines, dashed = bias.step_series(run)
    assert lines["model on the skewed text: probes preferring zim"] == ([0, 100], [0.0, 0.75])
    assert lines["skewed text: share of zim"] == ([0, 100], [0.9, 0.9]) and "skewed text: share of zim" in dashed
    rows = bias.probe_detail(run, "pilot", bias.PROBE_TEMPLATES[1])
    assert rows[0]["probe"] == "one pilot was ___" and rows[0]["log P(zim)"] == -0.5
    assert rows[0]["log P(vor)"] == 0.5 and rows[0]["prefers"] == "vor"
    assert rows[0]["P(zim) of the two"] == round(sig(-1.0), 3)
    with pytest.raises(bias.BiasError):
        bias.probe_detail(run, "<b>king</b>", bias.PROBE_TEMPLATES[0])


def test_findings_name_seed_noise_and_refuse_to_compare_unlearned_models():
    lo, hi, pick = bias.BALANCED_SPREAD
    p = (0.5 + hi) / 2  # a P(A) off 50 % by more than MATCH, inside the spread
    assert p - 0.5 > bias.MATCH
    inside = math.log(p / (1 - p))
    run = hand_run(skew_prefs=(3.0,) * 12, aug_prefs=(inside,) * 12)
    text = " ".join(run.findings())
    assert "within seed noise" in text and f"{lo:.1%} to {hi:.1%}" in text
    assert "amplified: 100% of probes pick zim, where 90.0%" in text and f"up to {pick:.0%}" in text
    assert "+5.3 points are outside that range" in text  # P(zim) 95.3 % against the text's 90 %
    _, lo9, hi9 = bias.SKEWED_SPREAD
    p9 = 0.9 + (bias.MATCH + hi9) / 2  # off the text's share by more than MATCH, inside the spread at skew 0.9
    run = hand_run(skew_prefs=(math.log(p9 / (1 - p9)),) * 12)
    diff = run.last("skewed").target.p_a - run.data["skewed"].share_a
    assert diff == pytest.approx(p9 - 0.9)
    assert f"{diff * 100:+.1f} points are inside that range, so they may be seed noise" in " ".join(run.findings())
    outside = math.log(0.97 / 0.03)
    text = " ".join(hand_run(skew_prefs=(4.0,) * 12, aug_prefs=(outside,) * 12).findings())
    assert "is outside that range" in text and "within seed noise" not in text
    text = " ".join(hand_run(mass=0.1).findings())
    assert "has not learned the slot yet" in text and "skew removed" not in text


def test_bench_figures_quick():
    out = bias.bench_figures(quick=True)
    assert set(out["skews"]) == {"0.9", "0.5"}
    for arms in out["skews"].values():
        assert set(arms) == {"skewed", "augmented"}
        assert set(arms["skewed"]) >= {"data_share_a", "model_p_a", "model_prefer_a"}
    assert out["skews"]["0.9"]["skewed"]["data_share_a"] > 0.85
    assert abs(out["skews"]["0.9"]["augmented"]["data_share_a"] - 0.5) < 0.05
    assert 0 <= out["balanced_spread"]["p_a_low"] <= out["balanced_spread"]["p_a_high"] <= 1
    assert out["skewed_spread"]["p_a_minus_data_low"] <= out["skewed_spread"]["p_a_minus_data_high"]
