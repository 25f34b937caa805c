"""Complexity Lab: attention's cost in theory and on the stopwatch, side by side."""
import streamlit as st

from explorer import complexity, figures, funnel, measure
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = measure.SweepSettings()
KINDS = list(measure.all_kinds())


def measure_now():
    S.cx_handle = ui.submit(measure.SweepJob(S.cx_settings, ui.scheduler().budget))


def stop():
    S.pop("cx_handle").release(ui.holder())


st.title("Complexity Lab")
st.caption("Why full attention is quadratic, and what windows, sparsity and kernels buy — in theory and on "
           "the stopwatch of the machine running this app.")

with st.sidebar:
    st.header("Sweep")
    kinds = st.multiselect("Attention kinds", KINDS, default=list(D.kinds), key="cx_kinds", bind="query-params",
                           help="Which kernels to compute and measure; sdpa is torch's fused kernel, for reference.")
    max_n = st.select_slider("Longest sequence N", [1024, 2048, 4096, 8192, 16384, 32768, 65536], D.max_n,
                             key="cx_max_n", bind="query-params", help="The sweep doubles N from 128 up to this.")
    n_embd = st.select_slider("Width d (all heads)", [16, 32, 64, 128, 256], D.n_embd, key="cx_width",
                              bind="query-params", help="Numbers per token, all heads together.")
    n_head = st.selectbox("Heads", [1, 2, 4, 8, 16], index=2, key="cx_heads", bind="query-params",
                          help="Heads share the width: head size d_h = d / h.")
    window = st.number_input("Window / block size w", 1, 4096, D.window, key="cx_window", bind="query-params",
                             help=complexity.size_help())
    pass_ = st.radio("Pass", measure.PASSES, key="cx_pass", bind="query-params", horizontal=True,
                     help="Forward only, or forward and backward as in training.")
    repeats = st.number_input("Timed repeats (median)", 1, 20, D.repeats, key="cx_repeats", bind="query-params",
                              help="Timed calls per point after a warm-up; noisy points get more.")
    time_budget = st.number_input("Time budget per point (s)", 1.0, 120.0, D.time_budget_s, key="cx_time_budget",
                                  bind="query-params", help="Points predicted to take longer are skipped.")
    mem_budget = st.number_input("Memory budget per point (GB)", 0.1, 16.0, D.memory_budget_bytes / 1e9,
                                 key="cx_mem_budget", bind="query-params",
                                 help="Points predicted to need more are skipped. It can only lower your share: the "
                                      "server's own budget for everyone's heavy work applies too.")

settings = measure.SweepSettings(
    kinds=tuple(k for k in KINDS if k in kinds), max_n=int(max_n), n_embd=int(n_embd), n_head=int(n_head),
    window=int(window), pass_=pass_, repeats=int(repeats), time_budget_s=float(time_budget),
    memory_budget_bytes=float(mem_budget) * 1e9,
)
S.cx_settings = settings
try:
    settings.validate()
    problem = None if settings.kinds else "Pick at least one attention kind in the sidebar."
except ValueError as e:
    problem = f"These settings cannot be measured: {e}."
if problem:
    st.warning(problem, icon=":material/info:")
else:
    # ------------------------------------------------------------------------------------------ theory
    st.subheader("Theory")
    st.markdown(complexity.theory_markdown(settings))
    theory_flops, theory_mem = measure.theory_curves(settings)
    c1, c2 = st.columns(2)
    with c1:
        ui.chart(figures.loglog_figure(theory_flops, "Attention FLOPs (theory)", "FLOPs"), "cx_t_flops",
                 "Theory FLOPs of one layer against sequence length, per kind, log-log.")
    with c2:
        ui.chart(figures.loglog_figure(theory_mem, "Score memory (theory)", "bytes"), "cx_t_mem",
                 "Theory bytes of scores held at once against sequence length, per kind, log-log.")

    # ------------------------------------------------------------------------------------------ measured
    st.subheader("Measured on this machine")
    st.caption(f"{settings.pass_} pass of one attention layer, batch 1, one torch thread (as the server runs every "
               f"computation), in a separate process; time is the median of {settings.repeats} calls after a warm-up "
               "(more where they disagree), whiskers the fastest and slowest; peak memory is measured from torch's "
               "profiler memory events (every allocation and free, replayed in order), not computed. Other users "
               "of this server can add noise.")
    handle = S.get("cx_handle")
    if handle is not None and handle.job.key != ("sweep", settings):
        handle = None  # the controls changed since: that sweep is not this view
    if ui.arrived_to_run(PAGE, "cx_measured") and handle is None:
        measure_now()
        handle = S.cx_handle
    b1, b2 = st.columns([1, 6])
    status = handle.status if handle is not None else None  # read once: the job moves on meanwhile
    running = status in ("queued", "running")
    b1.button("Measure", type="primary", key="cx_measure", on_click=measure_now, disabled=running,
              help="Time every kind at every length.")
    b2.button("Stop", key="cx_stop", on_click=stop, disabled=not running, help="Stop measuring (nothing else is lost).")
    ui.mark_finished("cx_measured", status == "done")
    if not running and status != "done":
        speed = ui.submit(measure.calibration_job(settings))  # a quick measurement at N = 1,024, shared
        b2.caption(f"About {measure.estimate_s(settings, speed.result(), ui.scheduler().budget):.0f} s on this server "
                   "(estimated from a quick measurement at N = 1,024; more where other students are measuring too)."
                   if speed.done else "Estimating how long the sweep takes on this server…")
    if status in ("failed", "refused"):
        st.error(f"The sweep could not run: {handle.error}.", icon=":material/error:")
    elif handle is None:
        st.info("Press **Measure** to time every kind at every length (the default sweep takes about a minute; "
                "a sweep someone has already measured comes back at once).", icon=":material/timer:")
    elif running:
        bar, note = st.empty(), st.empty()

        def redraw():
            frac, what = handle.progress()
            bar.progress(min(1.0, frac), text=f"measuring {what}" if handle.status == "running" else "waiting")
            note.caption(ui.queue_notice(handle, "your sweep"))

        ui.live(handle, redraw, [bar, note])
    elif status != "done":
        st.info("The sweep was stopped. Press **Measure** to start it again.", icon=":material/timer:")
    else:
        result = handle.result()
        lo = complexity.fit_from(settings)
        table = measure.summary(result, lo=lo)
        c3, c4 = st.columns(2)
        with c3:
            ui.chart(figures.loglog_figure({k: result.timing(k) for k in settings.kinds}, "Wall time (measured)", "ms"),
                     "cx_m_time", "Measured wall time against sequence length, per kind, with whiskers, log-log.")
        with c4:
            ui.chart(figures.loglog_figure({k: result.series(k, "peak_bytes") for k in settings.kinds},
                                           "Peak memory (measured)", "bytes"), "cx_m_mem",
                     "Measured peak memory against sequence length, per kind, log-log.")
        st.caption(f"Device: {result.device}. Sweep took {result.seconds:.1f} s.")
        ui.table(complexity.table_rows(table), "cx_table")
        if result.skipped:
            st.warning(complexity.skipped_markdown(result), icon=":material/block:")
        st.markdown(complexity.reading_markdown(result, table, lo))
        st.subheader("Whole model: a funnel against the flat model")
        st.caption("Attention is one part of a model's cost. A 3-block model at this width, flat and as a funnel "
                   "(the sequence pooled to half its length before block 1), timed per training step (forward and "
                   "backward) in the server's scheduler.")
        cost = ui.submit(complexity.funnel_job(settings))
        cost_status = cost.status  # read once: the job moves on meanwhile
        if cost_status == "done":
            series = cost.result()
            ui.chart(figures.loglog_figure(series, "Whole model, time per training step (measured)", "ms"),
                     "cx_m_funnel", "Measured time per training step of the flat model and the funnel, log-log.")
            st.caption(funnel.cost_finding(series))
        elif cost_status in ("queued", "running"):
            funnel_bar = st.empty()
            ui.live(cost, lambda: funnel_bar.progress(cost.progress()[0], text=cost.progress()[1]), [funnel_bar])
        else:
            st.caption(f"The whole-model timing did not run: {cost.error or cost_status}.")
