"""Safeguards: what the claims "the model flags its uncertainty, learns from feedback, protects private
data, mitigates bias" come to at small scale, each run live on a model trained here, with what it
does and what it cannot do."""
import streamlit as st

from explorer import bias, figures, safeguards
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
def bias_settings_controls():
    """The training controls of the Bias tab (URL-bound); the settings they describe."""
    c1, c2, c3, c4, c5 = st.columns([3, 3, 2, 2, 1])
    skew = c1.slider("Skew: share of the target occupations' sentences that say zim", 0.0, 1.0,
                     DEFAULTS["sg_bias_skew"], step=bias.SKEW_STEP, key="sg_bias_skew", bind="query-params",
                     help="0.5 is balanced; the counter occupations say vor in the same share.")
    augment = c2.toggle("Counterfactual augmentation", DEFAULTS["sg_bias_augment"], key="sg_bias_augment",
                        bind="query-params", help="Also train a second model (same seed) on the text with every "
                        "sentence's group word swapped in a copy.")
    steps = c3.select_slider("Steps (each model)", bias.STEP_CHOICES, DEFAULTS["sg_bias_steps"], key="sg_bias_steps",
                             bind="query-params", help=f"The probes are measured every {bias.RECORD_EVERY} steps.")
    sentences = c4.select_slider("Sentences", bias.SENTENCE_CHOICES, DEFAULTS["sg_bias_sentences"],
                                 key="sg_bias_sentences", bind="query-params",
                                 help="Template sentences generated for the training text.")
    seed = c5.number_input("Seed", 0, 2**31 - 1, DEFAULTS["sg_bias_seed"], key="sg_bias_seed", bind="query-params",
                           help="Seeds the text, the weights and the training windows.")
    return bias.settings_from(skew, augment, steps, sentences, seed)


def bias_probe_controls(disabled: bool = False) -> tuple:
    """Which single probe to read (occupation and held-out template)."""
    c1, c2 = st.columns(2)
    occupations = list(bias.TARGETS + bias.COUNTERS)
    occupation = c1.selectbox("Occupation", occupations, index=occupations.index(DEFAULTS["sg_bias_occupation"]),
                              key="sg_bias_occupation", bind="query-params", disabled=disabled,
                              help=f"Target occupations: {', '.join(bias.TARGETS)}; counter: "
                                   f"{', '.join(bias.COUNTERS)}.")
    template = c2.selectbox("Probe template", list(bias.PROBE_TEMPLATES), format_func=bias.template_label,
                            index=bias.PROBE_TEMPLATES.index(DEFAULTS["sg_bias_template"]), key="sg_bias_template",
                            bind="query-params", disabled=disabled, help="Held out: never in the training text.")
    return occupation, template


def bias_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""
    bias_settings_controls()
    bias_probe_controls(disabled=True)


def bias_start(settings) -> None:
    ui.start_job("sg_bias_handle", bias.BiasJob(settings))


def bias_data(settings, data: dict) -> None:
    """The training text itself, before any training: sentences, their counterfactual copies, counts, probes."""
    with st.expander("The training text and the probe", icon=":material/description:", expanded=True):
        c1, c2 = st.columns(2)
        pairs = bias.examples(settings)
        c1.markdown("**Training sentences** (the first six generated)")
        c1.code("\n".join(a for a, _ in pairs), language=None)
        c2.markdown("**Their counterfactual copies** (the group word swapped)")
        c2.code("\n".join(b for _, b in pairs), language=None)
        st.markdown("**Counted in the training text** (the first 90 % of it; the model learns from that part):")
        st.table({"text": list(data), "target sentences": [d.a + d.b for d in data.values()],
                  "target: share saying zim": [f"{d.share_a:.1%}" for d in data.values()],
                  "counter sentences": [d.counter_a + d.counter_b for d in data.values()],
                  "counter: share saying zim": [f"{d.counter_share_a:.1%}" for d in data.values()]})
        st.markdown("**The probe** (held-out templates, cut just before the group word; the model's "
                    "log P(zim) and log P(vor) are read in that slot):  \n"
                    + "  \n".join(f"`{bias.template_label(t)}`" for t in bias.PROBE_TEMPLATES))


def bias_tab() -> None:
    st.markdown("A model learns the text it is given, including its stereotypes. Here the text is generated: "
                "sentences in which an occupation is followed by one of two invented group words, **zim** or "
                "**vor**. The slider skews how often the target occupations go with zim. A probe on sentences the "
                "model never saw measures what it learned; **counterfactual augmentation** retrains on the text "
                "plus a copy with the group words swapped.")
    settings = bias_settings_controls()
    problem = settings.problem()
    if problem:
        st.error(f"These settings cannot run: {md_escape(problem)}.", icon=":material/error:")
        bias_probe_controls(disabled=True)
        return
    data = bias.data_counts(settings)
    bias_data(settings, data)
    key = ("bias", settings)
    handle, run, status = ui.current_job("sg_bias_handle", key)
    if ui.arrived_to_run(PAGE, "sg_bias_done") and handle is None:
        bias_start(settings)
        handle, run, status = ui.current_job("sg_bias_handle", key)
    training = status in ("queued", "running")
    slot = ui.job_buttons("sg_bias_handle", bias_start, (settings,), training, ("sg_bias_go", "sg_bias_stop"),
                          "Train the model(s) on this server (the same settings train once, for everyone).")
    ui.mark_finished("sg_bias_done", status == "done")
    if status in ("failed", "refused"):
        st.error(f"The run could not go on: {md_escape(str(handle.error))}.", icon=":material/error:")
    progress_slot = st.empty()
    bars_slot = st.empty()
    c1, c2 = st.columns(2)
    steps_slot, occ_slot = c1.empty(), c2.empty()

    def draw() -> None:
        now = handle.job.live() if training else run
        if training:
            step = 0 if now is None else now.step
            notice = ui.queue_notice(handle, "your run")
            slot.markdown(f"**Training…** step {step} of {settings.steps}" + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(min(1.0, step / settings.steps), text=f"step {step} of {settings.steps} (each)")
        elif now is not None:
            slot.markdown(f"{'Finished' if now.finished else 'Stopped'} after {now.step} of {settings.steps} steps"
                          + (" each." if len(now.records) > 1 else "."))
        else:
            slot.markdown("Not trained yet: the chart shows the training text. Press **Train**.")
        groups, series = bias.share_bars(data, now)
        ui.chart(figures.bars_figure(groups, series, "share of zim: in the training text and in the model", "share "
                                     "of zim (of zim and vor)", y_range=(0, 1), marks=(0.5,)), "sg_bias_bars",
                 "Share of sentences saying zim in each training text, and each trained model's probability of zim "
                 "between the two words, for the target and the counter occupations.", slot=bars_slot)
        if now is None:
            return
        lines, dashed = bias.step_series(now)
        ui.chart(figures.lines_figure(lines, "target occupations: the model's zim against the text's",
                                      "training step", "share of zim", y_range=(0, 1), dashed=dashed),
                 "sg_bias_steps_chart", "Each model's probability of zim and share of probes preferring zim over "
                 "its training steps, beside its training text's share of zim.", slot=steps_slot)
        occs, odds = bias.occupation_log_odds(now)
        ui.chart(figures.bars_figure(occs, odds, "log-odds of zim over vor, per occupation", "log P(zim) − log P(vor)"
                                     " (nats)", marks=(0.0,)), "sg_bias_occupations",
                 "Each occupation's log-odds of zim over vor, averaged over the probe templates, for each model.",
                 slot=occ_slot)

    if training:
        ui.live(handle, draw, [slot, progress_slot, bars_slot, steps_slot, occ_slot])
    else:
        draw()
    finished_view = run is not None and not training and run.step > 0
    if finished_view:
        st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in run.findings()))
    st.subheader("One probe, read from the models")
    occupation, template = bias_probe_controls(disabled=not finished_view)
    if finished_view:
        st.dataframe(bias.probe_detail(run, occupation, template), hide_index=True, key="sg_bias_probe_table")
        st.caption("Each log-probability is the sum over the word's three characters of the model's log-probability "
                   "of that character given the probe and the characters before it (teacher-forced).")
    else:
        st.caption("When a run finishes (or you stop it), pick an occupation and a template to read log P(zim) and "
                   "log P(vor) from each model.")
    with st.expander("Definitions", icon=":material/info:"):
        st.markdown(bias.DEFINITIONS)


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
