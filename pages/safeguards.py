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
def feedback_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def feedback_tab() -> None:
    st.info("Feedback: coming in this issue.")


# ---------------------------------------------------------------------------------------------- privacy
from explorer import figures, privacy  # noqa: E402  (this tab's library; imported here to keep the sections apart)


def privacy_controls(box: bool = True) -> privacy.PrivacySettings:
    """This tab's controls (drawn even while another tab is open: a link's values are kept); ``box``:
    the filter's text box too (the open tab draws it further down)."""
    c1, c2, c3, c4 = st.columns(4)
    values = {
        "sg_dp_sigma": c1.number_input("Noise multiplier σ", *privacy.SIGMA_RANGE, DEFAULTS["sg_dp_sigma"], step=0.1,
                                       key="sg_dp_sigma", bind="query-params",
                                       help="The Gaussian noise's standard deviation, in units of the clip norm C."),
        "sg_dp_clip": c2.number_input("Clip norm C", *privacy.CLIP_RANGE, DEFAULTS["sg_dp_clip"], step=0.1,
                                      key="sg_dp_clip", bind="query-params",
                                      help="Each example's whole gradient is scaled down to L2 norm at most C."),
        "sg_dp_steps": c3.select_slider("Steps (each arm)", privacy.STEP_CHOICES, DEFAULTS["sg_dp_steps"],
                                        key="sg_dp_steps", bind="query-params",
                                        help="Every step is accounted for: more steps, larger ε."),
        "sg_dp_batch": c4.select_slider("Expected batch", privacy.BATCH_CHOICES, DEFAULTS["sg_dp_batch"],
                                        key="sg_dp_batch", bind="query-params",
                                        help="Poisson sampling: each window joins a step with probability "
                                             "q = batch / windows, so the drawn batch varies."),
    }
    c5, c6, c7 = st.columns(3)
    values |= {
        "sg_dp_delta": c5.select_slider("δ", privacy.DELTA_CHOICES, DEFAULTS["sg_dp_delta"], key="sg_dp_delta",
                                        bind="query-params", format_func=lambda d: f"{d:g}",
                                        help="The chance the ε bound may fail; it should be well below 1 / windows."),
        "sg_dp_times": c6.select_slider("Canary insertions", privacy.TIMES_CHOICES, DEFAULTS["sg_dp_times"],
                                        key="sg_dp_times", bind="query-params",
                                        help="How many times the secret line is put into the training text."),
        "sg_dp_seed": c7.number_input("Seed", 0, 2**31 - 1, DEFAULTS["sg_dp_seed"], key="sg_dp_seed",
                                      bind="query-params",
                                      help="Seeds the weights, the sampling, the noise and where the canary goes."),
    }
    if box:
        privacy_filter_box()
    return privacy.settings_from(values)


def privacy_filter_box() -> str:
    """The output filter's text box (drawn even while the tab is closed)."""
    return st.text_area("Text to filter", DEFAULTS["sg_dp_text"], key="sg_dp_text", bind="query-params", height=100,
                        help=f"Up to {privacy.FILTER_MAX_CHARS:,} characters; shown back as text, never as markup.")


def privacy_start(settings) -> None:
    ui.start_job("sg_dp_handle", privacy.PrivacyJob(settings))


def privacy_tab() -> None:
    st.markdown(
        "**DP-SGD** (Abadi et al. 2016): every training window's own gradient is clipped to norm C, the clipped "
        "gradients are summed, Gaussian noise of standard deviation σ·C is added, and the model steps on that. "
        "An **RDP accountant** (Mironov et al. 2019, Balle et al. 2020) turns σ, the sampling rate and the steps into "
        "the guarantee (ε, δ). The same model is trained twice on the first part of *Emma* with a secret line "
        "inserted a few times (a **canary**, Carlini et al. 2019): once with DP-SGD, once without. The per-example "
        "gradients come from `torch.func` (`functional_call` + `vmap(grad(...))`), not Opacus: no extra dependency "
        "(Opacus is not installed), and it works on this app's own model as it is, tied embedding weights included "
        "(an example's gradient sums both uses before it is clipped, so clipping sees its true norm).")
    settings = privacy_controls(box=False)
    why = privacy.problem(settings)
    if why:
        st.error(f"These settings cannot run: {md_escape(why)}.", icon=":material/error:")
        privacy_filter(privacy_filter_box())
        return
    warning = privacy.delta_warning(settings)
    if warning:
        st.warning(md_escape(warning), icon=":material/warning:")
    q, dp = privacy.sampling_rate(settings), settings.dp
    eps = privacy.epsilon_now(settings)
    st.markdown(f"**Before any training**: these settings give ε = {eps:.2f} at δ = {dp.delta:g} (q = {q:.4f}, "
                f"{dp.batch_size} of {privacy.setup(settings.canary).examples:,} windows a step on average, "
                f"{dp.steps:,} steps). ε depends only on σ, q, the steps and δ, never on the text, so the accountant "
                "can tell it before a step is taken.")
    ui.chart(figures.lines_figure(privacy.epsilon_series(q, dp.noise_multiplier, dp.delta, dp.steps),
                                  f"ε against steps at δ = {dp.delta:g}, q = {q:.4f} (the chosen {dp.steps} steps "
                                  "marked)", "steps", "ε", log_x=True, log_y=True, height=340, marks=(dp.steps,)),
             "sg_dp_epsilon", "The accountant's ε against the number of steps for the chosen noise multiplier, half "
             "of it and twice it; the chosen steps marked.")

    key = ("privacy", settings)
    handle, run, status = ui.current_job("sg_dp_handle", key)
    if ui.arrived_to_run(PAGE, "sg_dp_done") and handle is None:
        privacy_start(settings)
        handle, run, status = ui.current_job("sg_dp_handle", key)
    training = status in ("queued", "running")
    slot = ui.job_buttons("sg_dp_handle", privacy_start, (settings,), training, ("sg_dp_go", "sg_dp_stop"),
                          "Train both models in turns on this server (the same settings train once, for everyone).",
                          label="▶ Compare")
    ui.mark_finished("sg_dp_done", status == "done")
    if status in ("failed", "refused"):
        st.error(f"The comparison could not go on: {md_escape(str(handle.error))}.", icon=":material/error:")
    progress_slot, loss_slot = st.empty(), st.empty()
    uniform = privacy.setup(settings.canary).corpus.uniform_loss()

    def draw() -> None:
        now = handle.job.live() if training else run
        if training:
            fraction, what = handle.progress()
            notice = ui.queue_notice(handle, "your comparison")
            slot.markdown(f"**Comparing…** {what}" + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(min(1.0, fraction), text=what)
        elif now is not None:
            slot.markdown(f"{'Finished' if now.finished else 'Stopped'} after {now.step} of {dp.steps} steps each.")
        if now is None:
            loss_slot.info("Press **Compare**: the held-out loss of both models against steps appears here, then the "
                           "canary's exposure in each.", icon=":material/play_arrow:")
            return
        series = now.series() | {"learned nothing (ln vocabulary)": ([0, dp.steps], [round(uniform, 4)] * 2)}
        ui.chart(figures.lines_figure(series, "held-out loss against steps (the utility cost of DP)", "step (each arm)",
                                      "held-out loss (nats per character)", height=340,
                                      dashed=("learned nothing (ln vocabulary)",)), "sg_dp_loss",
                 "Held-out loss of the model trained with DP-SGD and of the one trained without, against steps.",
                 slot=loss_slot)

    if training:
        ui.live(handle, draw, [slot, progress_slot, loss_slot])
    else:
        draw()
    if run is not None and run.finished and not training:
        privacy_results(run)
    privacy_filter(privacy_filter_box())


def privacy_results(run) -> None:
    """The finished comparison: ε, exposures, held-out losses, the candidates' histograms, the findings."""
    c = run.comparison
    m = st.columns(3)
    m[0].metric("ε (DP arm)", f"{c.dp.epsilon:.2f}", help=f"At δ = {c.dp.settings.delta:g}, for one training window.")
    m[1].metric("Exposure without DP", f"{c.plain_exposure.exposure:.2f} bits",
                help=f"The most possible here: {c.plain_exposure.max_exposure:.2f} bits.")
    m[2].metric("Exposure with DP", f"{c.dp_exposure.exposure:.2f} bits")
    m = st.columns(4)
    m[0].metric("δ", f"{c.dp.settings.delta:g}")
    m[1].metric("Held-out loss without DP", f"{c.plain_held_out:.3f}", help="Nats per character.")
    m[2].metric("Held-out loss with DP", f"{c.dp_held_out:.3f}", help="Nats per character.")
    m[3].metric("Gradients clipped", f"{c.dp.clipped_share:.0%}",
                help=f"Share of the DP arm's per-example gradients longer than C = {c.dp.settings.clip:g}.")
    cols = st.columns(2)
    for col, arm, e in zip(cols, privacy.ARMS, (c.dp_exposure, c.plain_exposure)):
        with col:
            ui.chart(privacy.exposure_figure(run.scores[arm], f"{arm}: exposure {e.exposure:.2f} of at most "
                                             f"{e.max_exposure:.2f} bits", e), f"sg_dp_exposure_{arm.split()[0]}",
                     f"Histogram of every candidate secret's log-perplexity under the model trained {arm}, the "
                     "inserted secret marked.")
    st.caption("Each candidate is a secret of the same format (5 digits from those the text holds); its "
               "log-perplexity is −Σ log p of its characters after \"my PIN is \". Exposure = log2(candidates) − "
               "log2(the secret's rank): 0 bits when the secret is the least likely, the most when it is the likeliest.")
    st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in run.findings()))


def privacy_filter(text: str) -> None:
    """The output filter: a separate, weaker safeguard, with what it catches and what it misses."""
    st.subheader("An output filter: a separate, weaker safeguard")
    st.markdown("A filter on what the model writes, not on how it learned: regular expressions replace e-mail-like "
                "and number-like spans with [REDACTED]. It promises nothing: a secret written another way passes, "
                "and harmless numbers are hidden too. Both tables below come from running the filter.")
    why = privacy.filter_problem(text)
    if why:
        st.warning(f"Nothing filtered: {md_escape(why)}.", icon=":material/edit_off:")
    else:
        out, spans = privacy.redact(text)
        st.markdown("**The filter's output**")
        st.code(out, language=None, wrap_lines=True)
        if spans:
            st.dataframe(privacy.span_rows(text, spans), hide_index=True, key="sg_dp_spans")
        else:
            st.caption("It found nothing to hide in this text.")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**What it misses** (private text it lets through)")
        st.dataframe(privacy.miss_rows(), hide_index=True, key="sg_dp_misses")
    with c2:
        st.markdown("**What it hides for nothing** (harmless numbers)")
        st.dataframe(privacy.over_rows(), hide_index=True, key="sg_dp_over")


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
