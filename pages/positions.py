"""Positional Encoding Lab: what position means to a transformer, and which encodings extrapolate."""
import streamlit as st

from explorer import extrapolation, figures, lab
from explorer.encodings import ENCODINGS
from explorer.tasks import TASKS
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = extrapolation.ExtrapolationSettings()


def run_experiment(settings):
    S.pe_handles = [ui.submit(job) for job in extrapolation.jobs(settings)]


def stop():
    for h in S.pop("pe_handles"):
        h.release(ui.holder())


st.title("Positional Encoding Lab")
st.caption("Attention by itself is blind to order: move a key and its value together to another place and, "
           "without a mask, the weighted sum is the same. Each encoding gives position back in its own way — and "
           "they differ most on inputs longer than any seen in training.")

tabbed = [cls for cls in ENCODINGS.values() if cls.section() is not None]  # every encoding with a tab of its own
tabs = st.tabs([cls.title for cls in tabbed], key="pe_tab", on_change="rerun", bind="query-params")  # only the open one is drawn

# ---------------------------------------------------------------------------------------------- experiment
st.header("Train short, test long")
with st.form("pe_form"):
    c1, c2, c3 = st.columns(3)
    task = c1.selectbox("Task", TASKS.names(), index=TASKS.names().index(D.task), key="pe_task", bind="query-params",
                        help="What every model learns.")
    train_len = c2.slider("Training length L", 2, 16, D.train_len, key="pe_train_len", bind="query-params",
                          help="Models train on lengths L/2 to L, then are tested at L, 2L and 4L.")
    max_steps = c3.number_input("Step cap per model", 50, 5000, D.max_steps, step=50, key="pe_steps",
                                bind="query-params", help="Each model trains until it fits its training length "
                                                          "(95% accuracy) or this many steps.")
    encs = st.multiselect("Encodings", ENCODINGS.names(), default=list(D.encodings), key="pe_encodings",
                          bind="query-params", help="One model per encoding.")
    submitted = st.form_submit_button("Run the experiment", type="primary")
settings = extrapolation.ExtrapolationSettings(task=task, train_len=int(train_len), max_steps=int(max_steps),
                                               encodings=tuple(e for e in ENCODINGS.names() if e in encs))
handles = S.get("pe_handles")
if handles is not None and [h.job.key for h in handles] != [settings.model_key(e) for e in settings.encodings]:
    handles = None  # the controls changed since: that experiment is not this view
result, statuses = None, []
try:
    settings.validate()
    problem = None
except ValueError as e:
    problem = f"This experiment cannot run: {e}."
if problem:
    st.error(problem, icon=":material/error:")
else:
    st.caption(f"Each model ({settings.n_layer} layers, {settings.n_head} heads, width {settings.n_embd}) trains on "
               f"inputs of length {max(1, settings.train_len // 2)}–{settings.train_len} until it reaches 95% token "
               f"accuracy at length {settings.train_len} (at most {settings.max_steps} steps), then is tested on fresh "
               f"inputs of length {', '.join(str(n) for n in settings.lengths())}. The models train side by side.")
    speed = ui.submit(lab.calibration_job())  # this server's training speed, measured once and shared
    if speed.done and handles is None:
        st.caption(extrapolation.estimate_text(settings, speed.result(), ui.scheduler().workers))
    if (ui.arrived_to_run(PAGE, "pe_ran") and handles is None) or submitted:
        run_experiment(settings)
        handles = S.pe_handles
    statuses = [h.status for h in handles] if handles is not None else []  # read once: jobs move on meanwhile
    if statuses and all(st_ == "done" for st_ in statuses):
        result = extrapolation.combine(settings, [h.result() for h in handles])
    ui.mark_finished("pe_ran", result is not None)

for tab, cls in zip(tabs, tabbed):
    with tab:
        st.caption(f"**{cls.title}**: {cls.summary} ({cls.paper}).")
        if tab.open:
            ui.section(cls.section(), experiment=result)
        else:
            ui.controls(cls.section().controls)  # a closed tab's controls are still drawn, so a link's values are kept

if problem:
    pass
elif handles is None:
    st.info("Press **Run the experiment**. The default (5 encodings, copy, L = 8) takes about a minute and a half; "
            "an experiment someone has already run comes back at once.", icon=":material/science:")
elif any(st_ in ("failed", "refused") for st_ in statuses):
    st.error("The experiment could not run: " + "; ".join(h.error for h in handles if h.error) + ".",
             icon=":material/error:")
elif result is None and any(st_ in ("queued", "running") for st_ in statuses):
    st.button("Stop", key="pe_stop", on_click=stop, help="Stop the experiment (nothing else is lost).")
    bars = [st.empty() for _ in handles]

    def redraw():
        for bar, h in zip(bars, handles):
            frac, what = h.progress()
            bar.progress(min(1.0, frac), text=what if h.active else f"{h.job.encoding}: done")

    ui.live(handles, redraw, bars)
elif result is None:
    st.info("The experiment was stopped. Press **Run the experiment** to start it again.", icon=":material/science:")
else:
    lens = settings.lengths()
    acc = {e: (lens, [result.accuracy(e, n) for n in lens]) for e in settings.encodings}
    loss = {e: (lens, result.losses(e)) for e in settings.encodings}
    c1, c2 = st.columns(2)
    with c1:
        ui.chart(figures.lines_figure(acc, "token accuracy", "evaluation length", "accuracy", y_range=(0, 1.02)),
                 "pe_x_acc", "Token accuracy of each encoding's model at each evaluation length.")
    with c2:
        ui.chart(figures.lines_figure(loss, "loss", "evaluation length", "loss (nats)", log_y=True), "pe_x_loss",
                 "Loss of each encoding's model at each evaluation length.")
    ui.table([{"encoding": r["encoding"], "steps": r["steps"], "fitted L": "yes" if r["fitted"] else "no",
               "eval length": r["eval_len"], "accuracy": "—" if r["accuracy"] is None else f"{r['accuracy']:.1%}",
               "loss": "—" if r["loss"] is None else f"{r['loss']:.3f}", "note": r.get("note", "")}
              for r in result.rows], "pe_table")
    for r in result.rows:
        if r.get("note"):
            st.warning(f"{r['encoding']} at length {r['eval_len']}: {r['note']}.", icon=":material/block:")
            break
    back = TASKS[settings.task].lookback(lens[-1])
    st.markdown("**What came out this time**\n" + "\n".join(f"- {line}" for line in result.findings()) + "\n\n"
                + (f"On {settings.task} a longer input also needs attention at offsets no training example used: at "
                   f"length {lens[-1]} an answer token looks {back[0]}"
                   + (f"–{back[1]}" if back[1] != back[0] else "") + " tokens back, while training at length "
                   f"{settings.train_len} never needed more than {TASKS[settings.task].lookback(settings.train_len)[1]}. "
                   if back else "")
                + "Relative encodings (ALiBi, RoPE) keep the local part of the job (finding the separator, reading "
                  "neighbours); sinusoidal positions past the training range are vectors the model never saw; a "
                  "learned table has no row for them at all; with no encoding, the model must count. Results depend "
                  "on the seed and the step cap: change them and compare.")
    st.subheader(f"Attention at length {lens[-1]}")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", list(range(settings.n_layer)), key="pe_layer", bind="query-params",
                         help="Which layer the map shows.")
    head = c2.selectbox("Head", list(range(settings.n_head)), key="pe_head", bind="query-params",
                        help="Which head the map shows.")
    # one encoding's map at a time, at a size a projector can show: only the open tab is drawn
    map_tabs = st.tabs(list(settings.encodings), key="pe_map", on_change="rerun", bind="query-params")
    for tab, e in zip(map_tabs, settings.encodings):
        with tab:
            if not tab.open:
                continue
            m = result.models[e]
            c_map, c_about = st.columns([3, 2])
            c_about.markdown(result.summary(e))
            if m.tokens is None:
                c_about.caption(m.maps)
            else:
                with c_map:
                    ui.chart(figures.attention_heatmap(m.maps[layer, head], m.tokens, e, height=560),
                             f"pe_x_map_{e}", f"Attention of the {e} model, layer {layer}, head {head}, at length "
                                              f"{lens[-1]}.")
