"""Positional Encoding Lab: what position means to a transformer, and which encodings extrapolate."""
import streamlit as st

from explorer import extrapolation, figures, positions
from explorer.encodings import ENCODINGS
from explorer.tasks import TASKS
import ui

S = st.session_state
ui.ensure_navigation(__file__)

D = extrapolation.ExtrapolationSettings()


@st.cache_data(max_entries=8, show_spinner=False)
def run_experiment(settings: extrapolation.ExtrapolationSettings, _progress=None):
    """Seeded, so the same settings give everyone the same result: computed once, then shared."""
    return extrapolation.run(settings, progress=_progress)


st.title("Positional Encoding Lab")
st.caption("Attention by itself is blind to order: shuffle the keys and the weighted sum is the same. "
           "Each encoding gives position back in its own way — and they differ most on inputs longer than "
           "any seen in training.")

tabs = st.tabs(["Sinusoidal", "RoPE", "ALiBi", "Learned", "None"])
with tabs[0]:
    c1, c2 = st.columns(2)
    T = c1.slider("Positions", 8, 256, 64, key="pe_sin_T", bind="query-params")
    C = c2.select_slider("Dimensions", [16, 32, 64, 128, 256], 64, key="pe_sin_C", bind="query-params")
    table, sim = positions.sinusoidal(int(T), int(C))
    st.markdown(r"$PE_{p,2i} = \sin(p / 10000^{2i/C})$, $PE_{p,2i+1} = \cos(p / 10000^{2i/C})$: every pair of "
                "dimensions is a clock at its own speed, fast on the left, slow on the right.")
    c1, c2 = st.columns(2)
    with c1:
        ui.chart(figures.matrix_figure(table, "position × dimension", "dimension", "position", "RdBu", zmid=0), "pe_sin_table")
    with c2:
        ui.chart(figures.matrix_figure(sim, "cosine similarity of positions", "position", "position"), "pe_sin_sim")
    st.caption("Nearby positions look alike and the similarity depends (almost) only on the distance: the band "
               "along the diagonal.")

with tabs[1]:
    c1, c2, c3 = st.columns(3)
    hs = c1.select_slider("Head size", [4, 8, 16], 8, key="pe_rope_hs", bind="query-params")
    m = c2.slider("Query position m", 0, 63, 5, key="pe_rope_m", bind="query-params")
    n = c3.slider("Key position n", 0, 63, 2, key="pe_rope_n", bind="query-params")
    q, k = positions.rope_example(int(hs))
    qp, kp = positions.rope_planes(q, int(m)), positions.rope_planes(k, int(n))
    score = float((qp * kp).sum())
    st.markdown(r"RoPE rotates each 2-D plane $i$ of the query by $m\,\theta_i$ and of the key by $n\,\theta_i$, "
                r"$\theta_i = 10000^{-2i/d_h}$. Rotations keep lengths, and the dot product of two rotated vectors "
                r"depends only on the angle between them, so the score depends only on $m - n$.")
    ui.chart(figures.planes_figure(qp, kp, f"query at m = {m}, key at n = {n}: score q·k = {score:.3f} "
                                        f"(offset m − n = {m - n})"), "pe_rope_planes")
    c1, c2 = st.columns(2)
    with c1:
        ui.chart(figures.matrix_figure(positions.rope_scores(q, k, 32), "score of the same q, k at every (m, n)",
                                    "key position n", "query position m", "RdBu", zmid=0), "pe_rope_scores")
    st.caption("Move both sliders by the same amount: the score does not change. In the matrix, every diagonal "
               "(constant m − n) has one colour.")

with tabs[2]:
    c1, c2 = st.columns(2)
    nh = c1.select_slider("Heads", [1, 2, 4, 8, 16], 8, key="pe_alibi_heads", bind="query-params")
    Ta = c2.slider("Positions", 4, 64, 16, key="pe_alibi_T", bind="query-params")
    slopes, bias = positions.alibi(int(nh), int(Ta))
    st.markdown(r"ALiBi adds no vector at all: it subtracts $m_h \cdot (i - j)$ from each query-key score, a "
                r"penalty growing with distance. Head $h$'s slope is $m_h = 2^{-8h/H}$: steep heads look "
                r"locally, shallow ones far.")
    ui.chart(figures.lines_figure({"slope": (list(range(int(nh))), slopes.tolist())}, "slope per head", "head",
                               "slope m_h", log_y=True, height=280), "pe_alibi_slopes")
    show = [0, int(nh) // 2, int(nh) - 1] if nh > 2 else list(range(int(nh)))
    cols = st.columns(len(show))
    for col, h in zip(cols, show):
        with col:
            ui.chart(figures.matrix_figure(bias[h], f"head {h}: bias (slope {slopes[h]:.4f})", "key j", "query i",
                                        height=320), f"pe_alibi_bias_{h}")

# ---------------------------------------------------------------------------------------------- experiment
st.header("Train short, test long")
with st.form("pe_form"):
    c1, c2, c3 = st.columns(3)
    task = c1.selectbox("Task", TASKS.names(), index=TASKS.names().index(D.task),
                        key="pe_task", bind="query-params")
    train_len = c2.slider("Training length L", 2, 16, D.train_len, key="pe_train_len", bind="query-params")
    steps = c3.number_input("Steps per model", 50, 3000, D.steps, step=50, key="pe_steps", bind="query-params")
    encs = st.multiselect("Encodings", ENCODINGS.names(), default=list(D.encodings), key="pe_encodings", bind="query-params")
    submitted = st.form_submit_button("Run the experiment", type="primary")
settings = extrapolation.ExtrapolationSettings(task=task, train_len=int(train_len), steps=int(steps),
                                               encodings=tuple(e for e in ENCODINGS.names() if e in encs))
try:
    settings.validate()
except ValueError as e:
    st.error(f"This experiment cannot run: {e}.", icon=":material/error:")
    st.stop()
st.caption(f"Each model ({settings.n_layer} layers, {settings.n_head} heads, width {settings.n_embd}) trains "
           f"{settings.steps} steps on inputs of length {max(1, settings.train_len // 2)}–{settings.train_len}, then is "
           f"tested on fresh inputs of length {', '.join(str(settings.train_len * f) for f in settings.factors)}.")
result = ui.kept_result(settings, "pe_result")
# a lesson, or a shared link of a finished experiment (pe_ran=1), runs it at once (cached: instant if done before)
first_visit = "pe_visited" not in S
S.pe_visited = True
if submitted or S.pop("pe_autorun", False) or (first_visit and st.query_params.get("pe_ran") == "1"):
    result = ui.run_with_progress(run_experiment, settings, "pe_result")
if result is not None:
    st.query_params["pe_ran"] = "1"
elif "pe_ran" in st.query_params:
    del st.query_params["pe_ran"]

with tabs[3]:
    st.markdown("A learned table is one trainable vector per position, nothing more: whatever structure it has "
                "comes from training. It has no row past its training context, so it cannot say anything about "
                "a position it never had.")
    if result is None or result.learned_table is None:
        st.info("Run the experiment below with **learned** among the encodings to see the table it learned.",
                icon=":material/model_training:")
    else:
        c1, c2 = st.columns(2)
        with c1:
            ui.chart(figures.matrix_figure(positions.cosine_similarity(result.learned_table),
                                        "cosine similarity of learned positions", "position", "position"), "pe_l_sim")
        with c2:
            ui.chart(figures.scatter_positions(positions.pca_2d(result.learned_table), "positions projected to 2-D"),
                  "pe_l_pca")
        st.caption(f"The table has {len(result.learned_table)} rows: positions 0–{len(result.learned_table) - 1}. "
                   "Positions used rarely in training (the far end) stay close to their random start.")

with tabs[4]:
    st.markdown(
        "With no encoding, a causal model can still tell positions apart: the token at position $t$ sees "
        "exactly $t+1$ tokens, so a head that spreads its attention evenly gives each of them weight "
        "$1/(t+1)$ — a signal that shrinks with position, which later layers can read (Haviv et al. 2022). "
        "It fails where that signal is too faint: telling position 40 from 41 is telling 1/41 from 1/42, and "
        "without causality (an encoder) there is no signal at all.")
    Tn = 64
    ui.chart(figures.lines_figure({"weight on the first token": (list(range(Tn)), positions.uniform_attention_signal(Tn).tolist())},
                               "uniform causal attention: weight per key at position t", "position t", "1/(t+1)",
                               height=280), "pe_none_signal")

if result is None:
    st.info("Press **Run the experiment**. The default (5 encodings, copy, L = 8) takes about a minute; results "
            "are cached, so the same settings come back at once.", icon=":material/science:")
    st.stop()

lens = [settings.train_len * f for f in settings.factors]
acc = {e: (lens, [result.accuracy(e, n) for n in lens]) for e in settings.encodings}
loss = {e: (lens, result.losses(e)) for e in settings.encodings}
c1, c2 = st.columns(2)
with c1:
    ui.chart(figures.lines_figure(acc, "token accuracy", "evaluation length", "accuracy", y_range=(0, 1.02)), "pe_x_acc")
with c2:
    ui.chart(figures.lines_figure(loss, "loss", "evaluation length", "loss (nats)", log_y=True), "pe_x_loss")
st.dataframe([{"encoding": r["encoding"], "eval length": r["eval_len"],
               "accuracy": "—" if r["accuracy"] is None else f"{r['accuracy']:.1%}",
               "loss": "—" if r["loss"] is None else f"{r['loss']:.3f}", "note": r.get("note", "")}
              for r in result.rows], hide_index=True, key="pe_table")
for r in result.rows:
    if r.get("note"):
        st.warning(f"{r['encoding']} at length {r['eval_len']}: {r['note']}.", icon=":material/block:")
        break

st.markdown("**What came out this time**\n" + "\n".join(f"- {line}" for line in result.findings()) + "\n\n"
            "The ALiBi paper (Press et al. 2022) reports that linear biases extrapolate while sinusoidal and rotary "
            "encodings do not; it measured language-model loss on long text. On these algorithmic tasks a longer input "
            "also needs attention at offsets no training example used (copy: up to 2L + 1 back), so even the best "
            "encoding loses accuracy as the length grows. Relative encodings (ALiBi, RoPE) keep the local part of the "
            "job (finding the separator, reading neighbours); sinusoidal positions past the training range are "
            "vectors the model never saw; a learned table has no row for them at all; with no encoding, the model "
            "must count, and the 1/(t+1) signal blurs as t grows. Results depend on the seed and the number of steps: "
            "change them and compare.")

st.subheader(f"Attention at length {lens[-1]}")
c1, c2 = st.columns(2)
layer = c1.selectbox("Layer", list(range(settings.n_layer)), key="pe_layer", bind="query-params")
head = c2.selectbox("Head", list(range(settings.n_head)), key="pe_head", bind="query-params")
cols = st.columns(len(settings.encodings))
for col, e in zip(cols, settings.encodings):
    tokens, maps = result.maps[e]
    with col:
        if tokens is None:
            st.markdown(f"**{e}**")
            st.caption(maps)
        else:
            ui.chart(figures.attention_heatmap(maps[layer, head], tokens, e, height=340), f"pe_x_map_{e}")
