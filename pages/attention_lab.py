"""Attention Lab: build a small transformer, train it live, and look into its attention."""
import time
from collections import OrderedDict

import plotly.graph_objects as go
import streamlit as st

from explorer import bertviz_views, figures, lab
from explorer.attention import ATTENTION, dynamic_window_rule
from explorer.encodings import ENCODINGS
from explorer.tasks import TASKS
import ui

S = st.session_state
ui.ensure_navigation(__file__)
D = lab.LabSettings()  # defaults
REFRESH_S = 0.25  # seconds of training between redraws while training


@st.cache_resource(max_entries=16)
def untrained_model(settings: lab.LabSettings):
    """Freshly initialised weights: read-only and the same for everyone with the same settings."""
    return lab.untrained(settings)


# Figures are validated once (plotly's validation costs more than drawing them) and shared
# read-only: their keys are the data they show, so no session sees anything of another's.
@st.cache_resource(max_entries=64)
def grid_figure(attentions, tokens):
    return go.Figure(figures.attention_grid(attentions, tokens))


@st.cache_resource(max_entries=64)
def head_figure(weights, tokens, title):
    return go.Figure(figures.attention_heatmap(weights, tokens, title))


@st.cache_data(max_entries=32)
def bertviz_html(attentions, tokens, view, dark):
    if view == "head":
        return bertviz_views.head_view_html(attentions, list(tokens), dark=dark)
    return bertviz_views.model_view_html(attentions, list(tokens), dark=dark)


def session_cache(name: str) -> OrderedDict:
    """A small per-session LRU for things tied to this user's model."""
    if name not in S:
        S[name] = OrderedDict()
    return S[name]


def cached(store: OrderedDict, key, make, size: int = 16):
    if key in store:
        store.move_to_end(key)
        return store[key]
    value = store[key] = make()
    while len(store) > size:
        store.popitem(last=False)
    return value


def start_training():
    try:
        S.lab_run = lab.LabRun.start(S.lab_settings, S.get("lab_input"))
        S.lab_training = True
        S.lab_refresh_times = []  # redraw times of this run only (read by the benchmark)
    except ValueError as e:
        S.lab_train_error = str(e)


def stop_training():
    S.lab_training = False


def reset():
    S.pop("lab_run", None)
    S.lab_training = False


render_start = time.perf_counter()
st.title("Attention Lab")
st.caption("Pick a task and an architecture, press **Train**, and watch attention form while the model learns.")

# ---------------------------------------------------------------------------------------------- controls
with st.sidebar:
    st.header("Model")
    task_name = st.selectbox("Task", TASKS.names(), index=TASKS.names().index(D.task),
                             key="lab_task", bind="query-params")
    length = st.slider("Input length", 2, 32, D.length, key="lab_length", bind="query-params",
                       help="Characters per training input (the toy language uses sentences instead).")
    attention = st.selectbox("Attention", ATTENTION.names(), index=ATTENTION.names().index(D.attention),
                             key="lab_attention", bind="query-params")
    kind = ATTENTION[attention]
    window = D.window
    if kind.uses_window:
        label = {"sliding_window": "Window w (keys per query)", "dynamic_window": "Smallest window w_min",
                 "block_sparse": "Block size b"}[attention]
        window = st.number_input(label, 1, 512, D.window, key="lab_window", bind="query-params")
    n_head = st.selectbox("Heads", list(range(1, 17)), index=D.n_head - 1, key="lab_heads", bind="query-params")
    encoding = st.selectbox("Positional encoding", ENCODINGS.names(), index=ENCODINGS.names().index(D.encoding),
                            key="lab_encoding", bind="query-params")
    n_layer = st.slider("Layers", 1, 6, D.n_layer, key="lab_layers", bind="query-params")
    n_embd = st.select_slider("Width", lab.WIDTHS, D.n_embd, key="lab_width", bind="query-params")
    st.header("Training")
    steps = st.number_input("Training steps", 10, 20000, D.steps, step=50, key="lab_steps", bind="query-params")
    seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="lab_seed", bind="query-params")

settings = lab.LabSettings(task_name, int(length), attention, int(window), int(n_head), encoding, int(n_layer),
                           int(n_embd), int(steps), int(seed))
S.lab_settings = settings
task = TASKS[task_name]
st.markdown(f"**{task.title}.** {task.description}  \n**{attention}**: {kind.summary}")

config, config_error = None, None
try:
    config = settings.model_config()
    settings.train_config()
except ValueError as e:
    config_error = str(e)
if config_error:
    st.error(f"This configuration is not possible: {config_error}.", icon=":material/error:")
if "lab_train_error" in S:
    st.error(S.pop("lab_train_error"), icon=":material/error:")

# a lesson, or a shared link of a trained view (lab_trained=1), trains at once: seeded, so the same picture
first_visit = "lab_visited" not in S
S.lab_visited = True
autorun = S.pop("lab_autorun", False) or (first_visit and st.query_params.get("lab_trained") == "1")
if autorun and config is not None and not S.get("lab_training"):
    start_training()
run = S.get("lab_run")
training = bool(S.get("lab_training")) and run is not None
if run is not None and not training and run.trainer.done and not run.differences(settings):
    st.query_params["lab_trained"] = "1"  # the link now reproduces this trained view
elif "lab_trained" in st.query_params and not training:
    del st.query_params["lab_trained"]

# ---------------------------------------------------------------------------------------------- which model
if run is not None:
    if config is None:
        model, exact = run.model, False
    else:
        model, exact = cached(session_cache("lab_views"), (run.id, run.trainer.step, config), lambda: run.view(config), 4)
    changed = run.differences(settings)
    trained_text = f"trained {run.trainer.step} of {run.trainer.config.steps} steps"
    if run.trainer.history:
        trained_text += f", last accuracy {run.trainer.history[-1][2]:.1%}"
    if changed and exact:
        runtime = [c for c in changed if c in ("attention", "window", "n_head")]
        if runtime:
            st.info(f"Showing the trained weights read with the new {', '.join(runtime)} (trained with "
                    + ", ".join(f"{c} = {getattr(run.settings, c)}" for c in runtime)
                    + "). No retraining was needed to look; press **Train** to train this configuration.", icon=":material/swap_horiz:")
    elif changed:
        st.info("The controls describe a different model (" + ", ".join(changed) + " changed). Showing the model "
                "you trained; press **Train** to train the new one.", icon=":material/info:")
    view_settings = settings if exact else run.settings
elif config is not None:
    model = untrained_model(settings)
    trained_text = "untrained: random weights (seed %d). Press **Train**." % settings.seed
    view_settings = settings
else:
    st.stop()

cfg = model.config
view_task = TASKS[view_settings.task]

# ---------------------------------------------------------------------------------------------- train controls
c1, c2, c3, c4 = st.columns([1, 1, 1, 5])
c1.button("▶ Train", on_click=start_training, disabled=config is None or training, type="primary", key="lab_train")
c2.button("■ Stop", on_click=stop_training, disabled=not training, key="lab_stop")
c3.button("↺ Reset", on_click=reset, disabled=run is None, key="lab_reset")
status = c4.empty()
status.markdown(("**Training…** " if training else "") + trained_text)
progress_slot = st.empty()
loss_slot = st.empty()
if run is not None and run.trainer.history:
    loss_slot.plotly_chart(figures.loss_curve(run.trainer.history), key="lab_loss")

# ---------------------------------------------------------------------------------------------- input and output
m1, m2, m3, m4 = st.columns(4)
m1.metric("Parameters", f"{model.num_params():,}")
m2.metric("Context", f"{cfg.block_size} tokens")
m3.metric("Heads × head size", f"{cfg.n_head} × {cfg.head_dim}")
flops_slot = m4.empty()

example_text, _ = lab.example(view_settings)
from_url = "lab_input" not in S and "lab_input" in st.query_params
if not from_url and S.get("lab_input_auto") != example_text and \
        S.get("lab_input", S.get("lab_input_auto")) == S.get("lab_input_auto"):
    S.lab_input = example_text  # follow the example until the user types their own
S.lab_input_auto = example_text
text = st.text_input("Your input", key="lab_input", bind="query-params", max_chars=512,
                     help=f"Allowed: {lab.describe_chars(view_task.input_chars)}.")
check = lab.check_input(view_task, cfg, text, view_settings.length)
analysis = None
if not check.ok:
    st.warning(check.message, icon=":material/keyboard:")
else:
    key = (run.id if run else "untrained", run.trainer.step if run else 0, cfg, text)
    analysis = cached(session_cache("lab_analyses"), key, lambda: lab.analyze(model, view_task, text))
    flops_slot.metric("Attention FLOPs (this input)", f"{analysis.flops:,.0f}")
    st.markdown("**Model output** (darker = more probable" + (", wavy red = wrong)" if analysis.expected else ")"))
    st.html(figures.probability_html(analysis.answer, analysis.probs, analysis.expected))
    if analysis.expected is not None:
        right = sum(a == b for a, b in zip(analysis.answer, analysis.expected))
        st.caption(f"{right} of {len(analysis.expected)} characters right.")
    if cfg.attention == "dynamic_window":
        st.caption("Dynamic window: " + dynamic_window_rule(len(analysis.tokens), cfg.window) + ".")

# ---------------------------------------------------------------------------------------------- attention
st.subheader("Attention")
grid_slot = st.empty()
if analysis is not None:
    tokens = tuple(analysis.tokens)
    grid_slot.plotly_chart(grid_figure(analysis.attentions, tokens), key="lab_grid")
    sel1, sel2 = st.columns(2)
    S.lab_layer = min(S.get("lab_layer", 0), cfg.n_layer - 1)
    S.lab_head = min(S.get("lab_head", 0), cfg.n_head - 1)
    layer = sel1.selectbox("Layer", list(range(cfg.n_layer)), key="lab_layer", bind="query-params")
    head = sel2.selectbox("Head", list(range(cfg.n_head)), key="lab_head", bind="query-params")
    dark = st.context.theme.type == "dark"
    # only the open tab is computed and sent: the bertviz pages carry ~350 KB of d3/jQuery each
    tab1, tab2, tab3 = st.tabs(["Selected head", "bertviz head view", "bertviz model view"], key="lab_tab",
                               on_change="rerun", bind="query-params")
    if tab1.open:
        with tab1:
            st.plotly_chart(head_figure(analysis.attentions[layer, head], tokens, f"layer {layer}, head {head}"),
                            key="lab_head_map")
    if tab2.open:
        with tab2:
            st.iframe(bertviz_html(analysis.attentions, tokens, "head", dark), height=140 + 21 * len(tokens))
    if tab3.open:
        with tab3:
            st.iframe(bertviz_html(analysis.attentions, tokens, "model", dark), height=80 + 250 * cfg.n_layer)

S.lab_render_s = time.perf_counter() - render_start  # server time of this run (read by the benchmark)

# ---------------------------------------------------------------------------------------------- live training
if training:
    trainer = run.trainer
    tokens = tuple(view_task.tokenizer.decode(trainer.watch[0])) if trainer.watch is not None else None
    refresh = S.lab_refresh_times
    while not trainer.done:
        progress = trainer.run(seconds=REFRESH_S, every=10**9)
        progress_slot.progress(trainer.step / trainer.config.steps,
                               text=f"step {trainer.step}/{trainer.config.steps} · loss {progress.loss:.3f} · "
                                    f"accuracy {progress.accuracy:.1%}")
        loss_slot.plotly_chart(figures.loss_curve(trainer.history), key=f"lab_loss_{trainer.step}")
        if tokens is not None:
            snap = lab.stack(trainer.snapshot())
            grid_slot.plotly_chart(figures.attention_grid(snap, tokens), key=f"lab_grid_{trainer.step}")
        refresh.append(time.perf_counter())
    S.lab_training = False
    st.rerun()
