"""Streamlit helpers shared by the pages. The library (explorer/) stays free of any UI; this module
holds only what every page would otherwise repeat: the navigation guard, the server's shared
scheduler, drawing figures and the library's view descriptions, per-session caches, watching a
job, and arriving at a finished view from a link or a lesson."""
from __future__ import annotations

import contextlib
import gc
import os
import time
import atexit
import threading
import uuid
import weakref
from collections import OrderedDict
from typing import Callable

import plotly.graph_objects as go
import streamlit as st

from explorer import export, figures, view
from explorer.jobs import Handle, Scheduler
from explorer.pages import PageSpec, by_file
from explorer.shelf import Shelf

S = st.session_state
REFRESH_S = 0.25  # seconds between redraws while a job runs, when few sessions watch one
REFRESH_PER_WATCHER_S = 0.2  # with many watching, each redraws less often: at most 5 redraws a second in all


def ensure_navigation(page_file: str) -> PageSpec:
    """Make sure the page runs under app.py's navigation, and return its entry in the page list.

    The first request to a fresh server can run a ``pages/`` file without app.py (Streamlit's old
    pages-folder mode decides before app.py has ever run). Registering this page with the
    navigation API and rerunning switches the server to app.py's navigation for good, on the URL
    that was asked for."""
    if "app_shell" not in S:
        st.navigation([st.Page(lambda: None, title="shell", default=True), st.Page(page_file)], position="hidden")
        st.rerun()
    return by_file("pages/" + page_file.replace("\\", "/").rsplit("/pages/", 1)[-1])


# ---------------------------------------------------------------------------------------------- shared server state
@st.cache_resource
def scheduler() -> Scheduler:
    """The one scheduler of this server process: admission and fair sharing for heavy work. At exit
    it stops its workers between slices (a worker killed inside a torch call aborts the process)."""
    s = Scheduler(shelf=Shelf.from_env())
    atexit.register(s.shutdown)
    period = float(os.environ.get("TE_GONE_CHECK_S", 60))  # read here: a bad value fails loudly, like TE_WORKERS
    threading.Thread(target=_free_gone_sessions, args=(s, period), name="te-gone-sessions", daemon=True).start()
    return s


def _free_gone_sessions(s: Scheduler, period: float) -> None:
    """While any job runs, a full garbage collection every ``TE_GONE_CHECK_S`` seconds (default 60):
    a session Streamlit has let go (its tab closed for longer than ``server.disconnectedSessionTTL``)
    is freed only by a full collection, and only then does ``holder``'s finalizer release its jobs.
    Python's own collector reaches such old cycles rarely in a process this size (about 400,000
    objects, measured: a full collection takes about 0.15 s)."""
    while True:
        time.sleep(period)
        if s.snapshot()["running"]:
            gc.collect()


def where_trained(handle) -> str:
    """Where a run's training seconds were spent: here, or on the machine that made the shelf."""
    return "when the app was built" if handle is not None and handle.shipped else "on this server"


def shipped_lessons() -> set[str]:
    """The lessons whose runs this server reads from the shelf (made when the app was built)."""
    shelf = scheduler().shelf
    return shelf.lessons() if shelf is not None else set()


_IMPORTS = threading.Lock()


def import_table_libraries() -> None:
    """Import pandas and pyarrow once, one session at a time. Streamlit imports them lazily on the
    first table; when several sessions draw their first table at the same moment, the two
    libraries' imports of each other cross between threads, and Python's deadlock guard hands one
    thread a half-initialised module ("partially initialized module 'pandas' has no attribute
    'Series'", seen in ``scripts/load.py --scenario incontext``)."""
    with _IMPORTS:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401


class _SessionToken:
    """Lives exactly as long as one session's state: when Streamlit lets a session go (its browser
    tab gone for longer than ``server.disconnectedSessionTTL``), the state is freed, and the
    finalizer set in ``holder`` tells the scheduler that this holder has left."""


def holder() -> str:
    """This session's name when it holds a job. A session that is gone for good releases every job
    it held (``Scheduler.left``): a run nobody else holds stops instead of running to its end."""
    if "_holder" not in S:
        S._holder = uuid.uuid4().hex
        S._holder_token = _SessionToken()
        weakref.finalize(S._holder_token, scheduler().left, S._holder)
    return S._holder


def submit(job) -> Handle:
    return scheduler().submit(job, holder())


def start_job(name: str, job) -> Handle:
    """Submit ``job`` as this session's job ``name`` (a session-state key), letting go of the one it
    replaces."""
    stop_job(name)
    S[name] = submit(job)
    return S[name]


def stop_job(name: str) -> None:
    """Let go of this session's job ``name`` (the last holder's release cancels it), keeping what it
    had, with its key, for ``current_job``."""
    handle = S.pop(name, None)
    if handle is not None:
        S[f"{name}_stopped"] = (handle.job.key, handle.job.live())
        handle.release(holder())


def current_job(name: str, key) -> tuple:
    """``(handle, run, status)`` of this session's job ``name`` if it is the work ``key`` describes
    (the controls' view; otherwise no handle): its live view, or what Stop kept of that work."""
    handle = S.get(name)
    if handle is not None and handle.job.key != key:
        handle = None  # the controls changed since: that work is not this view
    run = handle.job.live() if handle is not None else None
    stopped = S.get(f"{name}_stopped")
    if run is None and stopped is not None and stopped[0] == key:
        run = stopped[1]
    return handle, run, (handle.status if handle is not None else None)


def job_buttons(name: str, start: Callable, args: tuple, running: bool, keys: tuple[str, str], help: str,
                label: str = "▶ Train"):
    """The start and Stop buttons of this session's job ``name`` side by side (``keys``: their
    widget keys); returns the empty slot beside them, for the job's status."""
    c1, c2, c3 = st.columns([1, 1, 6])
    c1.button(label, on_click=start, args=args, disabled=running, type="primary", key=keys[0], help=help)
    c2.button("■ Stop", on_click=stop_job, args=(name,), disabled=not running, key=keys[1],
              help="Stop and keep what it has so far.")
    return c3.empty()


@st.cache_resource
def app_icon():
    """The browser tab's icon, drawn here (a causal attention pattern, viridis): a Material icon as
    favicon would be fetched from the web, and the app works offline."""
    from PIL import Image

    colors = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    for i in range(8):
        for j in range(i + 1):
            shade = colors[min(4, (i - j) * 5 // 8)] if i != j else colors[4]
            for y in range(i * 8, i * 8 + 7):
                for x in range(j * 8, j * 8 + 7):
                    img.putpixel((x, y), shade)
    return img


# ---------------------------------------------------------------------------------------------- drawing
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 3}}
X_TITLE_ROOM = 55  # pixels below a plot for its x tick labels and the axis title under them


def plotly_figure(fig: dict) -> go.Figure:
    """A figure dict from explorer.figures as a plotly Figure, its axes drawn in the margins its
    builder set: tick labels where they fall (``ticklabeloverflow="allow"``) and no automatic
    margins (``automargin=False``). Plotly's default for numeric axes, "hide past div", measures
    every tick label in the browser (a forced layout each) to hide the ones that would overflow the
    figure; its template's ``automargin`` measures every label and title again to grow the margins,
    then draws the figure a second time. The builders leave room for their labels (a Chromium test
    finds no axis text outside its figure on the pages and lessons), and the measuring was the
    largest part of drawing a page of attention maps (CPU profiles of the extrapolation lesson in
    Chromium: 0.58 s of plotly's 1.6 s for the tick labels; then 0.2 s for the margins)."""
    layout = dict(fig.get("layout") or {})
    names = [k for k in layout if k.startswith(("xaxis", "yaxis"))] or ["xaxis", "yaxis"]
    for name in names:
        axis = layout[name] = {"ticklabeloverflow": "allow", "automargin": False, **(layout.get(name) or {})}
        if name.startswith("xaxis") and axis.get("side", "bottom") == "bottom" and (axis.get("title") or {}).get("text"):
            margin = layout["margin"] = dict(layout.get("margin") or {})  # room for labels and the title below them
            margin["b"] = max(margin.get("b", 80), X_TITLE_ROOM)
    return go.Figure({**fig, "layout": layout})


def chart(fig, key: str, description: str = "", slot=None) -> None:
    """Draw a figure built by explorer.figures (a plain dict, or one from ``figure``) with plotly;
    ``description`` is its accessible name (what it shows, in words). The one drawing path of
    every page."""
    fig = fig if isinstance(fig, go.Figure) else plotly_figure(fig)
    (slot or st).plotly_chart(fig, key=key, config=PLOT_CONFIG, alt=description or None)
    S.setdefault("_page_figures", {})[key] = (description, fig)  # for the shell's export panel


@st.cache_resource(max_entries=128)
def _shared_figure(builder: str, args: tuple) -> go.Figure:
    return plotly_figure(getattr(figures, builder)(*args))


def figure(builder: str, *args) -> go.Figure:
    """``explorer.figures.<builder>(*args)`` validated once by plotly (that costs more than drawing)
    and shared read-only: its key is the data it shows, so no session sees another's."""
    return _shared_figure(builder, args)


EXPORT_BYTES = 4e8  # a Chromium rendering one figure


def _render(key: str, description: str, fig) -> None:
    """Render one figure to SVG and PNG as a job (a Chromium is heavy work too): the panel shows its
    place in the queue while it waits and offers the files when it is done."""
    _stop_export()
    S.pop("_exported", None)
    S._export_for = (key, description)
    S._export_job = submit(export.ExportJob(fig, peak_bytes=EXPORT_BYTES))


def _stop_export() -> None:
    handle = S.pop("_export_job", None)
    if handle is not None:
        handle.release(holder())


def export_panel() -> None:
    """Every figure the page drew, as SVG or as a PNG 1,920 pixels wide (rendered on this server)."""
    drawn = S.get("_page_figures") or {}
    if not drawn:
        return
    with st.expander("Export figures", icon=":material/download:"):
        if not export.available():
            st.caption("This server has no Chromium to render files with: use the camera button on a figure's "
                       "toolbar (a PNG three times its size).")
            return
        keys = list(drawn)
        choice = st.selectbox("Figure", keys, format_func=lambda k: drawn[k][0] or k, key="export_choice",
                              help="Any figure on this page.")
        st.button("Make SVG and PNG", key="export_render", on_click=_render, args=(choice, *drawn[choice]),
                  help="For slides: SVG scales to any size; the PNG is 1,920 pixels wide.")
        handle = S.get("_export_job")
        if handle is not None and handle.active:
            slot = st.empty()
            live(handle, lambda: slot.caption("Rendering the figure… " + queue_notice(handle, "this export")),
                 slots=(slot,))
            st.button("Stop", key="export_stop", on_click=_stop_export, help="Stop rendering (nothing else is lost).")
        elif handle is not None:
            del S._export_job
            if handle.done:
                S._exported = (*S._export_for, handle.result())
            else:
                st.error(f"The figure could not be rendered: "
                         f"{(handle.error or 'the export was stopped').removeprefix('RuntimeError: ')}.")
        done = S.get("_exported")
        if done is not None and done[0] == choice:
            c1, c2 = st.columns(2)
            c1.download_button("SVG", done[2]["svg"], file_name=f"{choice}.svg", mime="image/svg+xml",
                               key="export_svg", help="A vector file: sharp at any size.")
            c2.download_button("PNG", done[2]["png"], file_name=f"{choice}.png", mime="image/png",
                               key="export_png", help="1,920 pixels wide: a projector's width.")


def control(c: view.Control):
    """One control of a view description, bound to the URL by its key."""
    if isinstance(c, view.Slider):
        return st.slider(c.label, c.lo, c.hi, c.default, key=c.key, help=c.help or None, bind="query-params")
    if c.widget == "selectbox":
        return st.selectbox(c.label, list(c.options), index=list(c.options).index(c.default), key=c.key,
                            help=c.help or None, bind="query-params")
    return st.select_slider(c.label, list(c.options), c.default, key=c.key, help=c.help or None, bind="query-params")


def controls(cs) -> dict:
    """The controls side by side; their values by key."""
    if not cs:
        return {}
    cols = st.columns(len(cs))
    values = {}
    for col, c in zip(cols, cs):
        with col:
            values[c.key] = control(c)
    return values


EDGE = "\u200b"  # a zero-width space: st.text dedents and strips its text; one at each end keeps it as written


def text_box(text: str, slot=None) -> None:
    """Text as it was written (a model's output, a filter's): in a bordered box, its line breaks
    and spaces kept (a leading space too), never read as markup. Not ``st.code``: its syntax
    highlighter is 1.6 MB of script a page loads and runs before it is still, for text that has no
    syntax."""
    with (slot or st).container(border=True):
        st.text(EDGE + text + EDGE)


def table(rows, key: str) -> None:
    """A table, drawn as static markdown (``figures.markdown_table``); ``rows`` is a list of dicts
    or a dict of columns. What it drew this run is kept under ``_page_tables[key]`` (the rows, as
    given), beside the figures that ``chart`` keeps."""
    if isinstance(rows, dict):
        columns = list(rows)
        rows = [dict(zip(columns, values)) for values in zip(*rows.values())]
    rows = list(rows)
    S.setdefault("_page_tables", {})[key] = rows
    if rows:
        st.markdown(figures.markdown_table(rows))
    else:
        st.caption("(an empty table)")


def render(blocks) -> None:
    """Draw a list of ``explorer.view`` blocks."""
    for b in blocks:
        if isinstance(b, view.Markdown):
            st.markdown(b.text)
        elif isinstance(b, view.Caption):
            st.caption(b.text)
        elif isinstance(b, view.Note):
            st.info(b.text, icon=b.icon)
        elif isinstance(b, view.Figure):
            chart(b.figure, b.key, b.description)
        elif isinstance(b, view.Table):
            table(b.rows, b.key)
        elif isinstance(b, view.Columns):
            for col, inner in zip(st.columns(len(b.columns)), b.columns):
                with col:
                    render(inner)


def section(s: view.Section, **context) -> None:
    """A library section: its controls (URL-bound), then its blocks."""
    values = controls(s.controls)
    render(s.blocks(values, **{k: context.get(k) for k in s.context}))


# ---------------------------------------------------------------------------------------------- per-session caches
def _recall(store: OrderedDict, key, make: Callable, size: int, lock=contextlib.nullcontext()):
    """``store[key]``, made with ``make`` when missing, in an LRU of at most ``size`` entries. ``lock``
    guards the store, never ``make``: another key's computation need not wait (a race computes twice)."""
    with lock:
        if key in store:
            store.move_to_end(key)
            return store[key]
    value = make()
    with lock:
        store[key] = value
        while len(store) > size:
            store.popitem(last=False)
    return value


class _SharedResults:
    """The server-wide LRU of results every session would compute alike (see ``cached``)."""

    def __init__(self, size: int):
        self.size, self.lock, self.store = size, threading.Lock(), OrderedDict()


@st.cache_resource
def _shared_results() -> _SharedResults:
    return _SharedResults(size=64)


def cached(name: str, key, make: Callable, size: int = 16, shared: bool = False):
    """A small per-session LRU (for things tied to this user's model). ``shared``: every session
    asking for ``key`` gets the same result (the key describes a shared run and the page's own
    defaults, never anything a student typed), so it is computed once per server and handed out
    read-only from a server-wide LRU; a second student opening the same view does not pay for it."""
    if shared:
        server = _shared_results()
        return _recall(server.store, (name, key), make, server.size, server.lock)
    return _recall(S.setdefault(name, OrderedDict()), key, make, size)


def page_timer(key: str) -> Callable[[], None]:
    """Start timing a page run; calling the result records its server time in the session under
    ``key`` (read by ``python -m explorer.bench lab``)."""
    t0 = time.perf_counter()
    return lambda: S.__setitem__(key, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- finished views
def arrived_to_run(page: PageSpec, flag: str) -> bool:
    """Whether to start the page's heavy work at once: a lesson asked for it, or this is the
    session's first visit to a link of a finished view (``flag=1``: trained, measured, run)."""
    first_visit = f"{page.prefix}visited" not in S
    S[f"{page.prefix}visited"] = True
    return bool(S.pop(f"{page.prefix}autorun", False)) or (first_visit and st.query_params.get(flag) == "1")


def mark_finished(flag: str, finished: bool, value: str = "1") -> None:
    """Keep the link's ``flag`` in step with the view: a finished view's link recomputes it."""
    if finished:
        if st.query_params.get(flag) != value:  # written once: every write sends the whole query string
            st.query_params[flag] = value
    elif flag in st.query_params:
        del st.query_params[flag]


def queue_notice(handle: Handle, what: str) -> str:
    """What a student is told while their job waits or runs beside others'."""
    place = handle.place()
    if place is not None:
        est = handle.wait_estimate_s()
        return (f"Waiting for room on this server: {what} is number {place} in the queue"
                + (f", about {est:.0f} s to go" if est is not None else "")
                + ". Every student's heavy work shares the server's cores and memory; **Stop** still works.")
    snap = handle._scheduler.snapshot()
    if snap["running"] > snap["workers"]:
        return (f"{snap['running']} runs share this server's {snap['workers']} cores right now, so each goes "
                f"about {snap['running'] / snap['workers']:.0f}× slower than alone.")
    return ""


def refresh_interval() -> float:
    """How often a live view redraws: 4 times a second, slower when many sessions watch jobs (their
    redraws share the server's cores with the jobs themselves)."""
    return max(REFRESH_S, REFRESH_PER_WATCHER_S * scheduler().watchers())


def live(handles, redraw: Callable[[], None], slots=(), refresh_s: Optional[float] = None) -> None:
    """While the job (or any of a list of jobs) runs, redraw every ``refresh_s`` seconds in a
    fragment: only the live parts are recomputed, and a click (Stop) is taken at once. When the
    jobs end, the whole page reruns to show their result. ``slots`` are the ``st.empty()``
    placeholders (created outside) that ``redraw`` fills: the fragment's first run (inside the full
    run) writes each of them, since Streamlit keeps a place for an outside container only if the
    fragment wrote to it during the full run; later runs only redraw (no flicker). The redraw times
    of the current live view are kept in the session under ``live_times`` (read by the benchmark)."""
    handles = handles if isinstance(handles, (list, tuple)) else [handles]
    S.live_times = []
    first = [True]

    @st.fragment(run_every=refresh_s or refresh_interval())
    def tick():
        if not any(h.active for h in handles):
            st.rerun(scope="app")
        if first[0]:
            for slot in slots:
                slot.empty()
            first[0] = False
        redraw()
        S.live_times.append(time.perf_counter())

    tick()


# ---------------------------------------------------------------------------------------------- drawing canvas
CANVAS_HTML = '<div class="te-draw"><canvas width="{size}" height="{size}"></canvas><div class="tools"></div></div>'
CANVAS_CSS = """
canvas { width: 240px; height: 240px; image-rendering: pixelated; border: 1px solid #888; touch-action: none;
         cursor: crosshair; display: block; margin-bottom: 0.5rem; }
.tools button { margin: 0 0.3rem 0.3rem 0; padding: 0.2rem 0.6rem; border-radius: 0.4rem; border: 1px solid #888;
                cursor: pointer; font: inherit; }
.tools button.paint { color: #000; }
.tools button.chosen { outline: 3px solid var(--st-primary-color, #f63366); }
"""
CANVAS_JS = """
export default function(component) {
  const { parentElement, data, setStateValue } = component;
  const canvas = parentElement.querySelector('canvas');
  if (canvas.dataset.ready) return;  // drawn once; later runs keep the strokes
  canvas.dataset.ready = '1';
  const ctx = canvas.getContext('2d');
  const clear = () => { ctx.fillStyle = data.background; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  if (data.png) { const img = new Image(); img.onload = () => ctx.drawImage(img, 0, 0); img.src = data.png; }
  const tools = parentElement.querySelector('.tools');
  let paint = Object.values(data.colours)[0];
  const buttons = [];
  const tool = (label, onclick, colour) => {
    const b = document.createElement('button');
    b.textContent = label;
    if (colour) { b.style.background = colour; b.className = 'paint'; }
    b.onclick = (e) => { e.preventDefault(); onclick(b); };
    tools.appendChild(b);
    return b;
  };
  const choose = (b, colour) => { paint = colour; buttons.forEach(x => x.classList.remove('chosen')); b.classList.add('chosen'); };
  for (const [name, colour] of Object.entries(data.colours)) buttons.push(tool(name, b => choose(b, colour), colour));
  buttons.push(tool('eraser', b => choose(b, data.background)));
  buttons[0].classList.add('chosen');
  tool('clear', () => clear());
  tool(data.use_label, () => setStateValue('png', canvas.toDataURL('image/png')));
  const at = (e) => { const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  let down = false;
  const dot = (e) => { const [x, y] = at(e); ctx.fillStyle = paint; ctx.beginPath();
    ctx.arc(x, y, data.brush / 2, 0, 2 * Math.PI); ctx.fill(); };
  canvas.onpointerdown = (e) => { down = true; canvas.setPointerCapture(e.pointerId); dot(e); };
  canvas.onpointermove = (e) => { if (down) dot(e); };
  canvas.onpointerup = () => { down = false; };
}
"""


@st.cache_resource
def _canvas_component(size: int):
    """The drawing canvas, registered once per server (its code is this module's, never a user's)."""
    return st.components.v2.component("te_drawing_canvas", html=CANVAS_HTML.format(size=size), css=CANVAS_CSS,
                                      js=CANVAS_JS)


def drawing_canvas(key: str, size: int, colours: dict, background: tuple, brush: float, use_label: str):
    """A small canvas to paint on with the given colours; returns the last drawing its user handed
    over (``use_label``'s button) as a PNG data URL, or None. The drawing is kept in the session."""
    rgb = lambda c: f"rgb({c[0]}, {c[1]}, {c[2]})"  # noqa: E731
    state = S.get(key)
    png = state.get("png") if hasattr(state, "get") else None
    result = _canvas_component(size)(
        key=key, data={"colours": {name: rgb(c) for name, c in colours.items()}, "background": rgb(background),
                       "brush": brush, "use_label": use_label, "png": png},
        default={"png": png}, on_png_change=lambda: None)
    return getattr(result, "png", None)
