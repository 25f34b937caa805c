"""Attention Lab: build a small transformer, train it live, and look into its attention."""
import plotly.graph_objects as go
import streamlit as st

from explorer import bertviz_views, figures, lab
from explorer.attention import ATTENTION
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
def shared_loss_figure(model_key, _history):
    """The loss curve of a run at a step: the same for every session watching it."""
    return go.Figure(figures.loss_curve(_history))


@st.cache_data(max_entries=32)
def bertviz_html(attentions, tokens, view, dark):
    if view == "head":
        return bertviz_views.head_view_html(attentions, list(tokens), dark=dark)
    return bertviz_views.model_view_html(attentions, list(tokens), dark=dark)


def start_training():
    problem = S.lab_settings.problem()
    if problem:
        S.lab_train_error = problem
        return
    old = S.get("lab_run")
    if old is not None:
        old.stop()
    S.lab_run = lab.LabRun(S.lab_settings, ui.submit(lab.training_job(S.lab_settings)), ui.holder())


def stop_training():
    S.lab_run.stop()


def reset():
    run = S.pop("lab_run", None)
    if run is not None:
        run.stop()


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
        window = st.number_input(kind.size_control.label, 1, 512, D.window, key="lab_window", bind="query-params",
                                 help=kind.size_control.help)
    n_head = st.selectbox("Heads", list(range(1, 17)), index=D.n_head - 1, key="lab_heads", bind="query-params",
                          help="Attention heads per layer; they split the width between them.")
    encoding = st.selectbox("Positional encoding", ENCODINGS.names(), index=ENCODINGS.names().index(D.encoding),
                            key="lab_encoding", bind="query-params", help="How the model learns where a token is.")
    n_layer = st.slider("Layers", 1, 6, D.n_layer, key="lab_layers", bind="query-params",
                        help="Transformer blocks, each attention then an MLP.")
    n_embd = st.select_slider("Width", lab.WIDTHS, D.n_embd, key="lab_width", bind="query-params",
                              help="The residual stream's size: numbers per token.")
    st.header("Training")
    steps = st.number_input("Training steps", 10, 20000, D.steps, step=50, key="lab_steps", bind="query-params",
                            help="Optimisation steps of 64 examples each (at most, with the next option).")
    until_learned = st.toggle("Stop when learned", D.until_learned, key="lab_until_learned", bind="query-params",
                              help="Stop once accuracy on fresh examples stays at 99% or more over three checks "
                                   "(tasks with right answers).")
    seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="lab_seed", bind="query-params",
                           help="Seeds the weights and the data: the same seed gives everyone the same picture.")

settings = lab.LabSettings(task_name, int(length), attention, int(window), int(n_head), encoding, int(n_layer),
                           int(n_embd), int(steps), int(seed), bool(until_learned))
S.lab_settings = settings
task = TASKS[task_name]
st.markdown(f"**{task.title}.** {task.description}  \n**{attention}**: {kind.summary} ({kind.paper}).")

problem = settings.problem()
if problem:
    st.error(f"This configuration is not possible: {problem}.", icon=":material/error:")
if "lab_train_error" in S:
    st.error(S.pop("lab_train_error"), icon=":material/error:")

# a lesson, or a shared link of a trained view (lab_trained=1), trains at once: seeded, so the same picture
if ui.arrived_to_run(PAGE, "lab_trained") and problem is None:
    start_training()
run = S.get("lab_run")
training = run is not None and run.training
ui.mark_finished("lab_trained", run is not None and not training and run.current() is not None
                 and run.current().finished and not run.differences(settings))

# ---------------------------------------------------------------------------------------------- which model
shown = None
if run is not None:
    shown = ui.cached("lab_views", (run.id, run.current() and run.current().step, settings),
                      lambda: run.shown(settings), 4)
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
if run is not None:
    st.caption("Your trained model lives in this server's memory, for this browser tab (a run with the same "
               "settings and seed is trained once and shared by everyone who asks for it); a server restart "
               "loses it.")
progress_slot = st.empty()
loss_slot = st.empty()

if shown is None:  # an impossible configuration and nothing trained: the message above says why
    finish_timer()
else:
    model, view = shown.model, shown.settings
    cfg, view_task = model.config, TASKS[view.task]

    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Parameters", f"{model.num_params():,}", help="Weights the model learns.")
    m2.metric("Context", f"{cfg.block_size} tokens", help="The longest sequence the model reads: input, separator, answer.")
    m3.metric("Heads × head size", f"{cfg.n_head} × {cfg.head_dim}", help="Each head works in its own slice of the width.")
    flops_slot = m4.empty()

    # ------------------------------------------------------------------------------------------ input and output
    example_text, _ = lab.example(view)
    follow = lab.input_to_show(S.get("lab_input"), S.get("lab_input_auto"), example_text,
                               "lab_input" not in S and "lab_input" in st.query_params)
    if follow is not None:
        S.lab_input = follow
    S.lab_input_auto = example_text
    text = st.text_input("Your input", key="lab_input", bind="query-params", max_chars=512,
                         help=f"Allowed: {lab.describe_chars(view_task.input_chars)}.")
    check = lab.check_input(view_task, cfg, text, view.length)
    output_slot = st.empty()

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
    tab1, tab2, tab3, tab4 = st.tabs(["Selected head", "bertviz head view", "bertviz model view", "Inside the model"],
                                     key="lab_tab", on_change="rerun", bind="query-params")
    head_slot = tab1.empty() if tab1.open else None

    def analysis_for(model_now, key):
        return shared_analysis(key, model_now.config, text, model_now, view_task)

    def draw(model_now, key, live: bool) -> None:
        """Everything that follows the model: output, FLOPs, the maps (redrawn while training)."""
        current = run.current() if run is not None else None
        status = ("**Training…** " if live else "") + (run.status() if run is not None else
                                                      f"untrained: random weights (seed {settings.seed}). Press **Train**.")
        notice = ui.queue_notice(run.handle, "your run") if live else ""
        status_slot.markdown(status + (f"  \n{notice}" if notice else ""))
        if current is not None and current.history:
            ui.chart(shared_loss_figure(run.model_key(), current.history), "lab_loss",
                     "Training loss and accuracy per step.",
                     slot=loss_slot)
            if live:
                progress_slot.progress(current.step / current.total, text=f"step {current.step}/{current.total}")
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
        tokens = tuple(a.tokens)
        ui.chart(ui.figure("attention_grid", a.attentions, tokens), "lab_grid",
                 "Attention of every layer (rows) and head (columns): rows are queries, columns keys.", slot=grid_slot)
        if head_slot is not None:
            ui.chart(ui.figure("attention_heatmap", a.attentions[layer, head], tokens, f"layer {layer}, head {head}"),
                     "lab_head_map", f"Attention of layer {layer}, head {head}: who looks (rows) at whom (columns).",
                     slot=head_slot)

    model_key = run.model_key() if run is not None and run.current() is not None else ("untrained", view)
    if training:  # the live parts redraw on their own (a fragment) while the run trains
        def redraw() -> None:  # before the first step: the starting weights are this seed's untrained ones
            current = run.current()
            live_model = run.shown(settings).model if current is not None else untrained_model(settings)
            draw(live_model, run.model_key() if current is not None else ("untrained", settings), live=True)

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
                st.iframe(bertviz_html(a.attentions, tokens, "head", dark), height=140 + 21 * len(tokens))
        if tab3.open:
            with tab3:
                st.iframe(bertviz_html(a.attentions, tokens, "model", dark), height=80 + 250 * cfg.n_layer)
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
    finish_timer()
