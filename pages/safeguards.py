"""Safeguards: what the claims "the model flags its uncertainty, learns from feedback, protects private
data, mitigates bias" come to at small scale, each run live on a model trained here, with what it
does and what it cannot do."""
import streamlit as st

from explorer import bias, corpus as texts, dpo, figures, privacy, safeguards, textlm, uncertainty
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
DEFAULTS = safeguards.url_defaults()


# ---------------------------------------------------------------------------------------------- uncertainty
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
    ui.start_job("sg_unc_train", textlm.training_job(settings, corpus))


def uncertainty_tab() -> None:
    st.markdown("Does the model know when it is guessing? A character model learns Emma; each character it writes is "
                "shaded by the **entropy** of the distribution it was drawn from (or its probability), and characters "
                "above a threshold are flagged. On held-out text, a **reliability diagram** checks whether its "
                "confidence matches how often it is right, and **temperature scaling** (Guo et al. 2017) is fitted on "
                "one half of that text and judged on the other.")
    corpus = texts.builtin()
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
                             f"training {ui.where_trained(handle)}) and calibrated: the views below show the trained model.")
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
                                                    float(values["temperature"]), 0.0),
                          shared=values["prompt"] == UNC["sg_unc_prompt"])  # the example prompt: the same for all
    except (textlm.PromptError, uncertainty.UncertaintyError) as e:
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
    rel = ui.cached("sg_unc_rel", (m_key, t), lambda: m.reliability(t), shared=True)
    c1, c2 = st.columns(2)
    ui.chart(figures.reliability_figure(rel.edges, rel.confidence, rel.accuracy, rel.counts,
                                            f"reliability at T = {t:g} ({who}): ECE {rel.ece:.4f}"),
             "sg_unc_reliability_chart",
             f"Reliability diagram of {uncertainty_name(who)} at temperature {t:g}: accuracy per confidence bin "
             "against the diagonal, with bin counts.", slot=c1)
    r = m.report
    ui.chart(figures.temperature_figure(m.grid, m.grid_ece, m.grid_nll, r.fitted_t,
                                            f"ECE and NLL against temperature ({who})"),
             "sg_unc_ece_chart",
             f"ECE and NLL of {uncertainty_name(who)} on the test predictions against the temperature, the "
             "temperature fitted on the calibration split marked.", slot=c2)
    st.caption(f"{r.n_cal:,} calibration and {r.n_test:,} test predictions: the first and second halves of Emma's "
               "held-out last tenth, which training never reads. The fit minimises the NLL on the calibration half; "
               "the diagram, the curves and the table are measured on the test half.")
    st.markdown("**Temperature scaling, before and after** (T = 1 is the model's own probabilities)")
    ui.table(m.table(), "sg_unc_temps")
    report = m.at_threshold(float(values["threshold"]))
    st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in uncertainty.findings(report)))
    if who == "untrained":
        st.info(uncertainty.untrained_note(m, m.test.logits.shape[1]), icon=":material/lightbulb:")


def uncertainty_definitions() -> None:
    with st.expander("Definitions", icon=":material/info:"):
        st.markdown(uncertainty.DEFINITIONS)


# ---------------------------------------------------------------------------------------------- feedback
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
        ui.text_box(dpo.shown(prompt))
        c_a, c_b = st.columns(2)
        for col, name, text in ((c_a, "a", a), (c_b, "b", b)):
            ui.text_box(dpo.shown(text), col)
            col.button(f"{name.upper()} is better", key=f"sg_fb_pick_{name}", on_click=feedback_pick,
                       args=((prompt, a, b), name), use_container_width=True)
        st.button("Skip (neither): draw another pair", key="sg_fb_skip", on_click=feedback_pick,
                  args=((prompt, a, b), None))
    st.markdown(f"**Your choices** ({len(choices)}; kept in this browser tab's session, not in the link)")
    for i, (prompt, a, b, choice) in enumerate(choices):
        chosen, rejected = (a, b) if choice == "a" else (b, a)
        c_t, c_r = st.columns([8, 1])
        c_t.markdown(f"{i + 1}\\. after “{md_escape(dpo.shown(prompt))}”: **{md_escape(dpo.shown(chosen))}** "
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
                ui.table({"prompt": [dpo.shown(p) for p, _, _ in now.samples],
                          "before (reference)": [dpo.shown(r) for _, r, _ in now.samples],
                          "after (policy)": [dpo.shown(q) for _, _, q in now.samples]}, "sg_fb_samples")

    if running:
        ui.live(handle, draw, [status_slot, progress_slot, margin_slot, kl_slot, win_slot, samples_slot])
    else:
        draw()
    if run is not None and not running and run.step:
        st.markdown("**What came out**\n" + "\n".join(f"- {md_escape(line)}" for line in run.findings))
    with st.expander("Definitions", icon=":material/info:"):
        st.markdown("\n".join(f"- {line}" for line in dpo.definitions(settings)))


# ---------------------------------------------------------------------------------------------- privacy
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
        ui.text_box(out)
        if spans:
            ui.table(privacy.span_rows(text, spans), "sg_dp_spans")
        else:
            st.caption("It found nothing to hide in this text.")
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**What it misses** (private text it lets through)")
        ui.table(privacy.miss_rows(), "sg_dp_misses")
    with c2:
        st.markdown("**What it hides for nothing** (harmless numbers)")
        ui.table(privacy.over_rows(), "sg_dp_over")


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
        c1.markdown(f"**Training sentences** (the first {len(pairs)} generated)")
        ui.text_box("\n".join(a for a, _ in pairs), c1)
        c2.markdown("**Their counterfactual copies** (the group word swapped)")
        ui.text_box("\n".join(b for _, b in pairs), c2)
        st.markdown(f"**Counted in the training text** (the first {1 - texts.HELD_OUT:.0%} of it; the model learns from "
                    "that part):")
        ui.table({"text": list(data), "target sentences": [d.a + d.b for d in data.values()],
                  "target: share saying zim": [f"{d.share_a:.1%}" for d in data.values()],
                  "counter sentences": [d.counter_a + d.counter_b for d in data.values()],
                  "counter: share saying zim": [f"{d.counter_share_a:.1%}" for d in data.values()]}, "sg_bias_counts")
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
        ui.table(bias.probe_detail(run, occupation, template), "sg_bias_probe_table")
        st.caption(f"Each log-probability is the sum over the word's {len(bias.GROUP_A)} characters of the model's "
                   "log-probability of that character given the probe and the characters before it (teacher-forced).")
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
