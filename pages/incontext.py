"""In-context learning: an induction head forming live in a two-layer attention-only model (the
phase change, each head's scores, the maps, an ablation), and few-shot learning from examples in
the prompt."""
import streamlit as st

from explorer import fewshot, figures, incontext as icl
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
D = icl.InductionSettings()
DF = fewshot.FewShotSettings()
DEFAULTS = icl.url_defaults()
TABS = ["Induction heads", "Few-shot"]


@st.cache_resource(max_entries=8)
def untrained(settings):
    """The model before training: seeded, read-only, the same for everyone."""
    from explorer.model import build_model

    return build_model(settings.model_config(), settings.seed).eval()


st.title("In-context learning")
st.caption("A model that learns from its own context: after one look at a sequence it predicts the repeat. Train a "
           "two-layer, attention-only transformer and watch the circuit behind it, the **induction head**, form.")

with st.sidebar:
    st.header("Induction model")
    steps = st.select_slider("Training steps", list(icl.STEP_CHOICES), D.steps, key="icl_steps", bind="query-params",
                             help=f"Steps of {D.batch_size} sequences; scores are measured every {D.check_every} steps.")
    heads = st.select_slider("Heads per layer", [1, 2, 4, 8], D.n_head, key="icl_heads", bind="query-params",
                             help="Attention heads in each of the two layers.")
    length = st.slider("Longest period L", 8, 24, D.length, key="icl_length", bind="query-params",
                       help=f"Each sequence is L random letters, then the same again; training draws L from "
                            f"{D.min_length} up to this.")
    encoding = st.selectbox("Positional encoding", ["rope", "learned", "alibi", "none"], key="icl_encoding",
                            bind="query-params", help="RoPE lets a head read 'one position back' easily; with "
                                                      "learned positions the head forms much later.")
    seed = st.number_input("Seed", 0, 2**31 - 1, D.seed, key="icl_seed", bind="query-params",
                           help="Seeds the weights and the sequences: the same seed gives everyone the same picture.")

    st.header("Few-shot model")
    fs_steps = st.select_slider("Few-shot training steps", [250, 500, 1000, 1500, 2000], DF.steps, key="icl_fs_steps",
                                bind="query-params", help=f"Steps of {DF.batch_size} sequences (the Few-shot tab).")
    fs_seed = st.number_input("Few-shot seed", 0, 2**31 - 1, DF.seed, key="icl_fs_seed", bind="query-params",
                              help="Seeds the few-shot model's weights and its training mappings.")

tab_ind, tab_fs = st.tabs(TABS, key="icl_tab", on_change="rerun", bind="query-params")

# ---------------------------------------------------------------------------------------------- induction
if tab_ind.open:
    with tab_ind:
        settings = icl.InductionSettings(length=int(length), min_length=min(D.min_length, int(length)),
                                         n_head=int(heads), encoding=encoding, steps=int(steps), seed=int(seed))
        key = ("incontext", settings)
        handle, run, status = ui.current_job("icl_handle", key)
        if ui.arrived_to_run(PAGE, "icl_trained") and handle is None:
            ui.start_job("icl_handle", icl.training_job(settings))
            handle, run, status = ui.current_job("icl_handle", key)
        training = status in ("queued", "running")
        c1, c2, c3 = st.columns([1, 1, 6])
        c1.button("▶ Train", on_click=lambda: ui.start_job("icl_handle", icl.training_job(settings)),
                  disabled=training, type="primary", key="icl_train",
                  help="Train the attention-only model on this server (the same settings train once, for everyone).")
        c2.button("■ Stop", on_click=ui.stop_job, args=("icl_handle",), disabled=not training, key="icl_stop",
                  help="Stop and keep the model as it is.")
        status_slot = c3.empty()
        ui.mark_finished("icl_trained", status == "done")
        if status in ("failed", "refused"):
            st.error(f"The run could not go on: {handle.error}.", icon=":material/error:")
        progress_slot, loss_slot = st.empty(), st.empty()
        c_ind, c_prev = st.columns(2)
        ind_slot, prev_slot = c_ind.empty(), c_prev.empty()
        found_slot = st.empty()

        def draw(now) -> None:
            step = now.step if now is not None else 0
            notice = ui.queue_notice(handle, "your run") if training else ""
            text = (f"**Training…** step {step} of {settings.steps}" if training else
                    (f"Trained {step} of {settings.steps} steps." if now is not None else
                     "Not trained yet: press **Train** (under a minute on this server alone)."))
            status_slot.markdown(text + (f"  \n{notice}" if notice else ""))
            if training:
                progress_slot.progress(step / settings.steps, text=f"step {step}/{settings.steps}")
            if now is None or not now.probes:
                return
            pc = icl.phase_change(now.probes)
            ui.chart(figures.lines_figure(icl.loss_series(now.probes), "loss on each half of a repeated sequence",
                                          "training step", "loss (nats)", height=300), "icl_loss",
                     "Loss on the first, random half and on the repeated half against the training step.",
                     slot=loss_slot)
            ui.chart(figures.lines_figure(icl.score_series(now.probes, "induction"), "induction score of each head",
                                          "training step", "score", height=300, y_range=(0, 1),
                                          dashed=icl.layer_heads(settings, 0)), "icl_ind",
                     "Each head's induction score against the training step.", slot=ind_slot)
            ui.chart(figures.lines_figure(icl.score_series(now.probes, "prev_token"),
                                          "previous-token score of each head", "training step", "score", height=300,
                                          y_range=(0, 1), dashed=icl.layer_heads(settings, 1)), "icl_prev",
                     "Each head's previous-token score against the training step.", slot=prev_slot)
            if pc is not None:
                found_slot.success(f"Induction head formed: {icl.head_name(pc['layer'], pc['head'])} crossed "
                                   f"{icl.THRESHOLD} at step {pc['step']}.", icon=":material/bolt:")

        st.subheader("The circuit, and a causal check")
        choices = icl.head_choices(settings)
        if S.get("icl_ablate", icl.NO_ABLATION) not in choices:
            S.icl_ablate = icl.NO_ABLATION  # fewer heads than the link's
        ready = run is not None and not training and bool(run.probes)
        c_a, c_e = st.columns([2, 1])
        ablate = c_a.selectbox("Ablate a head (zero its output)", choices, key="icl_ablate", bind="query-params",
                               help="Remove one head and measure every score and loss again.")
        example = c_e.number_input("Example sequence", 0, D.eval_batch - 1, 0, key="icl_example", bind="query-params",
                                   help="Which of the measurement's sequences the maps show.")
        circuit = st.container()

        if training:
            ui.live(handle, lambda: draw(handle.job.live()), [status_slot, progress_slot, loss_slot, ind_slot,
                                                               prev_slot, found_slot])
        else:
            draw(run)

        with circuit:
            if training:
                st.caption("When training ends (or you stop it), the model's induction head and the previous-token head "
                           "that feeds it are shown here, and any head can be removed to see what depends on it.")
            else:
                shown, step = (run.model, run.step) if ready else (untrained(settings), 0)
                head = icl.parse_head(ablate)
                clean, abl = ui.cached("icl_ablation", (key, step, ablate),
                                       lambda: icl.ablation_rows(shown, settings, head))
                maps = ui.cached("icl_maps", (key, step, ablate, int(example)),
                                 lambda: icl.example_maps(shown, settings, int(example),
                                                          icl.ablate_head(*head) if head else None))
                il, ih, iscore = icl.best_head(clean["induction"], range(1, 2))
                pl, ph, pscore = icl.best_head(clean["prev_token"], range(0, 1))
                m1, m2 = st.columns(2)
                with m1:
                    ui.chart(figures.attention_heatmap(maps["patterns"][il, ih], maps["tokens"],
                                                       icl.induction_title(il, ih, iscore), height=420),
                             "icl_map_ind", f"Attention of head {icl.head_name(il, ih)} on a repeated sequence.")
                with m2:
                    ui.chart(figures.attention_heatmap(maps["patterns"][pl, ph], maps["tokens"],
                                                       f"{icl.head_name(pl, ph)}: layer 0's strongest previous-token head ({pscore:.2f})",
                                                       height=420),
                             "icl_map_prev", f"Attention of head {icl.head_name(pl, ph)} on a repeated sequence.")
                st.caption(f"The sequence repeats with period {settings.length}. An induction head's stripe runs parallel "
                           f"to the diagonal, {settings.length - 1} positions to its left: the token at i reads the one "
                           "just after its earlier copy. A previous-token head is the line just below the diagonal."
                           + (f" These maps are with {ablate} ablated." if head else ""))
                rows = [{"head": icl.head_name(l, h), "induction score": round(clean["induction"][l][h], 3),
                         "previous-token score": round(clean["prev_token"][l][h], 3),
                         **({f"induction score, {ablate} ablated": round(abl["induction"][l][h], 3)} if head else {})}
                        for l in range(2) for h in range(settings.n_head)]
                ui.table(rows, "icl_scores")
                if ready:
                    st.markdown("**What came out**\n" + "\n".join(
                        f"- {line}" for line in icl.findings(run.probes, clean, head, abl)))
                else:
                    st.caption("These are the untrained model's heads (random weights, seed "
                               f"{settings.seed}): no stripe yet. Press **Train** and watch one form.")
                if ready and head is None:
                    st.caption(f"Try ablating {icl.head_name(pl, ph)}, the previous-token head the induction head reads "
                               "through: a causal check, not only a correlation.")

        with st.expander("Definitions", icon=":material/info:"):
            st.markdown(
                "- **Previous-token score** of a head: its mean attention weight from each position *i* to *i* − 1 "
                "(1 for a perfect previous-token head).\n"
                f"- **Induction score**: on sequences of {settings.length} distinct letters repeated once, the mean "
                "weight from each position *i* of the second copy to *i* − L + 1, the position just after the earlier "
                "copy of its letter (Olsson et al. 2022; 1 for a perfect induction head).\n"
                "- **First-half / repeated-half loss**: cross-entropy of the predictions inside the first copy (random "
                "letters: nothing to learn from context) and inside the second (each next letter appeared once "
                "already). Their gap is the in-context learning.\n"
                f"- Both scores are read from the hook points `blocks.0.attn.pattern` and `blocks.1.attn.pattern` on "
                f"{D.eval_batch} fixed sequences, every {D.check_every} steps. **Ablation** zeroes one head's output "
                "(`blocks.{l}.attn.z`) and measures again.\n"
                "- The circuit (Elhage et al. 2021): a layer-0 previous-token head writes *the letter before me* into "
                "each position; a layer-1 induction head matches the current letter against it and copies what "
                "follows.")

# ---------------------------------------------------------------------------------------------- few-shot
if tab_fs.open:
    with tab_fs:
        st.markdown(f"Each sequence brings its own mapping of the letters {md_escape(DF.alphabet)}, shown only as "
                    "examples — a letter, its image, a comma — and then a letter to map: the model must answer from "
                    "the examples alone. Accuracy is measured on mappings never seen in training, against the number "
                    "of examples in the prompt. The model has two layers of attention and no MLP, like the induction "
                    "model: the lookup is the induction pattern (find the earlier copy of the letter, read what "
                    "follows it).")
        fsettings = fewshot.FewShotSettings(steps=int(fs_steps), seed=int(fs_seed))
        fkey = ("fewshot", fsettings)
        fhandle, frun, fstatus = ui.current_job("icl_fs_handle", fkey)
        if ui.arrived_to_run(PAGE, "icl_fs_trained") and fhandle is None:
            ui.start_job("icl_fs_handle", fewshot.training_job(fsettings))
            fhandle, frun, fstatus = ui.current_job("icl_fs_handle", fkey)
        ftraining = fstatus in ("queued", "running")
        b1, b2, b3 = st.columns([1, 1, 6])
        b1.button("▶ Train", on_click=lambda: ui.start_job("icl_fs_handle", fewshot.training_job(fsettings)),
                  disabled=ftraining, type="primary",
                  key="icl_fs_train", help="Train the few-shot model on this server.")
        b2.button("■ Stop", on_click=ui.stop_job, args=("icl_fs_handle",), disabled=not ftraining, key="icl_fs_stop")
        fstatus_slot, fprogress_slot, facc_slot, fsaid_slot = b3.empty(), st.empty(), st.empty(), st.empty()
        ui.mark_finished("icl_fs_trained", fstatus == "done")
        if fstatus in ("failed", "refused"):
            st.error(f"The run could not go on: {fhandle.error}.", icon=":material/error:")

        def draw_fs(now) -> None:
            step = now.step if now is not None else 0
            fstatus_slot.markdown(f"**Training…** step {step} of {fsettings.steps}" if ftraining else
                                  (f"Trained {step} of {fsettings.steps} steps." if now is not None else
                                   "Not trained yet: press **Train**."))
            if ftraining:
                fprogress_slot.progress(step / fsettings.steps, text=f"step {step}/{fsettings.steps}")
            if now is None or not now.probes:
                return
            rows = now.probes[-1][1]["by_shots"]
            ui.chart(figures.lines_figure(icl.fewshot_series(rows), f"accuracy on held-out mappings (step {step})",
                                          "examples in the prompt", "accuracy", height=320, y_range=(0, 1.02),
                                          dashed=icl.FEWSHOT_REFERENCES), "icl_fs_acc",
                     "Accuracy on held-out mappings against the number of examples in the prompt.", slot=facc_slot)
            fsaid_slot.markdown("\n".join(f"- {line}" for line in icl.fewshot_findings(rows)))

        if ftraining:
            ui.live(fhandle, lambda: draw_fs(fhandle.job.live()), [fstatus_slot, fprogress_slot, facc_slot, fsaid_slot])
        else:
            draw_fs(frun)
        shown = icl.fewshot_example(frun.model if frun is not None and not ftraining else None, fsettings, 4)
        st.caption(f"A held-out prompt with 4 examples: `{shown['prompt']}`, answer `{shown['answer']}`"  # generated letters
                   + (f"; the model says `{shown['said']}`" if shown["said"] is not None else "") + ".")
