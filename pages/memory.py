"""Memory: the key/value cache filling layer by layer as the model writes, what a window lets it
reach and what it forgets, and what the cache buys in speed and costs in memory."""
import streamlit as st

from explorer import figures, memory as mem
from explorer.encodings import ENCODINGS
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = mem.MemorySettings()
DM = mem.MeasureSettings()
DEFAULTS = mem.url_defaults()


@st.cache_resource(max_entries=16)
def untrained(settings):
    """The page's model: seeded, read-only, the same for everyone."""
    return mem.model_for(settings)


def set_turns(turns) -> None:
    S.mem_turns = list(turns)  # the link follows in the run this callback starts


def add_turn() -> None:
    text = S.get("mem_next", "")
    why = mem.check_turn(text)
    if why:
        S.mem_turn_error = why  # the typed text stays in the box
        return
    S.mem_turn_error = None
    turns = (S.get("mem_turns") or []) + [text]
    S.mem_dropped = len(turns) > mem.MAX_TURNS
    set_turns(turns[-mem.MAX_TURNS:])
    S.mem_next = ""


def remove_turn() -> None:
    set_turns((S.get("mem_turns") or [])[:-1])


def start_again() -> None:
    set_turns(mem.DEFAULT_TURNS)


# ---------------------------------------------------------------------------------------------- the turns
if "mem_turns" not in S:  # first run: the link's turns, each checked, or the example conversation
    linked = st.query_params.get_all("mem_turn")
    kept, dropped = mem.clean_turns(linked)
    S.mem_link_dropped = dropped
    set_turns(kept if linked else mem.DEFAULT_TURNS)
if st.query_params.get_all("mem_turn") != S.mem_turns:
    st.query_params["mem_turn"] = S.mem_turns  # the link always carries the conversation

st.title("Memory")
st.caption("While it writes, a model keeps what later tokens need of the past: the keys and values of each layer, "
           "its **cache**. The attention kind decides how much that is, and the window decides what the model can "
           "still reach. Add turns to the conversation and watch what falls out.")

with st.sidebar:
    st.header("Model")
    kinds = mem.kind_names()
    attention = st.selectbox("Attention", kinds, index=kinds.index(D.attention), key="mem_attention",
                             bind="query-params", help="How each token reads earlier ones, and so what its cache keeps.")
    window = st.number_input("Window w", 2, 64, D.window, key="mem_window", bind="query-params",
                             help="Keys per query for the window kinds (the block size for block_sparse).")
    encoding = st.selectbox("Positional encoding", ENCODINGS.names(), index=ENCODINGS.names().index(D.encoding),
                            key="mem_encoding", bind="query-params",
                            help="How a token knows where it is. Only encodings that see offsets (none, RoPE, ALiBi) "
                                 "let a rolling cache go past the context.")
    layers = st.slider("Layers", 1, 6, D.n_layer, key="mem_layers", bind="query-params",
                       help="Stacked windows reach further: each layer adds w − 1 positions.")
    context = st.select_slider("Context (block size)", [16, 32, 64, 128, 256], D.block_size, key="mem_context",
                               bind="query-params", help="The longest text full attention reads at once.")
    new = st.slider("Characters to write", 1, 64, D.new_tokens, key="mem_new", bind="query-params",
                    help="The model continues the conversation by this many characters, greedily.")
    seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="mem_seed", bind="query-params",
                           help="Seeds the untrained model's weights: the same seed gives everyone the same picture.")

settings = mem.MemorySettings(attention, int(window), encoding, int(layers), int(context), int(new), int(seed))
problem = settings.problem()

def conversation_views() -> None:
    """The conversation coloured by reach, what is forgotten, and the cache layer by layer."""
    model = untrained(settings)
    config = settings.config()
    shared = S.mem_turns == list(mem.DEFAULT_TURNS)  # the example conversation: the same for everyone
    writing = ui.cached("mem_writing", (settings, text), lambda: mem.write(model, text, settings.new_tokens),
                        shared=shared)
    forgot = ui.cached("mem_forgetting", (settings, text), lambda: mem.forgetting(model, text), shared=shared)
    summary = forgot.summary()

    st.markdown(figures.forgetting_html(S.mem_turns, forgot), unsafe_allow_html=True)
    st.caption(f"Each character of the conversation, coloured by what the next character the model writes can depend on: "
               f"**blue** reaches it in the first layer, **light blue** only through stacked layers, **grey** is forgotten. "
               f"{mem.reach_words(settings)}.")
    lost = summary["characters"] - summary["reached"]
    st.markdown(f"**What the model forgets.** Of the {summary['characters']} characters, the next one written can depend on "
                f"{summary['reached']}"
                + (f"; the other {lost} are out of reach" + (f" ({forgot.out_of_context} of them are past the context)"
                                                              if forgot.out_of_context else "")
                   + f". Replacing any of those leaves the model's next prediction the same (largest change measured: "
                     f"{summary['largest_change_outside']:.1g}), while every character in reach moves it (smallest change "
                     f"{summary['smallest_change_inside']:.1e})." if lost else
                   f": all of them. Replacing any one of them moves the model's next prediction (smallest change measured "
                   f"{summary['smallest_change_inside']:.1e})."))
    ui.chart(figures.reach_figure(forgot.reach, forgot.change, list(text),
                                  "What the next character can depend on: each layer's reach, and the measured change"),
             "mem_reach", "For each layer, which characters of the conversation can reach the next character's prediction, "
                          "and how much replacing each one changes it.")

    # ---------------------------------------------------------------------------------------------- the cache
    st.subheader("The cache, layer by layer")
    said = "".join(figures.token_label(c) for c in writing.text)
    st.markdown(f"The untrained model writes “{said}” (noise: its weights are random; what it keeps does not depend on "
                "them).", unsafe_allow_html=False)
    top = max(2, new)  # a slider needs two values
    if S.get("mem_step", new) > top:
        S.mem_step = top  # fewer characters written than the step the view showed
    step = min(new, st.slider("After writing character", 1, top, new, key="mem_step", bind="query-params",
                              disabled=not writing.cached,
                              help="What each layer's cache holds once this many characters are written."))
    if not writing.cached:
        st.info(f"Written without a cache, reading the last {config.block_size} characters again for every character: "
                f"{md_escape(writing.reason)}.", icon=":material/info:")
    else:
        tokens = writing.tokens[: len(text) + step]
        grid = writing.held[step - 1][:, : len(tokens)]
        ui.chart(figures.cache_figure(grid, tokens, len(text), f"What each layer keeps after {step} written"),
                 "mem_cache", "Which positions of the text each layer's cache holds: dark held, light summarised, grey not held.")
        per = writing.memory[step - 1]
        st.caption(f"Each layer keeps {md_escape(writing.labels[0])}: {per[0]:,} bytes per layer now, {sum(per):,} in all "
                   "(read from the tensors). The dotted line is where the model's own writing starts.")
        ui.chart(figures.lines_figure(mem.memory_series(writing), "cache memory as the text grows", "characters read",
                                      "bytes", height=280), "mem_bytes", "Each layer's cache memory against the characters read.")


tab_conv, tab_speed = st.tabs(list(mem.TABS), key="mem_tab", on_change="rerun", bind="query-params")
with tab_conv:  # both tabs are drawn on every run: their controls stay in the link whichever is open
    st.subheader("The conversation")
    for why in S.pop("mem_link_dropped", []) or []:
        st.warning(f"The link's {md_escape(why)}; that turn was left out.", icon=":material/info:")
    c_text, c_add, c_undo, c_reset = st.columns([5, 1, 1, 1], vertical_alignment="bottom")
    c_text.text_input("Next turn", key="mem_next", bind="query-params", max_chars=mem.MAX_TURN,
                      placeholder="e.g. Where do I live?", help="Letters, digits, punctuation and spaces.")
    c_add.button("Add turn", on_click=add_turn, key="mem_add", type="primary", use_container_width=True)
    c_undo.button("Remove last", on_click=remove_turn, key="mem_remove", disabled=not S.mem_turns,
                  use_container_width=True)
    c_reset.button("Start again", on_click=start_again, key="mem_reset", use_container_width=True,
                   help="Back to the example conversation.")
    if S.get("mem_turn_error"):
        st.warning(f"That turn was not added: {md_escape(S.mem_turn_error)}. Your text is still in the box.",
                   icon=":material/edit_off:")
    if S.pop("mem_dropped", False):
        st.info(f"The oldest turn was dropped: the page keeps the last {mem.MAX_TURNS} turns.", icon=":material/info:")

    text = mem.conversation(S.mem_turns)
    if problem:
        st.error(f"This model has no cache to show: {md_escape(problem)}.", icon=":material/error:")
    elif not text:
        st.info("The conversation is empty: type a turn and press **Add turn**.", icon=":material/chat:")
    else:
        conversation_views()

with tab_speed:
    # ---------------------------------------------------------------------------------------------- measured
    st.subheader("What the cache buys, measured")
    with st.container(border=True):
        c1, c2 = st.columns(2)
        measure_kinds = c1.multiselect("Kinds to measure", kinds, default=DEFAULTS["mem_kinds"], key="mem_kinds",
                                       bind="query-params", help="Each is measured with its cache and reading the text again.")
        max_n = c2.select_slider("Longest context", list(mem.CONTEXTS[2:]), DM.max_n, key="mem_max_n",
                                 bind="query-params", help="Contexts from 64 doubling up to this.")
        msettings = mem.MeasureSettings(tuple(k for k in kinds if k in measure_kinds), int(max_n))
        mkey = mem.MeasureJob.key_of(msettings)
        handle, kept, status = ui.current_job("mem_handle", mkey)
        if ui.arrived_to_run(PAGE, "mem_measured") and handle is None and msettings.kinds:
            ui.start_job("mem_handle", mem.MeasureJob(msettings))
            handle, kept, status = ui.current_job("mem_handle", mkey)
        running = status in ("queued", "running")
        b1, b2, b3 = st.columns([1, 1, 6])
        b1.button("▶ Measure", on_click=lambda: ui.start_job("mem_handle", mem.MeasureJob(msettings)),
                  disabled=running or not msettings.kinds,
                  type="primary", key="mem_measure", help="Time writing at each context on this server, cached and not.")
        b2.button("■ Stop", on_click=ui.stop_job, args=("mem_handle",), disabled=not running, key="mem_stop")
        if not msettings.kinds:
            st.warning("Pick at least one kind to measure.", icon=":material/info:")
        ui.mark_finished("mem_measured", status == "done")
        if status in ("failed", "refused"):
            st.error(f"The measurement could not go on: {handle.error}.", icon=":material/error:")
        status_slot, chart_slot, lines_slot = b3.empty(), st.empty(), st.empty()

        def draw() -> None:
            rows = (handle.job.live() if handle is not None else kept) or []
            if running:
                frac, what = handle.progress()
                notice = ui.queue_notice(handle, "your measurement")
                status_slot.progress(frac, text=f"Measuring… {what}" + (f". {notice}" if notice else ""))
            elif rows:
                status_slot.markdown(f"Measured {len(rows)} points on this server.")
            else:
                status_slot.markdown("Not measured yet: press **Measure** (a few seconds on this server alone).")
            if rows:
                ui.chart(figures.memory_figure(rows), "mem_measure_chart",
                         "Tokens per second and cache memory against the context length, cached and read again.",
                         slot=chart_slot)
                lines_slot.markdown("\n".join(f"- {line}" for line in mem.speedup_lines(rows)))

        if running:
            ui.live(handle, draw, [status_slot, chart_slot, lines_slot])
        else:
            draw()
        st.caption("Without a cache every new character reads the whole text again, so writing slows as the text grows; "
                   "with one, each character is read once. Full attention's cache grows with the text; a window's and "
                   "linear attention's do not. " + mem.measured_model_words(msettings))

with st.expander("How it works", icon=":material/info:"):
    st.markdown(
        "- **Key/value cache** (Pope et al. 2022): a layer's output at a new position needs the keys and values of the "
        "positions it attends to; they never change, so they are kept instead of recomputed.\n"
        "- **Rolling cache** (Mistral, Jiang et al. 2023): a window of *w* keys needs only the last *w*; older entries "
        "are dropped, so memory is bounded whatever the length.\n"
        "- **Linear attention as an RNN** (Katharopoulos et al. 2020): the whole past is folded into a running state "
        "S = Σ φ(k) vᵀ and z = Σ φ(k), the same size at every length.\n"
        "- **Stacked windows** (Longformer, Beltagy et al. 2020): a token in layer 2 reads tokens that already read "
        "*w* − 1 further back, so *L* layers reach *L*(*w* − 1) positions.\n"
        "- **Forgetting, measured**: each character of the conversation is replaced in turn and the change of the "
        "next-character probabilities is measured; out of reach it is exactly zero.")
