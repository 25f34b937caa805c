"""The Safeguards page's Feedback tab: the library glue (settings from the controls, job keys, the base
model trained once per process, a run's series and samples against the trainer's own numbers, the
bench's figures), and the tab through AppTest: a scripted DPO run from a link to its finished view,
a person's choices (too few, removed, cleared, then trained on), and bad link values."""
import math

import pytest
import torch

import apptest_helpers as helpers
from apptest_helpers import assert_clean, boxed_texts, plotly_specs, run_until, shown_table, texts
from explorer import dpo
from explorer.figures import md_escape

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

PAGE = "pages/safeguards.py"
TINY = dict(base_steps=20, steps=2, eval_samples=8, eval_every=1)  # library runs of a second or two


# ---------------------------------------------------------------------------------------------- the library
def test_settings_come_from_the_controls_and_bad_ones_say_why():
    assert dpo.settings_from(dpo.url_defaults()) == dpo.FeedbackSettings()
    s = dpo.settings_from(dpo.url_defaults() | {"sg_fb_mode": "Correct reversal (reverse task)", "sg_fb_beta": 0.5})
    assert (s.mode, s.beta, s.preference, s.dpo().sample_length) == ("reversal", 0.5, "reversal", dpo.REVERSE_LENGTH)
    with pytest.raises(dpo.PreferenceError, match="choose one of"):
        dpo.settings_from(dpo.url_defaults() | {"sg_fb_mode": "nonsense"})
    with pytest.raises(dpo.PreferenceError, match="beta"):
        dpo.FeedbackSettings(beta=0.0)
    assert dpo.choices_needed(4) is None
    assert dpo.choices_needed(1) == "1 choice so far: 3 more are needed before DPO can run (at least 4)"
    assert dpo.choices_needed(3).startswith("3 choices so far: 1 more is needed")
    with pytest.raises(dpo.PreferenceError, match="3 more are needed"):
        dpo.FeedbackJob(dpo.FeedbackSettings(mode="human"), (("ab", "c", "d", "a"),))


def test_keys_are_the_full_settings_and_a_persons_choices():
    d = dpo.FeedbackSettings()
    assert dpo.feedback_key(d) == dpo.FeedbackJob(d).key and dpo.base_key(d) == dpo.BaseJob(d).key
    assert dpo.feedback_key(d) != dpo.feedback_key(dpo.FeedbackSettings(beta=0.5))
    assert dpo.base_key(d) == dpo.base_key(dpo.FeedbackSettings(beta=0.5, seed=3))  # one base for every DPO run
    assert dpo.base_key(d) != dpo.base_key(dpo.FeedbackSettings(mode="reversal"))
    human = dpo.FeedbackSettings(mode="human")
    one, two = (("ab", "c", "d", "a"),) * 4, (("ab", "c", "d", "b"),) * 4
    assert dpo.base_key(human) == dpo.base_key(d) and dpo.feedback_key(human, one) != dpo.feedback_key(human, two)


def test_the_base_is_trained_once_and_the_run_publishes_the_trainers_numbers():
    settings = dpo.FeedbackSettings(mode="reversal", **TINY)
    base = dpo.BaseJob(settings)
    first = dpo.run_to_end(base)
    assert first.step == 20 and first.finished
    again = dpo.BaseJob(settings)
    assert again.step(0.0) and again.result() is first  # known: no second training
    job = dpo.FeedbackJob(settings)
    run = dpo.run_to_end(job)
    alone = dpo.DPOTrainer(first.model, job.trainer.tokenizer, job.trainer.prompts, "reversal", settings.dpo())
    alone.advance()
    assert run.measurements == alone.measurements and run.findings == dpo.findings(alone)
    assert run.samples == alone.side_by_side() and len(run.samples) == 6
    prompts = [p for p, _, _ in run.samples]
    assert all(len(p) == dpo.REVERSE_LENGTH + 1 and p.endswith("=") for p in prompts)
    win = dpo.win_series(run)
    assert win["win rate against the reference"] == ([0, 1, 2], [m.win_rate for m in alone.measurements])
    assert dpo.divergence_series(run)["KL(policy ‖ reference)"][1][0] == 0.0  # the policy starts as the reference
    margins = dpo.margin_series(run)["preference margin"][1]
    assert all(m is None if math.isnan(h["margin"]) else m == h["margin"] for m, h in zip(margins, alone.history))


def test_a_persons_pairs_are_seeded_and_different():
    settings = dpo.FeedbackSettings(mode="human", base_steps=20)
    model = dpo.run_to_end(dpo.BaseJob(settings)).model
    pair = dpo.draw_pair(model, 0, 3)
    assert pair == dpo.draw_pair(model, 0, 3) and pair != dpo.draw_pair(model, 0, 4)
    prompt, a, b = pair
    assert (len(prompt), len(a), len(b)) == (dpo.TEXT_PROMPT, dpo.TEXT_SAMPLE, dpo.TEXT_SAMPLE) and a != b
    assert dpo.shown("a\nb\tc") == "a⏎b⇥c"


def test_bench_figures_quick():
    torch.manual_seed(0)
    f = dpo.bench_figures(quick=True)
    for name in ("fewer_e", "reversal", "collapse", "small_beta", "default_beta_long"):
        assert f[f"{name}_win_before"] == 0.5 and f[f"{name}_steps"] == 3  # step 0: policy == reference
        assert 0 <= f[f"{name}_win_after"] <= 1 and f[f"{name}_kl_end"] >= 0
    assert f["collapse_lr"] == max(dpo.LR_CHOICES) and f["small_beta"] == min(dpo.BETA_CHOICES)
    assert f["collapse_kl_end"] > f["fewer_e_kl_end"]  # a hundred-fold step moves it further


# ---------------------------------------------------------------------------------------------- the tab
def opened_with(params: dict):
    return helpers.opened_with(PAGE, {"sg_tab": "Feedback"} | params, timeout=120)


def busy(name: str):
    return lambda at: name in at.session_state and at.session_state[name].active


def findings_text(at) -> str:
    return next(m.value for m in at.markdown if "What came out" in m.value)


def test_a_scripted_run_from_a_link_shows_its_measurements():
    at = opened_with({"sg_fb_steps": "2", "sg_fb_seed": "1"})
    assert not plotly_specs(at) and any("Not run yet" in m.value for m in at.markdown)
    at.button(key="sg_fb_go").click().run()
    run_until(at, busy("sg_fb_handle"), timeout_s=300)
    assert_clean(at)
    run = at.session_state["sg_fb_handle"].result()
    assert run.finished and run.step == 2
    specs = {sp["layout"]["title"]["text"]: sp for sp in plotly_specs(at)}
    assert len(specs) == 3
    kl = next(sp for t, sp in specs.items() if t.startswith("KL"))
    assert {t["name"]: t["y"] for t in kl["data"]} == {k: v[1] for k, v in dpo.divergence_series(run).items()}
    win = next(sp for t, sp in specs.items() if t.startswith("win rate"))
    assert win["data"][0]["y"] == [m.win_rate for m in run.measurements]
    found = findings_text(at)
    for line in run.findings:
        assert md_escape(line) in found
    table = shown_table(at, "sg_fb_samples")
    assert list(table["after (policy)"]) == [dpo.shown(q) for _, _, q in run.samples]
    assert at.query_params["sg_fb_done"] == "1"


def test_a_persons_choices_too_few_removed_cleared_then_trained_on():
    at = opened_with({"sg_fb_mode": "Your own choices", "sg_fb_steps": "2"})
    run_until(at, busy("sg_fb_base_handle"), timeout_s=300)
    assert_clean(at)
    assert any(md_escape(dpo.choices_needed(0)) in i for i in texts(at.info))
    pair = boxed_texts(at)[:3]
    at.button(key="sg_fb_pick_a").click().run()
    assert [tuple(map(dpo.shown, c[:3])) for c in at.session_state["sg_fb_choices"]] == [tuple(pair)]
    assert at.session_state["sg_fb_choices"][0][3] == "a"
    at.button(key="sg_fb_skip").click().run()  # a skip draws a new pair and keeps nothing
    at.button(key="sg_fb_pick_b").click().run()
    assert at.session_state["sg_fb_pair"] == 3 and len(at.session_state["sg_fb_choices"]) == 2
    at.button(key="sg_fb_go").click().run()
    assert any("2 more are needed" in e for e in texts(at.error)) and "sg_fb_handle" not in at.session_state
    at.button(key="sg_fb_rm_0").click().run()
    assert [c[3] for c in at.session_state["sg_fb_choices"]] == ["b"]
    at.button(key="sg_fb_clear").click().run()
    assert at.session_state["sg_fb_choices"] == []
    for pick in "abab":
        at.button(key=f"sg_fb_pick_{pick}").click().run()
    assert not any("more are needed" in i for i in texts(at.info))
    at.button(key="sg_fb_go").click().run()
    run_until(at, busy("sg_fb_handle"), timeout_s=120)
    assert_clean(at)
    run = at.session_state["sg_fb_handle"].result()
    assert run.finished and all(h["pairs"] == 4 for h in run.history)  # every step on all four choices
    assert md_escape(dpo.mode_findings(dpo.FeedbackSettings(mode="human"), (0,) * 4)[0]) in findings_text(at)
    assert "sg_fb_done" not in at.query_params  # a person's choices cannot travel in a link


def test_bad_link_values_get_a_message_and_keep_the_defaults():
    at = opened_with({"sg_fb_beta": "7", "sg_fb_mode": "nonsense", "sg_fb_steps": "-3"})
    notice = " ".join(texts(at.warning))
    for bad in ("sg_fb_beta=7", "sg_fb_mode=nonsense", "sg_fb_steps=-3"):
        assert f"'{bad}' is not a value this control can take" in notice, notice
    assert at.session_state["sg_fb_beta"] == dpo.FeedbackSettings().beta
    assert any("Not run yet" in m.value for m in at.markdown)
