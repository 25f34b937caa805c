"""Attention Lab: build a small transformer, train it live, and look into its attention."""
import dataclasses

import streamlit as st

from explorer import bertviz_views, figures, lab
from explorer.attention import ATTENTION
from explorer.checkpoint import CheckpointError
from explorer.encodings import ENCODINGS
from explorer.tasks import TASKS
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = lab.LabSettings()  # defaults
finish_timer = ui.page_timer("lab_render_s")


@st.cache_resource(max_entries=16)
def untrained_model(settings: lab.LabSettings):
    """Freshly initialised weights: read-only and the same for everyone with the same settings."""
    return lab.untrained(settings)


@st.cache_resource(max_entries=256)
def shared_analysis(model_key, config, text, _model, _task):
    """One model (named by ``model_key`` and ``config``) read on one input: the same for every
    session that shows it (thirty students watching one shared run compute it once per step)."""
    return lab.analyze(_model, _task, text)


@st.cache_resource(max_entries=64)
def shared_loss_figure(model_key, mark, _history):
    """The loss curve of a run at a step: the same for every session watching it."""
    return ui.plotly_figure(figures.loss_curve(_history, mark=mark))


@st.cache_data(max_entries=32)
def bertviz_html(attentions, tokens, view, dark, layer):
    if view == "head":  # bertviz's own layer menu starts at the layer chosen on the page
        return bertviz_views.head_view_html(attentions, list(tokens), layer=layer, dark=dark)
    return bertviz_views.model_view_html(attentions, list(tokens), dark=dark)


def start_training(settings=None, key="lab_run"):
    settings = settings or S.lab_settings
    problem = settings.problem()
    if problem:
        S.lab_train_error = lab.explain(problem)
        return
    old = S.get(key)
    if old is not None:
        old.stop()
    S[key] = lab.LabRun(settings, ui.submit(lab.training_job(settings)), ui.holder())


def stop_training(key="lab_run"):
    S[key].stop()


def open_model():
    """Open the uploaded bundle as this session's Lab model, its settings in the controls; a file
    that cannot be opened leaves the current model as it is and says why."""
    upload = S.get("lab_open")
    if upload is None:
        return
    try:
        opened = lab.open_bundle(upload.getvalue(), upload.name)
    except CheckpointError as e:
        S.lab_open_error = str(e)
        return
    if S.get("lab_run") is not None:
        S.lab_run.stop()
    S.lab_run = opened
    S.update(lab.control_values(opened.settings))
    S.lab_open_note = lab.opened_text(opened)


def reset():
    for key in ("lab_run", "lab_run_b"):
        run_ = S.pop(key, None)
        if run_ is not None:
            run_.stop()


st.title("Attention Lab")
st.caption("Pick a task and an architecture, press **Train**, and watch attention form while the model learns.")

# ---------------------------------------------------------------------------------------------- controls
with st.sidebar:
    st.header("Model")
    task_name = st.selectbox("Task", TASKS.names(), index=TASKS.names().index(D.task), key="lab_task",
                             bind="query-params", help="What the model learns to do; each task is generated, "
                                                       "seeded, never downloaded.")
    length = st.slider("Input length", 2, 32, D.length, key="lab_length", bind="query-params",
                       help="Characters per training input (the toy language uses sentences instead).")
    attention = st.selectbox("Attention", ATTENTION.names(), index=ATTENTION.names().index(D.attention),
                             key="lab_attention", bind="query-params", help="Which keys each query is scored against.")
    kind = ATTENTION[attention]
    window = D.window
    if kind.size_control is not None:
        window = st.number_input(kind.size_control.label, *lab.CONTROL_RANGES["window"], D.window, key="lab_window",
                                 bind="query-params", help=kind.size_control.help)
    encoding = st.selectbox("Positional encoding", ENCODINGS.names(), index=ENCODINGS.names().index(D.encoding),
                            key="lab_encoding", bind="query-params", help="How the model learns where a token is.")
    n_embd = st.select_slider("Width", lab.WIDTHS, D.n_embd, key="lab_width", bind="query-params",
                              help="The residual stream's size: numbers per token.")
    heads = lab.valid_heads(int(n_embd), encoding)  # only the counts this width (and encoding) can take
    n_head = st.selectbox("Heads", heads, index=heads.index(D.n_head) if D.n_head in heads else 0, key="lab_heads",
                          bind="query-params", help="Attention heads per layer; they split the width between them "
                                                    f"(with width {n_embd}: {', '.join(map(str, heads))}).")
    n_layer = st.slider("Layers", 1, 6, D.n_layer, key="lab_layers", bind="query-params",
                        help="Transformer blocks, each attention then an MLP.")
    st.header("Training")
    steps = st.number_input("Training steps", *lab.CONTROL_RANGES["steps"], D.steps, step=50, key="lab_steps",
                            bind="query-params",
                            help="Optimisation steps of 64 examples each (at most, with the next option).")
    until_learned = st.toggle("Stop when learned", D.until_learned, key="lab_until_learned", bind="query-params",
                              help="Stop once accuracy on fresh examples stays at 99% or more over three checks "
                                   "(tasks with right answers).")
    seed = st.number_input("Seed", *lab.CONTROL_RANGES["seed"], D.seed, key="lab_seed", bind="query-params",
                           help="Seeds the weights and the data: the same seed gives everyone the same picture.")

settings = lab.LabSettings(task_name, int(length), attention, int(window), int(n_head), encoding, int(n_layer),
                           int(n_embd), int(steps), int(seed), bool(until_learned))
S.lab_settings = settings
task = TASKS[task_name]
st.markdown(f"**{task.title}.** {task.description}  \n**{attention}**: {kind.summary} ({kind.paper}).")

problem = settings.problem()
if problem:
    st.error(f"This configuration is not possible: {lab.explain(problem)}.", icon=":material/error:")
if "lab_train_error" in S:
    st.error(S.pop("lab_train_error"), icon=":material/error:")

# a lesson, or a shared link of a trained view (lab_trained=1), trains at once: seeded, so the same picture;
# lab_from names the kind, window and heads it was trained with when the view reads it under others
if ui.arrived_to_run(PAGE, "lab_trained") and problem is None:
    trained, link_problem = lab.trained_from(st.query_params.get("lab_from", ""), settings)
    if link_problem:
        st.warning(f"This link's trained run could not be read ({link_problem}); training the view as shown.",
                   icon=":material/link_off:")
    start_training(trained)
run = S.get("lab_run")
training = run is not None and run.training
flags = lab.link_flags(run, settings)
for flag in ("lab_trained", "lab_from"):
    ui.mark_finished(flag, flag in flags, flags.get(flag, "1"))

# ---------------------------------------------------------------------------------------------- which model
current = run.current() if run is not None else None
shown_step = None
if current is not None and not training and len(current.checkpoints) > 1:
    with st.sidebar:
        st.header("Rewind")
        steps_kept = [ck[0] for ck in current.checkpoints]
        if "lab_step" in S and S.lab_step not in steps_kept:
            del S["lab_step"]  # another run's step: show this run's last
        shown_step = st.select_slider("Show the model at step", steps_kept, steps_kept[-1], key="lab_step",
                                      bind="query-params",
                                      help="Training keeps the weights at these steps: go back to see the maps and "
                                           "the output as they were.")
        shown_step = None if shown_step == steps_kept[-1] else shown_step
shown = None
if run is not None:
    shown = ui.cached("lab_views", (run.id, current and current.step, shown_step, settings),
                      lambda: run.shown(settings, step=shown_step), 4)
if shown is None and problem is None:
    shown = lab.Shown(untrained_model(settings), settings)
if shown is not None and shown.note:
    st.info(shown.note, icon=":material/swap_horiz:" if shown.reread else ":material/info:")

# ---------------------------------------------------------------------------------------------- train controls
c1, c2, c3, c4 = st.columns([1, 1, 1, 5])
c1.button("▶ Train", on_click=start_training, disabled=problem is not None or training, type="primary",
          key="lab_train", help="Train this configuration on the server (shared: the same settings train once).")
c2.button("■ Stop", on_click=stop_training, disabled=not training, key="lab_stop",
          help="Stop and keep the model as it is now.")
c3.button("↺ Reset", on_click=reset, disabled=run is None, key="lab_reset", help="Forget the trained model.")
status_slot = c4.empty()
speed = ui.submit(lab.calibration_job())  # this server's training speed, measured once and shared
if problem is None and not training:
    st.caption(lab.estimate_text(settings, speed.result()) if speed.done else "Measuring this server's speed to "
               "estimate training time…")
if run is not None:
    st.caption("Your trained model lives in this server's memory, for this browser tab (a run with the same "
               "settings and seed is trained once and shared by everyone who asks for it); a server restart "
               "loses it unless you save it (*Save or open a model*, below).")
with st.expander("Save or open a model", icon=":material/save:"):
    if current is not None and not training:
        st.download_button(f"Download the trained model (step {current.step})", lambda r=run: lab.save_bundle(r),
                           lab.bundle_name(run.settings), "application/zip", key="lab_save", on_click="ignore",
                           icon=":material/download:",
                           help="A zip of the weights (safetensors) and a JSON config: the settings, the vocabulary "
                                "and the loss history. Open it here later, on this or another server.")
    st.file_uploader("Open a saved model (.zip)", type=["zip"], key="lab_open", on_change=open_model,
                     help="A zip saved by the button above. It replaces the model shown, and the controls take "
                          "the settings it was trained with.")
    if "lab_open_error" in S:
        st.error(S.pop("lab_open_error") + " The model shown is unchanged.", icon=":material/error:")
    if "lab_open_note" in S:
        st.success(S.pop("lab_open_note"), icon=":material/check_circle:")
progress_slot = st.empty()
loss_slot = st.empty()

if shown is None:  # an impossible configuration and nothing trained: the message above says why
    finish_timer()
else:
    model, view = shown.model, shown.settings
    cfg, view_task = model.config, TASKS[view.task]

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Parameters", f"{model.num_params():,}", help="Weights the model learns.")
    m2.metric("Context", f"{cfg.block_size} tokens", help=(
        f"The longest sequence the model reads: the input ({view.length} characters), '{view_task.separator}' and the "
        f"answer ({view.length})." if view_task.symbolic else "The longest sequence the model reads."))
    m3.metric("Heads × head size", f"{cfg.n_head} × {cfg.head_dim}", help="Each head works in its own slice of the width.")
    flops_slot = m4.empty()

    # ------------------------------------------------------------------------------------------ input and output
    example_text, _ = lab.example(view)
    follow = lab.input_to_show(S.get("lab_input"), S.get("lab_input_auto"), example_text,
                               "lab_input" not in S and "lab_input" in st.query_params)
    if follow is not None:
        S.lab_input = follow
    S.lab_input_auto = example_text
    text = st.text_input("Your input", key="lab_input", bind="query-params",
                         help=f"Allowed: {lab.describe_chars(view_task.input_chars)}.")
    check = lab.check_input(view_task, cfg, text, view.length)
    output_slot = st.empty()
    with st.expander("About this model", icon=":material/info:"):
        st.markdown("\n".join(f"- {line}" for line in lab.about(view, text)))

    st.subheader("Attention")
    grid_slot = st.empty()
    sel1, sel2 = st.columns(2)
    S.lab_layer = min(S.get("lab_layer", 0), cfg.n_layer - 1)
    S.lab_head = min(S.get("lab_head", 0), cfg.n_head - 1)
    layer = sel1.selectbox("Layer", list(range(cfg.n_layer)), key="lab_layer", bind="query-params",
                           help="Which layer the large map shows.")
    head = sel2.selectbox("Head", list(range(cfg.n_head)), key="lab_head", bind="query-params",
                          help="Which head the large map shows.")
    # only the open tab is computed and sent: the bertviz pages carry ~350 KB of d3/jQuery each
    tab1, tab2, tab3, tab4, tab5 = st.tabs(
        ["Selected head", "bertviz head view", "bertviz model view", "Inside the model", "Compare"],
        key="lab_tab", on_change="rerun", bind="query-params")
    head_slot = tab1.empty() if tab1.open else None

    def analysis_for(model_now, key):
        return shared_analysis(key, model_now.config, text, model_now, view_task)

    def draw(model_now, key, live: bool) -> None:
        """Everything that follows the model: output, FLOPs, the maps (redrawn while training)."""
        now = run.current() if run is not None else None
        status = ("**Training…** " if live else "") + (run.status() if run is not None else
                                                      f"untrained: random weights (seed {settings.seed}). Press **Train**.")
        notice = ui.queue_notice(run.handle, "your run") if live else ""
        status_slot.markdown(status + (f"  \n{notice}" if notice else ""))
        if now is not None and now.history:
            ui.chart(shared_loss_figure(run.model_key(), shown_step, now.history), "lab_loss",
                     "Training loss (log scale) and token accuracy of each training batch, per step.", slot=loss_slot)
            if live:
                progress_slot.progress(now.step / now.total, text=f"step {now.step}/{now.total}")
        if not check.ok:
            output_slot.warning(check.message, icon=":material/keyboard:")
            return
        a = analysis_for(model_now, key)
        flops_slot.metric("Attention FLOPs (this input)", f"{a.flops:,.0f}",
                          help=f"Matrix products of every layer's attention, masked-out scores included; "
                               f"{a.useful:.0%} of them fall inside the causal pattern.")
        with output_slot.container():
            st.markdown("**Model output** (darker = more probable" + (", wavy red = wrong)" if a.expected else ")"))
            st.html(figures.probability_html(a.answer, a.probs, a.expected))
            if a.expected is not None:
                st.caption(f"{a.right} of {len(a.expected)} characters right.")
            for note in a.notes:
                st.caption(note)
            if not live and now is not None and now.finished:
                finding = lab.pattern_finding(a, view_task, text)
                if finding:
                    st.caption(finding)
        tokens = tuple(a.tokens)
        ui.chart(ui.figure("attention_grid", a.attentions, tokens), "lab_grid",
                 "Attention of every layer (rows) and head (columns): rows are queries, columns keys.", slot=grid_slot)
        if head_slot is not None:
            ui.chart(ui.figure("attention_heatmap", a.attentions[layer, head], tokens, f"layer {layer}, head {head}"),
                     "lab_head_map", f"Attention of layer {layer}, head {head}: who looks (rows) at whom (columns).",
                     slot=head_slot)

    model_key = run.model_key(shown_step) if current is not None else ("untrained", view)
    if training:  # the live parts redraw on their own (a fragment) while the run trains
        def redraw() -> None:  # before the first step: the starting weights are this seed's untrained ones
            now = run.current()
            live_model = run.shown(settings).model if now is not None else untrained_model(settings)
            draw(live_model, run.model_key() if now is not None else ("untrained", settings), live=True)

        ui.live(run.handle, redraw, [status_slot, progress_slot, loss_slot, flops_slot, output_slot, grid_slot]
                + ([head_slot] if head_slot is not None else []))
    else:
        draw(model, model_key, live=False)
    if check.ok:
        a = analysis_for(model, model_key)
        tokens = tuple(a.tokens)
        dark = st.context.theme.type == "dark"
        if tab2.open:
            with tab2:
                st.iframe(bertviz_html(a.attentions, tokens, "head", dark, layer),
                          height=bertviz_views.head_view_height(len(tokens)))
        if tab3.open:
            with tab3:
                st.iframe(bertviz_html(a.attentions, tokens, "model", dark, layer),
                          height=bertviz_views.model_view_height(cfg.n_layer, cfg.n_head, len(tokens)))
        if tab4.open:
            with tab4:
                st.markdown("The **residual stream** is the vector each token carries from layer to layer; every "
                            "attention and MLP adds to it. The **logit lens** reads it after each block as if it "
                            "were the last: the final LayerNorm and the unembedding turn it into a next-token "
                            "guess, so you can see at which layer the answer appears.")
                lens = ui.cached("lab_lens", (model_key, cfg, text), lambda: lab.inside(model, a), 4)  # this session only
                ui.chart(figures.logit_lens_figure(lens, tokens, view_task.tokenizer.decode), "lab_lens",
                         "The next-token guess read from each layer's residual stream at each position.")
                ui.chart(figures.residual_norm_figure(lens, tokens), "lab_resid",
                         "The size of the residual stream at each position after each layer.")
                grads = ui.cached("lab_grads", (model_key, cfg), lambda: lab.gradient_norms(model, view), 4)
                ui.chart(figures.lines_figure({"gradient norm": (list(range(len(grads))), grads)},
                                              "gradient norm per block (the model as shown)", "block",
                                              "‖gradient‖", log_y=True, x_integer=True, height=300), "lab_grads",
                         "Each block's gradient norm for the training loss on a fixed batch, for the model as shown.")
                st.caption("The gradient each block's weights would get from one batch of training examples, for "
                           "the model as shown: use **Rewind** to see it at earlier steps of training.")

    # ------------------------------------------------------------------------------------------ compare
    if tab5.open:
        with tab5:
            st.markdown("Model **B** is the model above (**A**) with another attention kind, window, head count or "
                        "encoding. Train both and read your input with each, side by side: output, accuracy, cost "
                        "and maps. The link carries both.")
            b1, b2, b3, b4 = st.columns(4)
            b_attention = b1.selectbox("B: attention", ATTENTION.names(), index=ATTENTION.names().index(
                "sliding_window"), key="lab_b_attention", bind="query-params", help="Model B's attention kind.")
            b_window = b2.number_input("B: window / block", 1, 512, 4, key="lab_b_window", bind="query-params",
                                       help="Model B's window or block size (for the kinds that have one).")
            b_heads_options = lab.valid_heads(int(n_embd), encoding)
            b_heads = b3.selectbox("B: heads", b_heads_options, index=b_heads_options.index(4)
                                   if 4 in b_heads_options else 0, key="lab_b_heads", bind="query-params",
                                   help="Model B's head count.")
            b_encoding = b4.selectbox("B: encoding", ENCODINGS.names(), index=ENCODINGS.names().index(D.encoding),
                                      key="lab_b_encoding", bind="query-params", help="Model B's positional encoding.")
            settings_b = dataclasses.replace(settings, attention=b_attention, window=int(b_window), n_head=int(b_heads),
                                             encoding=b_encoding)
            S.lab_settings_b = settings_b
            problem_b = settings_b.problem()
            if ui.arrived_to_run(PAGE, "lab_b_trained") and problem_b is None:
                start_training(settings_b, "lab_run_b")
            run_b = S.get("lab_run_b")
            if run_b is not None and run_b.settings != settings_b:
                run_b = None  # B's controls changed since: train again
            ui.mark_finished("lab_b_trained", run_b is not None and not run_b.training and run_b.current() is not None
                             and run_b.current().finished)
            st.button("▶ Train A and B", key="lab_train_both", type="primary",
                      disabled=problem is not None or problem_b is not None or (run_b is not None and run_b.training),
                      on_click=lambda: (start_training() if run is None or run.differences(settings) else None,
                                        start_training(S.lab_settings_b, "lab_run_b")),
                      help="Train both (each run is shared: the same settings train once on this server).")
            if problem_b:
                st.error(f"Model B is not possible: {lab.explain(problem_b)}.", icon=":material/error:")
            else:
                cols = st.columns(2)
                for col, name, run_x, settings_x in ((cols[0], "A", run, settings), (cols[1], "B", run_b, settings_b)):
                    with col:
                        shown_x = run_x.shown(settings_x) if run_x is not None and run_x.current() is not None \
                            else lab.Shown(untrained_model(settings_x), settings_x)
                        key_x = run_x.model_key() if run_x is not None and run_x.current() is not None \
                            else ("untrained", settings_x)
                        row = lab.compare_row(run_x, shown_x.model, settings_x)
                        st.markdown(f"**{name}: {settings_x.attention}"
                                    + (f" (w = {settings_x.window})" if ATTENTION[settings_x.attention].size_control
                                       else "") + f", {settings_x.n_head} heads, {settings_x.encoding}**  \n{row}")
                        if check.ok:
                            a_x = shared_analysis(key_x, shown_x.model.config, text, shown_x.model, view_task)
                            st.html(figures.probability_html(a_x.answer, a_x.probs, a_x.expected))
                            st.caption(lab.analysis_line(a_x))
                            ui.chart(ui.figure("attention_grid", a_x.attentions, tuple(a_x.tokens)), f"lab_cmp_{name}",
                                     f"Model {name}: attention of every layer and head on your input.")
                if run_b is not None and run_b.training:
                    b_slot = st.empty()

                    def redraw_b():
                        now_b = run_b.current()
                        b_slot.progress(0.0 if now_b is None else now_b.step / now_b.total,
                                        text="Model B training: " + run_b.status())

                    ui.live(run_b.handle, redraw_b, [b_slot])
    finish_timer()
