"""Training: a character-level language model trained live on a novel or on your own text, with the
held-out loss, the learning-rate schedule, samples as it trains, and the attention of what it writes."""
import streamlit as st

from explorer import corpus as texts, device, figures, methods, textlm, train_ddp
from explorer.checkpoint import CheckpointError
from explorer.attention import ATTENTION
from explorer.encodings import ENCODINGS
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = textlm.TextSettings()
DEFAULTS = textlm.url_defaults()


@st.cache_resource(max_entries=8)
def untrained(settings, _corpus):
    """The model before training, measured once: seeded, read-only, the same for everyone (the
    settings name the corpus by its digest)."""
    return textlm.untrained_run(settings, _corpus)


def take_upload(upload) -> None:
    """Read a newly uploaded file once; a bad one leaves the text (and any model) there was."""
    if upload is None or S.get("tr_upload_seen") == upload.file_id:
        return
    S.tr_upload_seen = upload.file_id
    try:
        S.tr_own = texts.from_bytes(upload.getvalue(), upload.name)
        S.tr_upload_error = None
    except texts.CorpusError as e:
        S.tr_upload_error = str(e)


def choose_corpus() -> texts.Corpus:
    """The text choice above the tabs (every tab trains on it): the built-in novel or an upload."""
    source = st.radio("Text to learn from", textlm.SOURCES, key="tr_source", bind="query-params", horizontal=True,
                      help="A public-domain novel shipped with the app, or a text file of your own.")
    own = None
    if source == textlm.SOURCES[1]:
        upload = st.file_uploader(
            f"Your text: a UTF-8 .txt file, at least {texts.MIN_CHARS:,} characters and at most "
            f"{texts.MAX_BYTES / 1e6:.0f} MB", type=["txt"], key="tr_upload",
            max_upload_size=round(texts.MAX_BYTES / 1e6),
            help="Read on this server, never stored on disk; one token per distinct character.")
        take_upload(upload)
        own = S.get("tr_own")
        if S.get("tr_upload_error"):
            kept = (f"The text before it ({md_escape(own.title)}) and any model trained on it are kept."
                    if own is not None else "Emma is used meanwhile.")
            st.error(f"That file was not taken: {md_escape(S.tr_upload_error)}. {kept}", icon=":material/error:")
        st.caption("An uploaded text stays in this browser tab's session on this server and cannot travel in a link: "
                   "a copied link reopens every setting of this page, but on Emma until the text is uploaded again.")
        if own is None:
            st.info("No text of yours yet: upload one above. Meanwhile the page shows Emma.", icon=":material/upload:")
    corpus = own or texts.builtin()
    st.caption(f"**{md_escape(corpus.title)}**: {len(corpus.text):,} characters, {corpus.vocab_size} distinct (one token "
               f"each); the last {len(corpus.held_out):,} are held out to measure the model. Runs on: "
               f"**{device.describe(textlm.run_device())}**.")
    return corpus


def sidebar_settings(corpus: texts.Corpus) -> textlm.TextSettings:
    """The model and training controls (bound to the URL), as settings naming ``corpus``."""
    with st.sidebar:
        st.header("Model")
        layers = st.slider("Layers", *textlm.LAYER_RANGE, D.n_layer, key="tr_layers", bind="query-params",
                           help="Transformer blocks.")
        heads = st.select_slider("Heads", textlm.HEAD_CHOICES, D.n_head, key="tr_heads", bind="query-params",
                                 help="Attention heads per block; they must divide the width.")
        width = st.select_slider("Width", textlm.WIDTH_CHOICES, D.n_embd, key="tr_width", bind="query-params",
                                 help="The residual stream's width (n_embd).")
        context = st.select_slider("Context (characters)", textlm.CONTEXT_CHOICES, D.context, key="tr_context",
                                   bind="query-params", help="How many characters the model reads at once.")
        kinds = ATTENTION.names()
        attention = st.selectbox("Attention", kinds, index=kinds.index(D.attention), key="tr_attention",
                                 bind="query-params", help="How each character reads the ones before it.")
        encodings = ENCODINGS.names()
        encoding = st.selectbox("Positional encoding", encodings, index=encodings.index(D.encoding),
                                key="tr_encoding", bind="query-params", help="How a character knows where it is.")
        st.header("Training")
        batch = st.select_slider("Batch (windows per step)", textlm.BATCH_CHOICES, D.batch_size, key="tr_batch",
                                 bind="query-params", help="Random windows of the training text per step.")
        lr = st.select_slider("Peak learning rate", textlm.LR_CHOICES, D.lr, key="tr_lr", bind="query-params",
                              format_func=lambda v: f"{v:g}",
                              help=f"AdamW's rate after {D.warmup} warm-up steps; it then decays to a tenth.")
        steps = st.select_slider("Training steps", textlm.STEP_CHOICES, D.steps, key="tr_steps", bind="query-params",
                                 help=f"The held-out loss and a sample are measured every {D.every} steps.")
        seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="tr_seed", bind="query-params",
                               help="Seeds the weights and the training windows: the same seed, the same run.")
    return textlm.settings_for(corpus, n_layer=int(layers), n_head=int(heads), n_embd=int(width), context=int(context),
                               attention=attention, encoding=encoding, batch_size=int(batch), lr=float(lr),
                               steps=int(steps), seed=int(seed))


def start(settings, corpus) -> None:
    ui.start_job("tr_handle", textlm.training_job(settings, corpus))


# ---------------------------------------------------------------------------------------------- train on text
def train_on_text(corpus: texts.Corpus, settings: textlm.TextSettings) -> None:
    problem = settings.problem(corpus.vocab_size)
    if problem:
        st.error(f"These settings cannot make a model: {md_escape(problem)}.", icon=":material/error:")
        return
    key = ("textlm", settings)
    handle, run, status = ui.current_job("tr_handle", key)
    if ui.arrived_to_run(PAGE, "tr_trained") and handle is None:
        start(settings, corpus)
        handle, run, status = ui.current_job("tr_handle", key)
    training = status in ("queued", "running")
    status_slot = ui.job_buttons("tr_handle", start, (settings, corpus), training, ("tr_train", "tr_stop"),
                                 "Train on this server (the same settings on the same text train once, for everyone).")
    ui.mark_finished("tr_trained", status == "done")
    if status in ("failed", "refused"):
        st.error(f"The run could not go on: {md_escape(str(handle.error))}.", icon=":material/error:")
    progress_slot = st.empty()
    c_loss, c_lr = st.columns([3, 2])
    loss_slot, lr_slot = c_loss.empty(), c_lr.empty()
    samples_slot = st.empty()
    before = untrained(settings, corpus)

    def draw(now) -> None:
        now = now or before
        if training:
            notice = ui.queue_notice(handle, "your run")
            status_slot.markdown(f"**Training…** step {now.step} of {settings.steps}" + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(now.step / settings.steps, text=f"step {now.step}/{settings.steps}")
        else:
            status_slot.markdown(f"Trained {now.step} of {settings.steps} steps." if now.step else
                                 "Not trained yet: the charts show the untrained model. Press **Train**.")
        ui.chart(figures.lines_figure(textlm.loss_series(now, corpus), "loss on the text", "training step",
                                      "loss (nats per character)", height=340, dashed=(textlm.UNIFORM,),
                                      plain=(textlm.TRAIN_LOSS,)), "tr_loss",
                 "Train loss of every batch and held-out loss of every measurement against the training step, beside "
                 "the loss of a uniform guess.", slot=loss_slot)
        ui.chart(figures.lines_figure(textlm.schedule_series(settings), f"learning rate (step {now.step} marked)",
                                      "training step", "learning rate", height=340, plain=("learning rate",),
                                      marks=(now.step,)), "tr_lr_schedule",
                 "The learning rate of every step: linear warm-up, then cosine decay; the current step marked.",
                 slot=lr_slot)
        with samples_slot.container():
            st.markdown(f"**Samples as it trains** (newest first; each starts from "
                        f"{md_escape(textlm.probe_start_words(corpus))}, temperature {settings.sample_temperature:g})")
            for step, text in textlm.samples(now):
                st.caption(f"step {step}")
                ui.text_box(text)

    if training:
        ui.live(handle, lambda: draw(handle.job.live()), [status_slot, progress_slot, loss_slot, lr_slot, samples_slot])
    else:
        draw(run)
    shown = run if run is not None and not training else before
    if shown.step:
        st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in textlm.findings(shown, corpus)))
    write_with(shown, corpus, settings, key, training)
    with st.expander("Definitions", icon=":material/info:"):
        st.markdown(
            "- **Loss**: the cross-entropy of the next character, in nats (divide by ln 2 for bits). A model that "
            "knows nothing gives every character the same chance and scores ln(vocabulary).\n"
            f"- **Held-out loss**: the same on {settings.eval_batches} × {settings.batch_size} fixed windows of the "
            "last tenth of the text, which training never reads: what the model learned that carries over to new "
            "text. The train loss is measured on each training batch as it is learned from.\n"
            f"- **Schedule**: the learning rate climbs linearly for {settings.warmup} steps, then falls along a cosine "
            "to a tenth of its peak at the last step (AdamW, gradients clipped to norm 1).\n"
            "- **Temperature** divides the scores before the softmax: below 1 the likely characters get likelier, "
            "above 1 the draws get wilder; 0 always takes the likeliest. **Top-k** draws only among the k likeliest.\n"
            f"- **Writing past the context**: the model reads at most {settings.context} characters; to write more it "
            "re-reads only its last ones (as nanoGPT's sampler does).")


def write_controls(corpus, disabled: bool = False) -> tuple:
    """The sampling controls (always drawn: disabled while nothing can be written)."""
    c_p, c_n = st.columns([3, 1])
    prompt = c_p.text_input("Prompt", key="tr_prompt", bind="query-params", disabled=disabled, max_chars=500,
                            placeholder=f"empty: start from {textlm.probe_start_words(corpus)}",
                            help=f"Only characters of the text ({corpus.vocab_size} of them).")
    n = c_n.slider("Characters to write", 20, 1000, DEFAULTS["tr_chars"], step=10, key="tr_chars", bind="query-params",
                   disabled=disabled)
    c_t, c_k, c_s = st.columns(3)
    temperature = c_t.slider("Temperature", 0.0, 2.0, DEFAULTS["tr_temperature"], step=0.1, key="tr_temperature",
                             bind="query-params", disabled=disabled, help="0 always takes the likeliest character.")
    top_k = c_k.select_slider("Top-k", textlm.TOP_K_CHOICES, DEFAULTS["tr_top_k"], key="tr_top_k",
                              bind="query-params", disabled=disabled, format_func=lambda k: "all" if k == 0 else str(k),
                              help="Draw only among the k likeliest characters (all: no limit).")
    seed = c_s.number_input("Sample seed", 0, 2**31 - 1, DEFAULTS["tr_sample_seed"], key="tr_sample_seed",
                            bind="query-params", disabled=disabled, help="The same seed writes the same text.")
    return prompt, n, temperature, top_k, seed


def head_controls(settings, disabled: bool = False) -> tuple:
    """The layer and head whose attention is drawn."""
    for name, count in (("tr_layer", settings.n_layer), ("tr_head", settings.n_head)):
        if S.get(name, 0) >= count:
            S[name] = 0  # fewer layers or heads than the link's
    c_l, c_h = st.columns(2)
    return (c_l.selectbox("Layer", list(range(settings.n_layer)), key="tr_layer", bind="query-params", disabled=disabled),
            c_h.selectbox("Head", list(range(settings.n_head)), key="tr_head", bind="query-params", disabled=disabled))


def write_with(shown, corpus, settings, key, training) -> None:
    """A sample from the model shown, with temperature and top-k, and the attention that wrote it."""
    st.subheader("Write with the model")
    if training:
        st.caption("When training ends (or you stop it), write with the model here and see its attention.")
        write_controls(corpus, disabled=True)
        head_controls(settings, disabled=True)
        return
    prompt, n, temperature, top_k, seed = write_controls(corpus)
    try:
        gen = ui.cached("tr_samples", (key, shown.step, prompt, int(n), float(temperature), int(top_k), int(seed)),
                        lambda: textlm.sample(shown.model, corpus, prompt, int(n), float(temperature), int(top_k),
                                              int(seed)))
    except textlm.PromptError as e:
        st.warning(f"Nothing written: {md_escape(str(e))}.", icon=":material/edit_off:")
        head_controls(settings, disabled=True)
        return
    written = corpus.tokenizer.decode(gen.ids)
    ui.text_box(written)
    st.caption(f"The prompt, then {len(gen.text)} characters written by the model "
               + ("after training" if shown.step else "before training (random weights)")
               + (", always the likeliest" if temperature == 0 else
                  f" at temperature {temperature:g}" + (f", top-{top_k}" if top_k else "")) + ".")

    maps = ui.cached("tr_maps", (key, shown.step, tuple(gen.ids)),
                     lambda: textlm.sample_attention(shown.model, corpus, gen.ids))
    layer, head = head_controls(settings)
    T = len(maps["tokens"])
    ui.chart(figures.attention_heatmap(maps["patterns"][layer, head], maps["tokens"],
                                       f"layer {layer}, head {head}: the last {T} characters of the sample", height=560),
             "tr_attention_map", f"Attention of layer {layer}, head {head} over the last {T} characters of the sample.")
    with st.expander("Every head", icon=":material/grid_view:"):
        ui.chart(figures.attention_grid(maps["patterns"], maps["tokens"]), "tr_attention_grid",
                 "Every layer's and head's attention over the last characters of the sample.")
    st.caption(f"Rows are the characters reading (queries), columns those read (keys), over the last {T} characters "
               "the model read when it wrote the sample's last one.")


# ---------------------------------------------------------------------------------------------- comparisons
def start_comparison(name, settings, corpus) -> None:
    ui.start_job(name, methods.job(settings, corpus))


def comparison(name: str, flag: str, settings, corpus, keys: tuple, help: str):
    """Compare/Stop for a comparison job; ``(handle, run, training, progress)`` (run: live, finished or
    stopped; progress: a slot for the progress bar the live view redraws while it runs)."""
    key = (methods.JOBS[type(settings)].kind, settings)  # the job's key
    handle, run, status = ui.current_job(name, key)
    if ui.arrived_to_run(PAGE, flag) and handle is None:
        start_comparison(name, settings, corpus)
        handle, run, status = ui.current_job(name, key)
    training = status in ("queued", "running")
    slot = ui.job_buttons(name, start_comparison, (name, settings, corpus), training, keys, help, label="▶ Compare")
    ui.mark_finished(flag, status == "done")
    if status in ("failed", "refused"):
        st.error(f"The comparison could not go on: {md_escape(str(handle.error))}.", icon=":material/error:")
    if training:
        notice = ui.queue_notice(handle, "your comparison")
        slot.markdown(f"**Comparing…** {handle.progress()[1]}" + (f"  \n{notice}" if notice else ""))
    elif run is not None:
        slot.markdown(f"{'Finished' if run.finished else 'Stopped'} after {run.step} of {settings.steps} steps each.")
    return handle, run, training, st.empty()


def show_progress(slot, now, settings) -> None:
    """The comparison's progress bar (while it runs): steps each arm has trained."""
    step = 0 if now is None else now.step
    slot.progress(min(1.0, step / settings.steps), text=f"step {step} of {settings.steps} (each)")


def show_findings(run) -> None:
    st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in run.findings()))


def curriculum_controls(corpus: texts.Corpus):
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""
    c1, c2, c3, c4, c5 = st.columns(5)
    values = {
        "tr_cur_steps": c1.select_slider("Steps (each)", methods.STEP_CHOICES, DEFAULTS["tr_cur_steps"], key="tr_cur_steps",
                                         bind="query-params", help="Training steps of each of the two models."),
        "tr_cur_length": c2.select_slider("Full length", methods.LENGTH_CHOICES, DEFAULTS["tr_cur_length"],
                                          key="tr_cur_length", bind="query-params",
                                          help="Characters per sequence at the end (the model's context)."),
        "tr_cur_start": c3.select_slider("Start length", methods.START_CHOICES, DEFAULTS["tr_cur_start"],
                                         key="tr_cur_start", bind="query-params",
                                         help="The curriculum's first sequence length."),
        "tr_cur_fraction": c4.slider("Growth fraction", *methods.FRACTION_RANGE, DEFAULTS["tr_cur_fraction"], step=0.1,
                                     key="tr_cur_fraction", bind="query-params",
                                     help="Share of the steps over which the length grows to the full length."),
        "tr_cur_encoding": c5.selectbox("Positional encoding", ENCODINGS.names(),
                                        index=ENCODINGS.names().index(DEFAULTS["tr_cur_encoding"]), key="tr_cur_encoding",
                                        bind="query-params", help="Learned position rows beyond the lengths trained "
                                        "so far stay untrained; RoPE has no such rows."),
    }
    settings = methods.settings_from(methods.CurriculumSettings, corpus, values, methods.CURRICULUM_CONTROLS)
    return settings


def curriculum_tab(corpus: texts.Corpus, _settings) -> None:
    st.markdown("The same seeded model trained twice on the text chosen above: once with short sequences growing to "
                "the full length (a **sequence-length curriculum**, Li et al. 2022), once at the full length "
                "throughout. Both are measured on the same held-out windows at the full length.")
    settings = curriculum_controls(corpus)
    problem = settings.problem(corpus.vocab_size)
    if problem:
        st.error(f"These settings cannot compare: {md_escape(problem)}.", icon=":material/error:")
        return
    handle, run, training, progress_slot = comparison("tr_cur_handle", "tr_cur_done", settings, corpus,
                                                      ("tr_cur_go", "tr_cur_stop"),
                                                      "Train both models in turns on this server.")
    c_s, c_l = st.columns([2, 3])
    sched_slot, loss_slot = c_s.empty(), c_l.empty()
    steps = list(range(settings.steps))

    def draw() -> None:
        now = handle.job.live() if training else run
        if training:
            show_progress(progress_slot, now, settings)
        ui.chart(figures.lines_figure({"curriculum": (steps, settings.curriculum.schedule(settings.length,
                                                                                          settings.steps)),
                                       "fixed length": (steps, [settings.length] * settings.steps)},
                                      "sequence length at each step", "training step", "sequence length",
                                      height=340, plain=("curriculum", "fixed length")), "tr_cur_schedule",
                 "The sequence length of every training step, for the curriculum and at fixed length.",
                 slot=sched_slot)
        series = now.series() if now is not None else {}
        if series:
            ui.chart(figures.lines_figure(series, "held-out loss against training time", "training seconds",
                                          "held-out loss (nats per character)", height=340), "tr_cur_loss",
                     "Held-out loss of both models against their own training seconds.", slot=loss_slot)
        else:
            loss_slot.info("Press **Compare**: the held-out loss of both models against training time appears here.",
                           icon=":material/play_arrow:")

    if training:
        ui.live(handle, draw, [progress_slot, sched_slot, loss_slot])
    else:
        draw()
    if run is not None and not training and run.step:
        show_findings(run)


def precision_controls(corpus: texts.Corpus):
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""
    values = {"tr_prec_steps": st.select_slider("Steps (each)", methods.STEP_CHOICES, DEFAULTS["tr_prec_steps"],
                                                key="tr_prec_steps", bind="query-params",
                                                help="Training steps of each of the two models.")}
    settings = methods.settings_from(methods.PrecisionSettings, corpus, values, methods.PRECISION_CONTROLS)
    return settings


def precision_tab(corpus: texts.Corpus, _settings) -> None:
    st.markdown("The same seeded model trained twice: once in **bf16 mixed precision** (autocast: matrix multiplies "
                "in bfloat16) and once in **fp32**. Time per step, the loss curves, and where each number of one "
                "bf16 step was held, measured.")
    dev = textlm.run_device()
    instr = device.cpu_bf16_instructions()
    st.caption(f"Runs on: **{device.describe(dev)}**. This CPU "
               + (f"has bfloat16 instructions ({', '.join(instr)})." if instr else
                  "reports no bfloat16 matrix instructions (no amx_bf16, no avx512_bf16)."))
    settings = precision_controls(corpus)
    problem = settings.problem(corpus.vocab_size)
    if problem:
        st.error(f"These settings cannot compare: {md_escape(problem)}.", icon=":material/error:")
        return
    handle, run, training, progress_slot = comparison("tr_prec_handle", "tr_prec_done", settings, corpus,
                                                      ("tr_prec_go", "tr_prec_stop"),
                                                      "Train both models in turns on this server.")
    metrics_slot = st.empty()
    c_a, c_b = st.columns(2)
    step_slot, time_slot = c_a.empty(), c_b.empty()

    def draw() -> None:
        now = handle.job.live() if training else run
        if training:
            show_progress(progress_slot, now, settings)
        if now is None:
            step_slot.info("Press **Compare**: time per step and both loss curves appear here.",
                           icon=":material/play_arrow:")
            return
        with metrics_slot.container():
            cols = st.columns(len(now.records))
            for col, arm in zip(cols, now.records):
                col.metric(f"{arm}: time per step", f"{now.step_ms(arm):.0f} ms",
                           help="This model's own training seconds over its steps (measurements excluded).")
        ui.chart(figures.lines_figure(now.step_series(), "held-out loss against step", "training step",
                                      "held-out loss (nats per character)", height=320), "tr_prec_steps_chart",
                 "Held-out loss of the bf16 and fp32 models at each measured step.", slot=step_slot)
        ui.chart(figures.lines_figure(now.series(), "held-out loss against training time", "training seconds",
                                      "held-out loss (nats per character)", height=320), "tr_prec_time_chart",
                 "Held-out loss of both models against their own training seconds.", slot=time_slot)

    if training:
        ui.live(handle, draw, [progress_slot, metrics_slot, step_slot, time_slot])
    else:
        draw()
    if run is not None and not training and run.step:
        show_findings(run)
        if run.report:
            st.markdown("**Where each number of one bf16 training step was held** (measured by "
                        "`precision_report`: hooks on the norms, the model's trace, the gradients and AdamW's state)")
            ui.table({"where": [w for w, _ in run.report], "dtype": [d for _, d in run.report]}, "tr_mp_where")


# ---------------------------------------------------------------------------------------------- data-parallel
def start_ddp(settings) -> None:
    try:
        ui.start_job("tr_ddp_handle", train_ddp.DDPJob(settings))
    except train_ddp.SettingsError as e:
        S.tr_ddp_error = str(e)


def ddp_controls(corpus: texts.Corpus):
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""
    c1, c2, c3 = st.columns(3)
    workers = c1.slider("Workers", *train_ddp.WORKER_RANGE, DEFAULTS["tr_ddp_workers"], key="tr_ddp_workers",
                        bind="query-params", help="Local worker processes.")
    steps = c2.select_slider("Steps", train_ddp.STEP_CHOICES, DEFAULTS["tr_ddp_steps"], key="tr_ddp_steps",
                             bind="query-params")
    batch = c3.select_slider("Global batch", train_ddp.BATCH_CHOICES, DEFAULTS["tr_ddp_batch"], key="tr_ddp_batch",
                             bind="query-params", help="Sequences per step over all workers, split evenly.")
    settings = train_ddp.DDPSettings(workers=int(workers), steps=int(steps), batch_size=int(batch))
    return settings


def ddp_tab(corpus: texts.Corpus, _settings) -> None:
    st.markdown("**Data-parallel training** on `torch.distributed` (gloo): each worker is a separate process with "
                "its own copy of the model and its share of every global batch; their gradients are averaged "
                "(all-reduce) before every step. The page runs your workers, then one worker (the throughput "
                "baseline), then the same training in this process (the reference the parameters are compared "
                "with). It always trains on the built-in novel.")
    settings = ddp_controls(corpus)
    try:
        settings.validate()
    except train_ddp.SettingsError as e:
        st.error(f"These settings cannot run: {md_escape(str(e))}.", icon=":material/error:")
        return
    lines = train_ddp.command_lines(settings)
    st.markdown("The same run from a shell (the launcher starts the workers on free ports of 127.0.0.1; under "
                "torchrun the same script is one worker, so it runs across machines unchanged):")
    st.code(lines["launcher"], language="bash")
    st.code(lines["torchrun"], language="bash")
    handle, result, status = ui.current_job("tr_ddp_handle", ("ddp", settings))
    running = status in ("queued", "running")
    slot = ui.job_buttons("tr_ddp_handle", start_ddp, (settings,), running, ("tr_ddp_go", "tr_ddp_stop"),
                          "Start the workers (Stop kills them).", label="▶ Start")
    if "tr_ddp_error" in S:
        st.error(f"These settings cannot run: {md_escape(S.pop('tr_ddp_error'))}.", icon=":material/error:")
    if status in ("failed", "refused"):
        st.error(f"The data-parallel run failed: {md_escape(str(handle.error))}", icon=":material/error:")
    progress_slot = st.empty()
    if running:
        def draw() -> None:
            fraction, what = handle.progress()
            notice = ui.queue_notice(handle, "your run")
            slot.markdown("**Running…**" + (f"  \n{notice}" if notice else ""))
            progress_slot.progress(min(1.0, fraction), text=what)
        ui.live(handle, draw, [slot, progress_slot])
        return
    if result is None:
        slot.markdown("Not run yet." if handle is None else "Stopped: every worker was killed.")
        return
    c = result
    m1, m2, m3 = st.columns(3)
    m1.metric(f"{settings.workers} worker(s) together", f"{c.parallel.tokens_per_s:,.0f} tokens/s")
    m2.metric("1 worker (baseline)", f"{c.single.tokens_per_s:,.0f} tokens/s")
    m3.metric("Speed-up", f"{c.speedup:.2f}×", help=f"The ideal is {settings.workers}×.")
    st.markdown("**Each worker**")
    ui.table({"rank": [w.rank for w in c.parallel.workers], "device": [w.device for w in c.parallel.workers],
              "ms per step": [f"{w.step_s * 1e3:.1f}" for w in c.parallel.workers],
              "tokens/s": [f"{w.tokens_per_s:,.0f}" for w in c.parallel.workers]}, "tr_ddp_workers")
    st.metric("Largest parameter difference against one process", f"{c.max_abs_diff:.2g}",
              help="Max |parameter of the workers' run − parameter of single-process training on the same global "
                   "batch| after the same steps.")
    st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in c.findings))


# ---------------------------------------------------------------------------------------------- checkpoints
def open_model() -> None:
    """Open the uploaded bundle as this session's opened model; a file that cannot be opened leaves
    the current one and says why."""
    upload = S.get("tr_ckpt_open")
    if upload is None:
        return
    try:
        S.tr_opened = textlm.open_bundle(upload.getvalue(), upload.name)
    except CheckpointError as e:
        S.tr_open_error = str(e)


def checkpoints_tab(corpus: texts.Corpus, settings: textlm.TextSettings) -> None:
    st.markdown("Save the model trained on **Train on text** as a zip of its weights (safetensors, never pickle) "
                "and a JSON config (its settings, its characters, the text it learned), and open a saved one to "
                "write with it.")
    handle, run, status = ui.current_job("tr_handle", ("textlm", settings))
    if run is not None and run.step and status not in ("queued", "running"):
        st.download_button(f"Download the model trained on {corpus.title} (step {run.step})",
                           lambda: textlm.save_bundle(run, settings, corpus), textlm.bundle_name(settings, run.step),
                           "application/zip", key="tr_ckpt_save", on_click="ignore", icon=":material/download:")
    else:
        st.info("No trained model with the sidebar's settings yet: train one on **Train on text** (or wait for it "
                "to finish) to download it here.", icon=":material/info:")
    st.file_uploader("Open a saved text model (.zip)", type=["zip"], key="tr_ckpt_open", on_change=open_model,
                     help="A zip saved by the button above.")
    opened = S.get("tr_opened")
    if opened is None:
        write_controls(corpus, disabled=True)  # the first tab's controls, drawn here while it is closed
        head_controls(settings, disabled=True)
    if "tr_open_error" in S:
        kept = "The opened model is unchanged." if opened is not None else "No model was opened."
        st.error(f"{md_escape(S.pop('tr_open_error'))} {kept}", icon=":material/error:")
    if opened is None:
        return
    level, notes = textlm.opened_notes(opened, corpus)
    (st.success if level == "same" else st.warning)(md_escape(" ".join(notes)), icon=":material/description:")
    write_with(opened, opened.corpus, opened.settings, ("opened", opened.name, opened.meta["digest"], opened.step),
               False)


# ---------------------------------------------------------------------------------------------- the page
st.title("Training")
st.caption("How a language model is trained: a character-level transformer learns to predict the next character of a "
           "text, live on this server. Watch the held-out loss fall from ln(vocabulary) and the samples turn from "
           "noise into words.")

corpus = choose_corpus()
settings = sidebar_settings(corpus)
TABS = {"Train on text": train_on_text, "Curriculum": curriculum_tab, "Mixed precision": precision_tab,
        "Data-parallel": ddp_tab, "Checkpoints": checkpoints_tab}  # tab title -> its view (corpus, settings)
CONTROLS = {"Curriculum": curriculum_controls, "Mixed precision": precision_controls,  # drawn in a closed tab
            "Data-parallel": ddp_controls}
tabs = dict(zip(TABS, st.tabs(list(TABS), key="tr_tab", on_change="rerun", bind="query-params")))
for title, view in TABS.items():
    with tabs[title]:
        if tabs[title].open:
            view(corpus, settings)
        elif title in CONTROLS:
            CONTROLS[title](corpus)
        elif title == "Train on text" and not tabs["Checkpoints"].open:  # Checkpoints draws these while it is open
            write_controls(corpus, disabled=True)
            head_controls(settings, disabled=True)
