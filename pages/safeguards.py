"""Safeguards: what the claims "the model flags its uncertainty, learns from feedback, protects private
data, mitigates bias" come to at small scale, each run live on a model trained here, with what it
does and what it cannot do."""
import streamlit as st

from explorer import safeguards
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
DEFAULTS = safeguards.url_defaults()


# ---------------------------------------------------------------------------------------------- uncertainty
def uncertainty_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def uncertainty_tab() -> None:
    st.info("Uncertainty: coming in this issue.")


# ---------------------------------------------------------------------------------------------- feedback
from explorer import dpo, figures  # noqa: E402  (this tab's library)


def feedback_controls() -> dict:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""
    modes = list(dpo.MODES.values())
    values = {"sg_fb_mode": st.radio("Learn from", modes, modes.index(DEFAULTS["sg_fb_mode"]), key="sg_fb_mode",
                                     bind="query-params", horizontal=True,
                                     help="A scripted preference that runs hands-off, or your own clicks.")}
    c_b, c_l, c_s, c_seed = st.columns(4)
    values["sg_fb_beta"] = c_b.select_slider("β", dpo.BETA_CHOICES, DEFAULTS["sg_fb_beta"], key="sg_fb_beta",
                                             bind="query-params", format_func=lambda v: f"{v:g}",
                                             help="How strongly DPO keeps the policy near the reference.")
    values["sg_fb_lr"] = c_l.select_slider("Learning rate", dpo.LR_CHOICES, DEFAULTS["sg_fb_lr"], key="sg_fb_lr",
                                           bind="query-params", format_func=lambda v: f"{v:g}",
                                           help="Adam's step size for the DPO steps.")
    values["sg_fb_steps"] = c_s.select_slider("DPO steps", dpo.STEP_CHOICES, DEFAULTS["sg_fb_steps"],
                                              key="sg_fb_steps", bind="query-params")
    values["sg_fb_seed"] = c_seed.number_input("Seed", 0, 2**31 - 1, DEFAULTS["sg_fb_seed"], key="sg_fb_seed",
                                               bind="query-params",
                                               help="Seeds the DPO run's prompts and samples (not the base model).")
    return values


def feedback_start(settings, choices) -> None:
    try:
        ui.start_job("sg_fb_handle", dpo.FeedbackJob(settings, choices))
    except dpo.PreferenceError as e:
        S.sg_fb_error = str(e)


def feedback_pick(row, choice) -> None:
    """Keep a choice (or a skip: ``choice`` None) and move on to the next pair."""
    if choice is not None:
        S.setdefault("sg_fb_choices", []).append((*row, choice))
    S.sg_fb_pair = S.get("sg_fb_pair", 0) + 1


def feedback_remove(i) -> None:
    del S.sg_fb_choices[i]


def feedback_clear() -> None:
    S.sg_fb_choices = []


def feedback_choices(settings) -> tuple:
    """Human mode: a pair from the base model to judge, and the choices so far (removable)."""
    base_key = dpo.base_key(settings)
    handle, base, status = ui.current_job("sg_fb_base_handle", base_key)
    if handle is None:
        handle = ui.start_job("sg_fb_base_handle", dpo.BaseJob(settings))  # shared: trained once per server
        status = handle.status
    if status in ("queued", "running"):
        slot = st.empty()

        def draw() -> None:
            fraction, what = handle.progress()
            slot.progress(min(1.0, fraction), text=f"Training the base model first: {what}")

        ui.live(handle, draw, [slot])
    elif status != "done":
        st.error(f"The base model could not be trained: {md_escape(str(handle.error or status))}.",
                 icon=":material/error:")
    choices = tuple(S.get("sg_fb_choices", []))
    if status == "done":
        model = handle.result().model
        index = S.get("sg_fb_pair", 0)
        prompt, a, b = ui.cached("sg_fb_pairs", (base_key, settings.seed, index),
                                 lambda: dpo.draw_pair(model, settings.seed, index))
        st.markdown(f"**Pair {index + 1}.** The base model continued this Emma text twice; which continuation "
                    "is better? (Your reason is yours: shorter words, fewer e's, more sense.)")
        st.code(dpo.shown(prompt), language=None)
        c_a, c_b = st.columns(2)
        for col, name, text in ((c_a, "a", a), (c_b, "b", b)):
            col.code(dpo.shown(text), language=None)
            col.button(f"{name.upper()} is better", key=f"sg_fb_pick_{name}", on_click=feedback_pick,
                       args=((prompt, a, b), name), use_container_width=True)
        st.button("Skip (neither): draw another pair", key="sg_fb_skip", on_click=feedback_pick,
                  args=((prompt, a, b), None))
    st.markdown(f"**Your choices** ({len(choices)}; kept in this browser tab's session, not in the link)")
    for i, (prompt, a, b, choice) in enumerate(choices):
        chosen, rejected = (a, b) if choice == "a" else (b, a)
        c_t, c_r = st.columns([8, 1])
        c_t.markdown(f"{i + 1}\. after “{md_escape(dpo.shown(prompt))}”: **{md_escape(dpo.shown(chosen))}** "
                     f"over {md_escape(dpo.shown(rejected))}")
        c_r.button("Remove", key=f"sg_fb_rm_{i}", on_click=feedback_remove, args=(i,))
    if choices:
        st.button("Clear all choices", key="sg_fb_clear", on_click=feedback_clear)
    need = dpo.choices_needed(len(choices))
    if need:
        st.info(f"{md_escape(need)}.", icon=":material/touch_app:")
    return choices


def feedback_tab() -> None:
    st.markdown("**Learning from feedback** with direct preference optimisation (DPO, Rafailov et al. 2023): "
                "pairs of samples from a model, one preferred over the other, make a copy of the model (the "
                "**policy**) more likely to write the preferred kind, while a frozen copy (the **reference**) "
                "measures how far it moved. The preference is a scripted rule, or your own clicks.")
    values = feedback_controls()
    try:
        settings = dpo.settings_from(values)
    except dpo.PreferenceError as e:
        st.error(f"These settings cannot run: {md_escape(str(e))}.", icon=":material/error:")
        return
    choices = feedback_choices(settings) if settings.mode == "human" else ()
    key = dpo.feedback_key(settings, choices)
    handle, run, status = ui.current_job("sg_fb_handle", key)
    arrived = ui.arrived_to_run(PAGE, "sg_fb_done")
    if arrived and handle is None and settings.mode != "human":
        feedback_start(settings, choices)
        handle, run, status = ui.current_job("sg_fb_handle", key)
    running = status in ("queued", "running")
    status_slot = ui.job_buttons("sg_fb_handle", feedback_start, (settings, choices), running,
                                 ("sg_fb_go", "sg_fb_stop"), "Train the base model (once per server), then run DPO "
                                 "on a copy of it (the same settings run once, for everyone).", label="▶ Run DPO")
    ui.mark_finished("sg_fb_done", status == "done" and settings.mode != "human")
    if "sg_fb_error" in S:
        st.error(f"DPO cannot run yet: {md_escape(S.pop('sg_fb_error'))}.", icon=":material/error:")
    if status in ("failed", "refused"):
        st.error(f"The run could not go on: {md_escape(str(handle.error))}.", icon=":material/error:")
    progress_slot = st.empty()
    c_m, c_k = st.columns(2)
    margin_slot, kl_slot = c_m.empty(), c_k.empty()
    win_slot, samples_slot = st.empty(), st.empty()

    def draw() -> None:
        now = handle.job.live() if running else run
        if running:
            fraction, what = handle.progress()
            notice = ui.queue_notice(handle, "your run")
            status_slot.markdown(f"**Running…** {what}" + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(min(1.0, fraction), text=what)
        elif now is not None:
            status_slot.markdown(f"DPO ran {now.step} of {now.total} steps" + ("." if now.finished else
                                                                               " (stopped)."))
        else:
            status_slot.markdown("Not run yet: press **Run DPO**.")
        if now is None:
            margin_slot.info("The preference margin, the KL from the reference and the win rate appear here as "
                             "DPO runs.", icon=":material/play_arrow:")
            return
        ui.chart(figures.lines_figure(dpo.margin_series(now), "preference margin and reward accuracy", "DPO step",
                                      "margin (β · log-ratio) / accuracy", height=320), "sg_fb_margin",
                 "The mean implicit-reward margin of the chosen over the rejected completions, and the share of "
                 "pairs ranked right, at every DPO step.", slot=margin_slot)
        ui.chart(figures.lines_figure(dpo.divergence_series(now), "KL from the reference and the policy's entropy",
                                      "DPO step", "nats per token", height=320), "sg_fb_kl",
                 "KL(policy ‖ reference) and the policy's entropy, nats per token, at every measurement.",
                 slot=kl_slot)
        ui.chart(figures.lines_figure(dpo.win_series(now), f"win rate against the reference under "
                                      f"'{dpo.PREFERENCES[settings.preference].title}'", "DPO step", "share",
                                      height=320, y_range=[0, 1.02], dashed=("one half (no change)",)),
                 "sg_fb_win", "The policy's win rate against the reference and the share of distinct policy "
                 "samples at every measurement.", slot=win_slot)
        if now.samples:
            with samples_slot.container():
                st.markdown(f"**Samples before (reference) and after (policy, step "
                            f"{now.measurements[-1].step})**: the same prompts and the same random draws")
                st.table({"prompt": [dpo.shown(p) for p, _, _ in now.samples],
                          "before (reference)": [dpo.shown(r) for _, r, _ in now.samples],
                          "after (policy)": [dpo.shown(q) for _, _, q in now.samples]})

    if running:
        ui.live(handle, draw, [status_slot, progress_slot, margin_slot, kl_slot, win_slot, samples_slot])
    else:
        draw()
    if run is not None and not running and run.step:
        st.markdown("**What came out**\n" + "\n".join(f"- {md_escape(line)}" for line in run.findings))
    with st.expander("Definitions", icon=":material/info:"):
        st.markdown("\n".join(f"- {line}" for line in dpo.definitions(settings)))


# ---------------------------------------------------------------------------------------------- privacy
def privacy_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def privacy_tab() -> None:
    st.info("Privacy: coming in this issue.")


# ---------------------------------------------------------------------------------------------- bias
def bias_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def bias_tab() -> None:
    st.info("Bias: coming in this issue.")


# ---------------------------------------------------------------------------------------------- the page
st.title("Safeguards")
st.caption("Four claims made for language models, each tried on a small model trained here: that it flags its "
           "own uncertain statements, learns from human feedback, protects private data, and mitigates bias. "
           "Each tab runs the real technique and measures what it does, and what it cannot do.")

VIEWS = dict(zip(safeguards.TABS, (uncertainty_tab, feedback_tab, privacy_tab, bias_tab)))  # tab title -> its view
CONTROLS = dict(zip(safeguards.TABS, (uncertainty_controls, feedback_controls, privacy_controls, bias_controls)))
tabs = dict(zip(VIEWS, st.tabs(list(VIEWS), key="sg_tab", on_change="rerun", bind="query-params")))
for title, view in VIEWS.items():
    with tabs[title]:
        if tabs[title].open:
            view()
        else:
            CONTROLS[title]()  # a closed tab's controls are still drawn, so a link's values are kept
