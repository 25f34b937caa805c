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
from explorer import corpus as unc_texts, figures as unc_figures, textlm as unc_textlm, uncertainty  # noqa: E402

UNC = uncertainty.DEFAULTS


def uncertainty_controls(disabled: bool = False) -> dict:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""
    c1, c2 = st.columns(2)
    values = {
        "steps": c1.select_slider("Training steps", uncertainty.STEP_CHOICES, UNC["sg_unc_steps"], key="sg_unc_steps",
                                  bind="query-params", disabled=disabled,
                                  help="Steps of the Training page's character model on Emma (its other settings at "
                                       "their defaults there)."),
        "windows": c2.select_slider("Held-out windows per split", uncertainty.WINDOW_CHOICES, UNC["sg_unc_windows"],
                                    key="sg_unc_windows", bind="query-params", disabled=disabled,
                                    help="Non-overlapping 64-character windows of each half of the held-out text; "
                                         "every position of a window is one prediction."),
    }
    c_p, c_n = st.columns([3, 1])
    values["prompt"] = c_p.text_input("Prompt", key="sg_unc_prompt", value=UNC["sg_unc_prompt"], bind="query-params",
                                      disabled=disabled, max_chars=300, placeholder="empty: start from a new line",
                                      help="Only characters that Emma uses.")
    values["chars"] = c_n.select_slider("Characters to write", uncertainty.CHARS_CHOICES, UNC["sg_unc_chars"],
                                        key="sg_unc_chars", bind="query-params", disabled=disabled)
    c_t, c_h, c_b = st.columns(3)
    values["temperature"] = c_t.slider("Sampling temperature", 0.0, 2.0, UNC["sg_unc_temperature"], step=0.1,
                                       key="sg_unc_temperature", bind="query-params", disabled=disabled,
                                       help="0 always takes the likeliest character; the entropy shown is that of the "
                                            "distribution each character was drawn from.")
    values["threshold"] = c_h.slider("Flag above entropy (nats)", 0.0, 4.5, UNC["sg_unc_threshold"], step=0.1,
                                     key="sg_unc_threshold", bind="query-params", disabled=disabled,
                                     help="Characters drawn from a distribution with more entropy than this are "
                                          "outlined.")
    values["by"] = c_b.radio("Shade by", uncertainty.SHADE_BY, key="sg_unc_by", bind="query-params", horizontal=True,
                             disabled=disabled, help="Entropy: darker is less sure. Probability: darker is surer.")
    values["rel_t"] = st.select_slider("Temperature of the reliability diagram", uncertainty.RELIABILITY_TEMPERATURES,
                                       UNC["sg_unc_rel_t"], key="sg_unc_rel_t", bind="query-params",
                                       disabled=disabled, format_func=lambda t: f"{t:g}",
                                       help="The held-out predictions' logits are divided by this before the softmax.")
    return values


def uncertainty_start(settings, corpus) -> None:
    ui.start_job("sg_unc_train", unc_textlm.training_job(settings, corpus))


def uncertainty_tab() -> None:
    st.markdown("Does the model know when it is guessing? A character model learns Emma; each character it writes is "
                "shaded by the **entropy** of the distribution it was drawn from (or its probability), and characters "
                "above a threshold are flagged. On held-out text, a **reliability diagram** checks whether its "
                "confidence matches how often it is right, and **temperature scaling** (Guo et al. 2017) is fitted on "
                "one half of that text and judged on the other.")
    corpus = unc_texts.builtin()
    intro = st.container()
    values = uncertainty_controls()
    settings = uncertainty.model_settings(corpus, int(values["steps"]))
    windows = int(values["windows"])
    query = uncertainty.training_page_query(settings.steps)
    if query is not None:
        intro.caption(f"This model is the Training page's run at {settings.steps} steps with every other setting at "
                      f"its default there ([open it](/training{query})): the same run, trained once on this server for "
                      "both pages" + (" (700 steps is that page's default)." if query == "" else "."))
    handle, run, t_status = ui.current_job("sg_unc_train", ("textlm", settings))
    if ui.arrived_to_run(PAGE, "sg_unc_done") and handle is None:
        uncertainty_start(settings, corpus)
        handle, run, t_status = ui.current_job("sg_unc_train", ("textlm", settings))
    cal_key = uncertainty.calibration_key(settings, windows)
    c_handle, measured, c_status = ui.current_job("sg_unc_cal", cal_key)
    if t_status == "done" and c_handle is None:  # trained: measure it (shared by key, like the run)
        ui.start_job("sg_unc_cal", uncertainty.calibration_job(handle.result(), settings, corpus, windows))
        c_handle, measured, c_status = ui.current_job("sg_unc_cal", cal_key)
    busy = t_status in ("queued", "running") or c_status in ("queued", "running")
    status_slot = ui.job_buttons("sg_unc_train", uncertainty_start, (settings, corpus), busy, ("sg_unc_go", "sg_unc_stop"),
                                 "Train the model on this server, then measure its calibration (the same settings "
                                 "train once, for everyone).")
    ui.mark_finished("sg_unc_done", c_status == "done")
    for h, what in ((handle, "training"), (c_handle, "calibration")):
        if h is not None and h.status in ("failed", "refused"):
            st.error(f"The {what} could not go on: {md_escape(str(h.error))}.", icon=":material/error:")
    progress_slot = st.empty()

    def draw_status() -> None:
        if handle is not None and handle.active:
            now = handle.job.live()
            step = now.step if now is not None else 0
            notice = ui.queue_notice(handle, "your run")
            status_slot.markdown(f"**Training…** step {step} of {settings.steps}" + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(step / settings.steps, text=f"step {step}/{settings.steps}")
        elif c_handle is not None and c_handle.active:
            notice = ui.queue_notice(c_handle, "the calibration")
            status_slot.markdown(f"**Calibrating…** on {windows} held-out windows per split."
                                 + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(1.0, text=f"trained {settings.steps} steps; calibrating")

    if busy:
        ui.live([h for h in (handle, c_handle) if h is not None], draw_status, [status_slot, progress_slot])
    elif measured is not None:
        status_slot.markdown(f"Trained {settings.steps} of {settings.steps} steps ({measured.train_seconds:.1f} s of "
                             "training on this server) and calibrated: the views below show the trained model.")
    elif run is not None and not run.finished:
        status_slot.markdown(f"Stopped at step {run.step} of {settings.steps}: the calibration measures a finished run. "
                             "The views below show the untrained model.")
    else:
        status_slot.markdown("Not trained yet: the views below show the **untrained** model (random weights, measured "
                             f"on {uncertainty.UNTRAINED_WINDOWS} windows per split). Press **Train**: it trains, then calibrates.")
    if measured is not None and not busy:
        shown, model_key, who = measured, settings, f"after {settings.steps} steps"
    else:
        shown, model_key, who = uncertainty.untrained(corpus), "untrained", "untrained"  # who: the charts' titles
    model = shown.model
    uncertainty_text(model, model_key, corpus, values, who)
    uncertainty_calibration(shown, (model_key, windows), values, who)
    uncertainty_definitions()


def uncertainty_name(who: str) -> str:
    return "the untrained model" if who == "untrained" else f"the model {who}"


def uncertainty_text(model, model_key, corpus, values: dict, who: str) -> None:
    st.subheader("What it writes, and how sure it was")
    threshold = float(values["threshold"])
    try:
        infos = ui.cached("sg_unc_written", (model_key, values["prompt"], int(values["chars"]),
                                             float(values["temperature"])),
                          lambda: uncertainty.write(model, corpus, values["prompt"], int(values["chars"]),
                                                    float(values["temperature"]), 0.0))
    except (unc_textlm.PromptError, uncertainty.UncertaintyError) as e:
        st.warning(f"Nothing written: {md_escape(str(e))}.", icon=":material/edit_off:")
        return
    infos = uncertainty.flagged_at(infos, threshold)
    st.html(uncertainty.uncertainty_html(infos, values["by"]))
    t = float(values["temperature"])
    st.caption(f"{len(infos)} characters written after the prompt by {uncertainty_name(who)} "
               + ("(always the likeliest)" if t == 0 else f"at temperature {t:g}") + ", shaded by "
               + ("entropy (darker: less sure)" if values["by"] == "entropy" else "probability (darker: surer)")
               + "; flagged characters are outlined. Hover a character for its numbers.")
    st.markdown(uncertainty.flag_summary(infos, threshold, corpus.vocab_size))


def uncertainty_calibration(m, m_key, values: dict, who: str) -> None:
    st.subheader("Calibration on held-out text")
    t = float(values["rel_t"])
    rel = ui.cached("sg_unc_rel", (m_key, t), lambda: m.reliability(t))
    c1, c2 = st.columns(2)
    ui.chart(unc_figures.reliability_figure(rel.edges, rel.confidence, rel.accuracy, rel.counts,
                                            f"reliability at T = {t:g} ({who}): ECE {rel.ece:.4f}"),
             "sg_unc_reliability_chart",
             f"Reliability diagram of {uncertainty_name(who)} at temperature {t:g}: accuracy per confidence bin "
             "against the diagonal, with bin counts.", slot=c1)
    r = m.report
    ui.chart(unc_figures.temperature_figure(m.grid, m.grid_ece, m.grid_nll, r.fitted_t,
                                            f"ECE and NLL against temperature ({who})"),
             "sg_unc_ece_chart",
             f"ECE and NLL of {uncertainty_name(who)} on the test predictions against the temperature, the "
             "temperature fitted on the calibration split marked.", slot=c2)
    st.caption(f"{r.n_cal:,} calibration and {r.n_test:,} test predictions: the first and second halves of Emma's "
               "held-out last tenth, which training never reads. The fit minimises the NLL on the calibration half; "
               "the diagram, the curves and the table are measured on the test half.")
    st.markdown("**Temperature scaling, before and after** (T = 1 is the model's own probabilities)")
    st.table(m.table())
    report = m.at_threshold(float(values["threshold"]))
    st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in uncertainty.findings(report)))
    if who == "untrained":
        st.info(uncertainty.untrained_note(m, m.test.logits.shape[1]), icon=":material/lightbulb:")


def uncertainty_definitions() -> None:
    with st.expander("Definitions", icon=":material/info:"):
        st.markdown(uncertainty.DEFINITIONS)


# ---------------------------------------------------------------------------------------------- feedback
def feedback_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def feedback_tab() -> None:
    st.info("Feedback: coming in this issue.")


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
