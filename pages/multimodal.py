"""Multimodal: image patches and words meeting in cross-attention (or in one sequence), trained live
on a generated world of shapes; where each written word looks in the image."""
import streamlit as st

from explorer import figures, multimodal as mm, scenes
from explorer.figures import md_escape
from explorer.fusion import FUSIONS, PATCHES, POS2D
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = mm.MultimodalSettings()
DEFAULTS = mm.url_defaults()
VIEW_EVERY = 50  # steps between redraws of the maps while training


def start(settings):
    stop()
    S.mm_handles = {f: ui.submit(mm.training_job(settings, f)) for f in settings.fusions}
    S.mm_stopped, S.mm_scoring = {}, {}  # a new run: its scoring is tried afresh


def stop():
    handles = S.pop("mm_handles", None) or {}
    S.mm_stopped = {f: (h.job.key, h.job.live()) for f, h in handles.items()
                    if h.job.live() is not None}  # keep what they had
    for h in handles.values():
        h.release(ui.holder())


def random_scene():
    S.mm_random_no = S.get("mm_random_no", 0) + 1
    rows = mm.random_rows(S.mm_random_no)
    S.mm_things = len(rows)
    for i, (shape, colour, cell) in enumerate(rows):
        S[f"mm_shape{i}"], S[f"mm_colour{i}"], S[f"mm_cell{i}"] = shape, colour, cell


@st.cache_resource(max_entries=8)
def untrained(config, seed):
    """Freshly initialised weights: read-only, the same for everyone."""
    from explorer.fusion import build

    return build(config, seed)


st.title("Multimodal")
st.caption("A picture is cut into patches, each patch becomes a token, and a small model learns to write a caption "
           "of it. Compare two ways for the words to meet the image, and see where each word looks.")

# ---------------------------------------------------------------------------------------------- controls
with st.sidebar:
    st.header("Model")
    fusions = st.multiselect("Fusion modes", FUSIONS.names(), default=list(D.fusions), key="mm_fusions",
                             bind="query-params", format_func=lambda f: FUSIONS[f].title,
                             help="Train one or both, side by side on the same scenes.")
    pos2d = st.selectbox("Patch positions", POS2D, index=POS2D.index(D.pos2d), key="mm_pos2d", bind="query-params",
                         help="How a patch knows where it is: a learned table, or fixed 2-D sines (half the "
                              "channels for the row, half for the column).")
    patch = st.select_slider("Patch size (pixels)", list(PATCHES), D.patch, key="mm_patch", bind="query-params",
                             help=f"The {scenes.SIZE}-pixel image is cut into ({scenes.SIZE} / patch)² patches.")
    steps = st.number_input("Training steps (at most)", 100, 5000, D.steps, step=100, key="mm_steps",
                            bind="query-params", help=f"Steps of {D.batch_size} scenes for each model.")
    until = st.toggle("Stop when learned", D.until_learned, key="mm_until_learned", bind="query-params",
                      help=f"Stop once held-out word accuracy stays at {mm.STOP_RULE.accuracy:.0%} or more for "
                           f"{mm.STOP_RULE.checks} checks, one every {mm.STOP_RULE.every} steps.")
    seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="mm_seed", bind="query-params",
                           help="Seeds the weights and the scenes: the same seed gives everyone the same picture.")

compose, draw_tab, upload_tab = st.tabs(list(mm.SOURCES), key="mm_source", on_change="rerun", bind="query-params")
with compose:  # every tab is drawn on every run, so a scene composed stays composed whichever tab is open
    n_things = st.slider("Things in the scene", 1, scenes.MAX_THINGS, DEFAULTS["mm_things"], key="mm_things",
                         bind="query-params", help="One to three shapes, each in its own cell of a 3 × 3 grid.")
    rows = []
    for i in range(scenes.MAX_THINGS):
        off = i >= n_things  # kept (and in the link), not used
        c1, c2, c3 = st.columns(3)
        shape = c1.selectbox(f"Shape {i + 1}", scenes.SHAPES, index=scenes.SHAPES.index(DEFAULTS[f"mm_shape{i}"]),
                             key=f"mm_shape{i}", bind="query-params", disabled=off)
        colour = c2.selectbox(f"Colour {i + 1}", list(scenes.COLOURS),
                              index=list(scenes.COLOURS).index(DEFAULTS[f"mm_colour{i}"]), key=f"mm_colour{i}",
                              bind="query-params", disabled=off)
        cell = c3.selectbox(f"Place {i + 1}", mm.CELLS, index=mm.CELLS.index(DEFAULTS[f"mm_cell{i}"]),
                            key=f"mm_cell{i}", bind="query-params", disabled=off)
        rows.append((shape, colour, cell))
    st.button("Random scene", on_click=random_scene, key="mm_random",
              help="The next scene from the held-out stream (never a training scene's stream).")
with draw_tab:
    st.caption(f"Paint with the world's colours on a {scenes.SIZE} × {scenes.SIZE} canvas, then press **Caption this "
               "drawing**. The drawing stays in your session (it is not part of the page's link).")
    drawing = ui.drawing_canvas("mm_canvas", scenes.SIZE, scenes.COLOURS, scenes.BACKGROUND, brush=9,
                                use_label="Caption this drawing")
with upload_tab:
    upload = st.file_uploader(f"Caption your own picture (PNG or JPEG, at most {mm.UPLOAD_BYTES / 1e6:.0f} MB)",
                              type=["png", "jpg", "jpeg"], key="mm_upload",
                              help=f"Resized to {scenes.SIZE} × {scenes.SIZE} on this server; not part of the page's link.")

settings = mm.MultimodalSettings(fusions=tuple(f for f in FUSIONS.names() if f in fusions), pos2d=pos2d,
                                 patch=int(patch), steps=int(steps), seed=int(seed), until_learned=bool(until))
problem = settings.problem()
scene, scene_problem = mm.scene_from_controls(rows, int(n_things))

# ---------------------------------------------------------------------------------------------- the picture
source = next(name for name, tab in zip(mm.SOURCES, (compose, draw_tab, upload_tab)) if tab.open)
shown = mm.picture(source, scene, scene_problem, upload.getvalue() if upload is not None else None, drawing)
image, truth = shown.image, shown.truth
if shown.error:
    st.warning(f"Your own picture is not captioned: {shown.error} The composed scene is shown instead.",
               icon=":material/broken_image:")
if shown.problem:
    st.warning(f"This scene cannot be drawn: {shown.problem}.", icon=":material/info:")
if shown.note:
    st.info(shown.note, icon=":material/image:")

# ---------------------------------------------------------------------------------------------- training
if problem:
    st.error(f"These settings cannot be trained: {problem}.", icon=":material/error:")
handles = S.get("mm_handles") or {}
if handles and [h.job.key for h in handles.values()] != [("multimodal", settings, f) for f in settings.fusions]:
    handles = {}  # the controls changed since: those runs are not this view
if ui.arrived_to_run(PAGE, "mm_trained") and problem is None and not handles:
    start(settings)
    handles = S.mm_handles
statuses = {f: h.status for f, h in handles.items()}  # read once: the jobs move on meanwhile
training = any(x in ("queued", "running") for x in statuses.values())
done = bool(statuses) and all(x == "done" for x in statuses.values())
c1, c2, c3 = st.columns([1, 1, 6])
c1.button("▶ Train", on_click=start, args=(settings,), disabled=problem is not None or training, type="primary",
          key="mm_train", help="Train the chosen fusion modes on this server (the same settings train once, for "
                               "everyone).")
c2.button("■ Stop", on_click=stop, disabled=not training, key="mm_stop", help="Stop and keep the models as they are.")
status_slot = c3.empty()
ui.mark_finished("mm_trained", done)
for f, h in handles.items():
    if statuses[f] in ("failed", "refused"):
        st.error(f"The {f} run could not go on: {h.error}.", icon=":material/error:")

stopped = {f: run for f, (key, run) in (S.get("mm_stopped") or {}).items() if key == ("multimodal", settings, f)}


def current_runs() -> dict:
    out = {f: h.job.live() for f, h in handles.items() if h.job.live() is not None}
    return out or ({} if handles else stopped)


progress_slots = {f: st.empty() for f in settings.fusions}
loss_slot = st.empty()

st.subheader("Where does each word look?")
view_slots = {}
if image is not None and problem is None:
    c_word, c_head, c_layer = st.columns([3, 1, 1])
    head = c_head.selectbox("Head", [mm.HEAD_MEAN] + [str(h) for h in range(settings.config("cross").n_head)],
                            key="mm_head", bind="query-params", help="One head's weights, or their mean.")
    layer = c_layer.selectbox("Layer", mm.layer_choices(settings), key="mm_layer", bind="query-params",
                              help="Which layer's attention (a mode with fewer layers shows its last).")
    word = c_word.slider("Word", 0, scenes.MAX_CAPTION - 1, 0, key="mm_word", bind="query-params",
                         help="Which written word's attention to show (past the caption's end: its last word).")
    for col, f in zip(st.columns(len(settings.fusions)), settings.fusions):
        with col:
            view_slots[f] = (st.empty(), st.empty(), st.empty())  # what it wrote, the map, what the map is
    if truth is not None:
        st.caption(f"The true caption: “{' '.join(truth)}”.")
elif image is None:
    ui.chart(figures.scene_figure(scenes.render(mm.DEFAULT_SCENE)), "mm_map_empty", "The default scene.")


def view_and_figure(model, step):
    """The caption, the chosen word's map and its figure (validated by plotly once: a picture is
    thousands of numbers)."""
    view = mm.word_view(model, image, int(word), head, layer)
    fig = None
    if view.grid is not None:
        fig = ui.plotly_figure(figures.scene_figure(image, view.grid, f"“{view.words[view.word]}”: {view.where}"))
    return view, fig, step


def draw_views(runs) -> None:
    """Each mode's caption of the picture and the map of the chosen word, for the model as it is
    now (while training, redrawn once every VIEW_EVERY steps: each redraw is work for the server's
    cores, which the training needs)."""
    for f, (said_slot, map_slot, note_slot) in view_slots.items():
        run = runs.get(f)
        model = run.model if run is not None else untrained(settings.config(f), settings.seed)
        if run is None:
            weights = ("untrained",)
        elif run.finished or not training:
            weights = ("at step", run.step)
        else:
            weights = ("during steps", run.step // VIEW_EVERY)
        # the model shown is named by the settings (its run, or its initial weights) and its step
        view, fig, seen = ui.cached("mm_views", (settings, f, weights, image.tobytes(), word, head, layer),
                                    lambda: view_and_figure(model, run.step if run is not None else 0))
        said = " ".join(view.words) or "(nothing)"
        mark = "" if truth is None else (" ✓" if view.words == truth else " ✗")
        state = " (untrained)" if run is None else ("" if run.finished or not training else f" (step {seen})")
        said_slot.markdown(f"**{FUSIONS[f].title}**{state}: “{md_escape(said)}”{mark}")
        if fig is None:
            note_slot.caption("It wrote no words, so there is no word's attention to show.")
            continue
        ui.chart(fig, f"mm_map_{f}", f"The image with the attention that wrote the word {view.words[view.word]} laid "
                                     f"over its patches ({f} fusion).", slot=map_slot)
        note_slot.caption(("Cross-attention: the weights over the patches sum to 1." if FUSIONS[f].maps_sum_to_one
                           else f"One sequence: {view.on_patches:.0%} of this query's attention is on the patches, the "
                                "rest on the words before it; the highlight shows the patch part.")
                          + " Word t is written by the position reading word t − 1, so this is that query's map.")


def draw(runs) -> None:
    lines = []
    for f in settings.fusions:
        run = runs.get(f)
        if run is None:
            lines.append(f"{FUSIONS[f].title}: waiting to start")
            continue
        learned = f", **learned at step {run.learned_at}**" if run.learned_at is not None else ""
        lines.append(f"{FUSIONS[f].title}: step {run.step} of {run.total}{learned}")
        if training:
            progress_slots[f].progress(min(1.0, run.step / run.total), text=f"{f}: step {run.step}/{run.total}")
    notice = ui.queue_notice(next(iter(handles.values())), "your run") if training else ""
    head_line = "**Training…**" if training else ("Trained." if runs else "Not trained yet: press **Train**.")
    status_slot.markdown(head_line + "  \n" + "  \n".join(lines) + (f"  \n{notice}" if notice else ""))
    if runs:
        ui.chart(figures.lines_figure(mm.loss_series(runs), "training loss", "training time (s)", "loss (nats/word)",
                                      log_y=True, height=300), "mm_loss",
                 "Training loss of each fusion mode against its training time.", slot=loss_slot)
    draw_views(runs)


if training:
    ui.live(list(handles.values()), lambda: draw(current_runs()),
            [status_slot, loss_slot, *progress_slots.values(), *(x for slots in view_slots.values() for x in slots)])
else:
    draw(current_runs())
runs = current_runs()

# ---------------------------------------------------------------------------------------------- scores
st.subheader("How well each mode captions scenes it never saw")
if runs and not training:
    jobs = {f: mm.evaluation_job(("multimodal", settings, f), run) for f, run in runs.items()}
    held = S.setdefault("mm_scoring", {})  # job key -> this session's handle: a failed scoring is said, not retried
    for job in jobs.values():
        if job.key not in held:
            held[job.key] = ui.submit(job)
            while len(held) > 16:
                held.pop(next(iter(held)))
    scoring = {f: held[job.key] for f, job in jobs.items()}
    evals = {f: h.result() for f, h in scoring.items() if h.done}
    failed = {f: h.error for f, h in scoring.items() if h.status in ("failed", "refused", "cancelled")}
    for f, why in failed.items():
        st.error(f"The {f} model could not be scored: {why}.", icon=":material/error:")
    if not failed and len(evals) < len(runs):
        waiting = list(scoring.values())
        score_bar = st.empty()
        ui.live(waiting, lambda: score_bar.progress(
            sum(h.done for h in waiting) / len(waiting),
            text=f"Scoring the captions of {mm.EVAL_SCENES} held-out scenes and {mm.EVAL_SCENES} with unseen pairs…"),
            [score_bar])
    elif not failed:
        ui.table(mm.score_rows(runs, evals, settings), "mm_scores")
        st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in mm.findings(runs, evals)))
        best, base = mm.frequency_baseline()
        st.caption(f"A model that ignores the image and always says the most frequent training caption (“{' '.join(best)}”) "
                   f"gets {base.exact:.0%} of these scenes right. The colour–shape pairs "
                   f"{', '.join(f'{c} {s}' for c, s in scenes.HELD_OUT)} never occur in training.")
elif not training:
    st.info(("Press **Train**: both fusion modes learn the scene world side by side, " if len(settings.fusions) > 1
             else "Press **Train**: the captioner learns the scene world, ")
            + "the loss fills in as it goes, and the maps above follow the model as it is now.",
            icon=":material/model_training:")

with st.expander("How the two modes work", icon=":material/info:"):
    for f in FUSIONS.values():
        st.markdown(f"**{f.title}.** {f.summary} *({f.paper})*")
