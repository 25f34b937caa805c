"""Mixture of experts: a router sends each token to a few experts; train one live beside the same
mixture without its balancing loss and a dense model with the same active parameters."""
import streamlit as st

from explorer import experts, figures, funnel, lab, residuals
from explorer.blocks import LAYOUTS, NORMS
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = experts.ExpertsSettings()


def start(settings):
    stop()
    S.moe_handle = ui.submit(experts.ExpertsJob(settings))


def stop():
    handle = S.pop("moe_handle", None)
    if handle is not None:
        S.moe_stopped = handle.job.live()  # keep what it had
        handle.release(ui.holder())


def start_funnel(settings):
    stop_funnel()
    S.moe_fun_handles = [ui.submit(job) for job in settings.jobs()]


def stop_funnel():
    for handle in S.pop("moe_fun_handles", []):
        handle.release(ui.holder())


def start_residuals(settings):
    stop_residuals()
    S.moe_res_handle = ui.submit(residuals.ResidualJob(settings))


def stop_residuals():
    handle = S.pop("moe_res_handle", None)
    if handle is not None:
        S.moe_res_stopped = handle.job.live()
        handle.release(ui.holder())


st.title("Mixture of experts")
st.caption("A mixture-of-experts layer replaces the block's one MLP by several, and a router sends each token to "
           "its top-k of them: more parameters, the same work per token. Train one on three tasks at once and see "
           "where the router sends the tokens.")

with st.sidebar:
    st.header("Experts (first tab)")
    n_experts = st.slider("Experts", 2, 8, D.n_experts, key="moe_experts", bind="query-params",
                          help="Experts per layer, each an MLP of the dense model's shape.")
    top_k = st.slider("Top-k", 1, 4, D.top_k, key="moe_top_k", bind="query-params",
                      help="Experts each token is sent to: 1 as in Switch Transformer, 2 as in GShard and Mixtral.")
    capacity = st.select_slider("Capacity factor", experts.CAPACITIES, D.capacity_factor, key="moe_capacity",
                                bind="query-params", help="An expert takes at most factor × top-k × tokens ÷ experts "
                                                          "tokens of a batch; the rest are dropped (their residual "
                                                          "path carries them on).")
    noise = st.select_slider("Router noise", experts.NOISES, D.router_noise, key="moe_noise", bind="query-params",
                             help="Noise added to the router's scores while training (noisy top-k gating).")
    aux = st.select_slider("Balancing loss weight", experts.AUX_WEIGHTS, D.aux_weight, key="moe_aux",
                           bind="query-params", help="Weight of Switch Transformer's load-balancing loss in the "
                                                     "training loss (0 = off).")
    st.header("Training")
    layers = st.slider("Layers", 1, 4, D.n_layer, key="moe_layers", bind="query-params",
                       help="Transformer blocks, each attention then a mixture of experts.")
    steps = st.number_input("Training steps", 50, 3000, D.steps, step=50, key="moe_steps", bind="query-params",
                            help="Optimisation steps of 64 sequences, for each of the three models.")
    seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="moe_seed", bind="query-params",
                           help="Seeds the weights and the data: the same seed gives everyone the same picture.")

settings = experts.ExpertsSettings(int(n_experts), int(top_k), float(capacity), float(noise), float(aux),
                                   n_layer=int(layers), steps=int(steps), seed=int(seed))
tab_experts, tab_residuals, tab_funnel = st.tabs(["Experts", "Residuals and norms", "Funnel"], key="moe_tab",
                                                 on_change="rerun", bind="query-params")

# ---------------------------------------------------------------------------------------------- experts
if tab_experts.open:
    with tab_experts:
        problem = settings.problem()
        if problem:
            st.error(f"These settings cannot be trained: {problem}.", icon=":material/error:")
        else:
            st.markdown(f"**{experts.MIXED.title}.** {experts.MIXED.description} The three models: "
                        + "; ".join(f"**{name}** ({active:,} of {total:,} parameters used per token)"
                                    for name, (active, total) in experts.params_table(settings).items()) + ".")

        handle = S.get("moe_handle")
        if handle is not None and handle.job.settings != settings:
            handle = None  # the controls changed since: that run is not this view
        if ui.arrived_to_run(PAGE, "moe_trained") and problem is None and handle is None:
            start(settings)
            handle = S.moe_handle
        status = handle.status if handle is not None else None  # read once: the job moves on meanwhile
        training = status in ("queued", "running")

        c1, c2, c3 = st.columns([1, 1, 6])
        c1.button("▶ Train", on_click=start, args=(settings,), disabled=problem is not None or training,
                  type="primary", key="moe_train",
                  help="Train the three models on this server (the same settings train once, for everyone).")
        c2.button("■ Stop", on_click=stop, disabled=not training, key="moe_stop",
                  help="Stop and keep the models as they are.")
        status_slot = c3.empty()
        speed = ui.submit(lab.calibration_job())  # this server's training speed, measured once and shared
        if problem is None and not training and speed.done:
            st.caption(experts.estimate_text(settings, speed.result()))

        run = handle.job.live() if handle is not None else None
        stopped = S.get("moe_stopped")
        if run is None and stopped is not None and stopped.settings == settings:
            run = stopped
        if status in ("failed", "refused"):
            st.error(f"The run could not go on: {handle.error}.", icon=":material/error:")
        ui.mark_finished("moe_trained", status == "done")

        layer = st.selectbox("Layer", list(range(settings.n_layer)), key="moe_layer", bind="query-params",
                             help="Which layer the load and routing views show.")
        progress_slot, loss_slot, cv_slot, load_slot = st.empty(), st.empty(), st.empty(), st.empty()

        def draw(now) -> None:
            """The training views, redrawn while training."""
            step = now.step if now is not None else 0
            if training:
                text = f"**Training…** step {step} of {settings.steps} for each model"
                progress_slot.progress(step / settings.steps, text=f"step {step}/{settings.steps}")
            else:
                text = (f"Trained {step} of {settings.steps} steps." if now is not None
                        else "Not trained yet: press **Train**.")
            notice = ui.queue_notice(handle, "your run") if training else ""
            status_slot.markdown(text + (f"  \n{notice}" if notice else ""))
            if now is None:
                return
            ui.chart(figures.lines_figure(experts.loss_series(now), "held-out loss", "training time (s)",
                                          "loss (nats)", log_y=True), "moe_loss",
                     "Held-out loss of the three models against their training time.", slot=loss_slot)
            ui.chart(figures.lines_figure(experts.cv_series(now), "load imbalance (coefficient of variation)",
                                          "step", "std / mean of the experts' load"), "moe_cv",
                     "How unevenly the experts are loaded over training, with and without the balancing loss.",
                     slot=cv_slot)
            ui.chart(figures.lines_figure(experts.load_series(now, layer), f"each expert's load, layer {layer} "
                                          "(with the balancing loss)", "step", "share of routed tokens",
                                          y_range=(0, 1.02)), "moe_load",
                     f"Share of the routed tokens each expert took in layer {layer}, over training.", slot=load_slot)

        if training:
            ui.live(handle, lambda: draw(handle.job.live()),
                    [status_slot, progress_slot, loss_slot, cv_slot, load_slot])
        else:
            draw(run)

        if run is not None and not training:
            st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in experts.findings(run)))
            m1, m2, m3 = st.columns(3)
            for col, (name, ms) in zip((m1, m2, m3), run.step_ms().items()):
                col.metric(f"{name}: time per step", f"{ms:.0f} ms",
                           help="Measured while the three trained in turns.")
        elif run is None and problem is None and not training:
            st.info("Press **Train**: the mixture, the mixture without its balancing loss and the dense model train in "
                    "turns, and the figures fill in as they go. Until then the router below has random weights.",
                    icon=":material/model_training:")

        if problem is None and not training:
            trained_model = run is not None
            moe_model = run.models["MoE"] if trained_model else experts.untrained(settings)
            st.subheader("Where the router sends your input" + ("" if trained_model else " (untrained: random weights)"))
            c1, c2 = st.columns([3, 1])
            if "moe_input" not in S and "moe_input" not in st.query_params:
                S.moe_input = experts.default_input(settings)
            text = c1.text_input("Your input", key="moe_input", bind="query-params", max_chars=settings.length,
                                 help=f"Up to {settings.length} lowercase letters (the models were trained on "
                                      f"{settings.length}).")
            task = c2.selectbox("Task", list(experts.TAGS), key="moe_task", bind="query-params",
                                help="The tag written after your input: it tells the model what to do.")
            view = experts.input_view(moe_model, text, task, settings.length)
            if view.message:
                st.warning(view.message, icon=":material/keyboard:")
            else:
                st.markdown(f"Answer: **{md_escape(view.answer)}** (right: **{md_escape(view.expected)}**).")
                ui.chart(figures.routing_figure(view.gates[layer], view.tokens, view.chosen[layer]),
                         "moe_routing", f"Router probabilities of each token for each expert in layer {layer}; "
                                        "circles mark the experts the token was sent to.")
            if trained_model:
                st.subheader(f"Does each task get its own experts? (layer {layer})")
                table = experts.specialisation(moe_model, settings.length)
                ui.table(experts.specialisation_rows(table, layer), "moe_table")
                st.caption(experts.specialisation_finding(table))


# ---------------------------------------------------------------------------------------------- residuals
if tab_residuals.open:
    with tab_residuals:
        R = residuals.ResidualSettings()
        st.markdown(f"The same {R.n_layer}-block model, three ways to wire each block (**pre-LN**, **post-LN**, **no "
                    f"residual**), trained side by side on {R.task} (length {R.length}). Each block's gradient and the "
                    "residual stream's size are measured on a fixed batch as they train.")
        c1, c2, c3 = st.columns([3, 1, 1])
        chosen = c1.multiselect("Layouts", LAYOUTS.names(), default=list(R.layouts), key="moe_res_layouts",
                                bind="query-params",
                                help="Where the residual path and the norms go: " + "; ".join(
                                    f"{x.title}: {x.summary}" for x in LAYOUTS.values()) + ".")
        norm = c2.selectbox("Norm", NORMS.names(), key="moe_res_norm", bind="query-params",
                            help="layernorm, or rmsnorm (RMSNorm: no mean subtraction, no bias).")
        res_steps = c3.number_input("Steps", 20, 2000, R.steps, step=20, key="moe_res_steps", bind="query-params",
                                    help="Training steps of each model.")
        rs = residuals.ResidualSettings(layouts=tuple(x for x in LAYOUTS.names() if x in chosen), norm=norm,
                                        steps=int(res_steps))
        res_problem = rs.problem()
        if res_problem:
            st.warning(f"Nothing to train: {res_problem}.", icon=":material/info:")
        res_handle = S.get("moe_res_handle")
        if res_handle is not None and res_handle.job.settings != rs:
            res_handle = None
        if ui.arrived_to_run(PAGE, "moe_res_trained") and res_problem is None and res_handle is None:
            start_residuals(rs)
            res_handle = S.moe_res_handle
        res_status = res_handle.status if res_handle is not None else None
        res_training = res_status in ("queued", "running")
        b1, b2, b3 = st.columns([1, 1, 6])
        b1.button("▶ Train", on_click=start_residuals, args=(rs,), disabled=res_problem is not None or res_training,
                  type="primary", key="moe_res_train", help="Train one model per layout (shared: once per server).")
        b2.button("■ Stop", on_click=stop_residuals, disabled=not res_training, key="moe_res_stop",
                  help="Stop and keep what they learned so far.")
        res_status_slot = b3.empty()
        res_run = res_handle.job.live() if res_handle is not None else None
        kept = S.get("moe_res_stopped")
        if res_run is None and kept is not None and kept.settings == rs:
            res_run = kept
        ui.mark_finished("moe_res_trained", res_status == "done")
        res_progress, res_loss_slot, res_grad_slot = st.empty(), st.empty(), st.empty()
        res_ratio_slot, res_norm_slot = st.empty(), st.empty()

        def draw_residuals(now) -> None:
            step = now.step if now is not None else 0
            if res_training:
                res_status_slot.markdown(f"**Training…** step {step} of {rs.steps}")
                res_progress.progress(step / rs.steps, text=f"step {step}/{rs.steps}")
            else:
                res_status_slot.markdown(f"Trained {step} of {rs.steps} steps." if now is not None
                                         else "Not trained yet: press **Train**.")
            if now is None:
                return
            ui.chart(figures.lines_figure(residuals.loss_series(now), "held-out loss", "step", "loss (nats)",
                                          log_y=True), "moe_res_loss",
                     "Held-out loss of each layout's model over training.", slot=res_loss_slot)
            ui.chart(figures.lines_figure(residuals.grad_series(now, 0), "gradient norm per block, at initialisation",
                                          "block", "gradient norm", log_y=True, x_integer=True), "moe_res_grad",
                     "Each block's gradient norm at initialisation, per layout.", slot=res_grad_slot)
            ui.chart(figures.lines_figure(residuals.ratio_series(now), "first block's gradient ÷ last block's, "
                                          "during training", "step", "ratio", log_y=True), "moe_res_ratio",
                     "The first block's gradient norm divided by the last block's at every check, per layout.",
                     slot=res_ratio_slot)
            ui.chart(figures.lines_figure(residuals.resid_series(now), f"residual stream size at step {now.step}",
                                          "after block (0 = the embedding)", "mean norm per token", x_integer=True),
                     "moe_res_norms", "The residual stream's mean size after the embedding and after each block.",
                     slot=res_norm_slot)

        if res_training:
            ui.live(res_handle, lambda: draw_residuals(res_handle.job.live()),
                    [res_status_slot, res_progress, res_loss_slot, res_grad_slot, res_ratio_slot, res_norm_slot])
        else:
            draw_residuals(res_run)
        if res_run is not None and not res_training:
            st.markdown("**What came out**\n" + "\n".join(f"- {line}" for line in residuals.findings(res_run)))


# ---------------------------------------------------------------------------------------------- funnel
if tab_funnel.open:
    with tab_funnel:
        F = funnel.FunnelSettings()
        st.markdown(f"A **funnel** (hierarchical representations): before the chosen blocks the sequence is pooled to "
                    f"half its length, each merged token the mean of a pair; what the shorter blocks add is handed back "
                    f"to full length for the outputs, causally (a position only receives pairs it has seen whole). "
                    f"Here a {F.n_layer}-block funnel and the same model flat learn {F.task} (length {F.length}).")
        c1, c2 = st.columns([3, 1])
        pool = c1.multiselect("Pool before blocks", list(range(1, F.n_layer)), default=list(F.pool_before),
                              key="moe_fun_pool", bind="query-params",
                              help="Each chosen block (and those after it) reads a sequence half as long again.")
        fun_steps = c2.number_input("Steps", 20, 2000, F.steps, step=20, key="moe_fun_steps", bind="query-params",
                                    help="Training steps of each model.")
        fs = funnel.FunnelSettings(pool_before=tuple(sorted(int(p) for p in pool)), steps=int(fun_steps))
        fun_problem = fs.problem()
        if fun_problem:
            st.warning(f"Nothing to train: {fun_problem}.", icon=":material/info:")
        handles = S.get("moe_fun_handles")
        if handles and [h.job.key for h in handles] != [j.key for j in fs.jobs()]:
            handles = None
        if ui.arrived_to_run(PAGE, "moe_fun_trained") and fun_problem is None and not handles:
            start_funnel(fs)
            handles = S.moe_fun_handles
        statuses = [h.status for h in handles] if handles else []  # read once: the jobs move on meanwhile
        fun_training = any(x in ("queued", "running") for x in statuses)
        fun_done = bool(statuses) and all(x == "done" for x in statuses)
        b1, b2, b3 = st.columns([1, 1, 6])
        b1.button("▶ Train", on_click=start_funnel, args=(fs,), disabled=fun_problem is not None or fun_training,
                  type="primary", key="moe_fun_train", help="Train the funnel and the flat model (shared: once per "
                                                             "server).")
        b2.button("■ Stop", on_click=stop_funnel, disabled=not fun_training, key="moe_fun_stop",
                  help="Stop both.")
        ui.mark_finished("moe_fun_trained", fun_done)
        names = funnel.level_names(fs) if fun_problem is None else ["level 0"]
        which = st.selectbox("Level", list(range(len(names))), key="moe_fun_level", bind="query-params",
                             help="Which level's attention the maps show (after training): " + "; ".join(names)
                                  + ". Each merged token is labelled with the characters it averages.")
        if fun_training:
            bars = [st.empty() for _ in handles]

            def redraw_funnel():
                for bar, h in zip(bars, handles):
                    frac, what = h.progress()
                    bar.progress(min(1.0, frac), text=f"{h.job.title}: {what}" if h.active else f"{h.job.title}: done")

            ui.live(handles, redraw_funnel, bars)
        elif fun_done:
            funnel_run, flat_run = (h.result() for h in handles)
            ui.chart(figures.lines_figure(funnel.loss_series(funnel_run, flat_run, fs), "training loss", "step",
                                          "loss (nats)", log_y=True), "moe_fun_loss",
                     "Training loss of the funnel and the flat model.")
            st.caption(funnel.run_finding(funnel_run, flat_run, fs))
            maps = funnel.example_maps(funnel_run.model, fs)
            shown = maps[min(int(which), len(maps) - 1)]
            st.caption(names[min(int(which), len(names) - 1)])
            ui.chart(figures.attention_grid(shown.maps, shown.labels, layers=shown.blocks), "moe_fun_maps",
                     f"Attention of the funnel's blocks at level {shown.level} (rows: blocks, columns: heads) over "
                     f"{len(shown.labels)} tokens, each labelled with the characters it covers.")
        elif handles is None and fun_problem is None:
            st.info("Press **Train** to train the funnel and the flat model side by side.",
                    icon=":material/model_training:")
        st.subheader("Time per training step as the sequence grows")
        cost = ui.submit(funnel.cost_job(fs)) if fun_problem is None else None
        if cost is not None and cost.done:
            series = cost.result()
            ui.chart(figures.loglog_figure(series, f"time per training step (forward + backward, batch "
                                                   f"{funnel.COST_BATCH})", "ms"),
                     "moe_fun_cost", "Milliseconds per training step of the funnel and the flat model at each length.")
            st.caption(funnel.cost_finding(series))
        elif cost is not None:
            st.caption("Timing the funnel and the flat model at N = "
                       + ", ".join(f"{n:,}" for n in funnel.SWEEP_N) + "…")
            if cost.active and not fun_training:  # while training, that live view reruns the page when it ends
                cost_bar = st.empty()
                ui.live(cost, lambda: cost_bar.progress(cost.progress()[0], text=cost.progress()[1]), [cost_bar])
