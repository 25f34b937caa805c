"""Training: a character-level language model trained live on a novel or on your own text, with the
held-out loss, the learning-rate schedule, samples as it trains, and the attention of what it writes."""
import streamlit as st

from explorer import corpus as texts, figures, textlm
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
               f"**{textlm.device_label()}**.")
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
                st.code(text, language=None, wrap_lines=True)

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


def write_with(shown, corpus, settings, key, training) -> None:
    """A sample from the model shown, with temperature and top-k, and the attention that wrote it."""
    st.subheader("Write with the model")
    if training:
        st.caption("When training ends (or you stop it), write with the model here and see its attention.")
        return
    c_p, c_n = st.columns([3, 1])
    prompt = c_p.text_input("Prompt", key="tr_prompt", bind="query-params", max_chars=500,
                            placeholder=f"empty: start from {textlm.probe_start_words(corpus)}",
                            help=f"Only characters of the text ({corpus.vocab_size} of them).")
    n = c_n.slider("Characters to write", 20, 1000, DEFAULTS["tr_chars"], step=10, key="tr_chars", bind="query-params")
    c_t, c_k, c_s = st.columns(3)
    temperature = c_t.slider("Temperature", 0.0, 2.0, DEFAULTS["tr_temperature"], step=0.1, key="tr_temperature",
                             bind="query-params", help="0 always takes the likeliest character.")
    top_k = c_k.select_slider("Top-k", textlm.TOP_K_CHOICES, DEFAULTS["tr_top_k"], key="tr_top_k",
                              bind="query-params", format_func=lambda k: "all" if k == 0 else str(k),
                              help="Draw only among the k likeliest characters (all: no limit).")
    seed = c_s.number_input("Sample seed", 0, 2**31 - 1, DEFAULTS["tr_sample_seed"], key="tr_sample_seed",
                            bind="query-params", help="The same seed writes the same text.")
    try:
        gen = ui.cached("tr_samples", (key, shown.step, prompt, int(n), float(temperature), int(top_k), int(seed)),
                        lambda: textlm.sample(shown.model, corpus, prompt, int(n), float(temperature), int(top_k),
                                              int(seed)))
    except textlm.PromptError as e:
        st.warning(f"Nothing written: {md_escape(str(e))}.", icon=":material/edit_off:")
        return
    written = corpus.tokenizer.decode(gen.ids)
    st.code(written, language=None, wrap_lines=True)
    st.caption(f"The prompt, then {len(gen.text)} characters written by the model "
               + ("after training" if shown.step else "before training (random weights)")
               + (", always the likeliest" if temperature == 0 else
                  f" at temperature {temperature:g}" + (f", top-{top_k}" if top_k else "")) + ".")

    maps = ui.cached("tr_maps", (key, shown.step, tuple(gen.ids)),
                     lambda: textlm.sample_attention(shown.model, corpus, gen.ids))
    for name, count in (("tr_layer", settings.n_layer), ("tr_head", settings.n_head)):
        if S.get(name, 0) >= count:
            S[name] = 0  # fewer layers or heads than the link's
    c_l, c_h = st.columns(2)
    layer = c_l.selectbox("Layer", list(range(settings.n_layer)), key="tr_layer", bind="query-params")
    head = c_h.selectbox("Head", list(range(settings.n_head)), key="tr_head", bind="query-params")
    T = len(maps["tokens"])
    ui.chart(figures.attention_heatmap(maps["patterns"][layer, head], maps["tokens"],
                                       f"layer {layer}, head {head}: the last {T} characters of the sample", height=560),
             "tr_attention_map", f"Attention of layer {layer}, head {head} over the last {T} characters of the sample.")
    with st.expander("Every head", icon=":material/grid_view:"):
        ui.chart(figures.attention_grid(maps["patterns"], maps["tokens"]), "tr_attention_grid",
                 "Every layer's and head's attention over the last characters of the sample.")
    st.caption(f"Rows are the characters reading (queries), columns those read (keys), over the last {T} characters "
               "the model read when it wrote the sample's last one.")


# ---------------------------------------------------------------------------------------------- the page
st.title("Training")
st.caption("How a language model is trained: a character-level transformer learns to predict the next character of a "
           "text, live on this server. Watch the held-out loss fall from ln(vocabulary) and the samples turn from "
           "noise into words.")

corpus = choose_corpus()
settings = sidebar_settings(corpus)
TABS = {"Train on text": train_on_text}  # tab title -> its view (corpus, settings)
for (title, view), tab in zip(TABS.items(), st.tabs(list(TABS), key="tr_tab", on_change="rerun", bind="query-params")):
    if tab.open:
        with tab:
            view(corpus, settings)
