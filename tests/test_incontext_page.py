"""The In-context learning page through AppTest: training, the phase change and the findings, the
ablation, links, and the few-shot tab."""
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_clean, open_page, plotly_specs, run_until, shown_table, texts
from explorer import incontext as icl

PAGE = "pages/incontext.py"


def opened_with(params: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE)
    at.query_params.update(params)
    at.run()
    assert_clean(at)
    return at


def titles(at) -> list[str]:
    return [sp["layout"]["title"]["text"] for sp in plotly_specs(at)]


def trained(params: dict) -> AppTest:
    at = opened_with(params)
    at.button(key="icl_train").click().run()
    run_until(at, lambda a: "icl_handle" in a.session_state and a.session_state["icl_handle"].active, timeout_s=240)
    assert_clean(at)
    return at


def test_first_open_says_what_to_do():
    at = open_page(PAGE, timeout=60)
    assert any("Not trained yet" in m.value for m in at.markdown)
    assert any("Induction score" in m.value for m in at.markdown)  # the definitions
    maps = [t for t in titles(at) if t.startswith(("L0 ", "L1 "))]  # the untrained model's two heads
    assert len(maps) == 2 and "not an induction head yet" in maps[0] and "strongest previous-token head" in maps[1]
    assert any("untrained model's heads" in c for c in texts(at.caption))
    untrained = icl.build_model(icl.InductionSettings().model_config(), 0)
    clean, _ = icl.ablation_rows(untrained, icl.InductionSettings(), None)
    table = shown_table(at, "icl_scores")
    assert list(table["induction score"]) == [round(x, 3) for layer in clean["induction"] for x in layer]
    assert not any("What came out" in m.value for m in at.markdown)


def test_training_draws_the_curves_the_maps_and_what_came_out():
    at = trained({"icl_steps": "250", "icl_seed": "3"})
    run = at.session_state["icl_handle"].result()
    assert run.step == 250 and [s for s, _ in run.probes] == list(range(0, 251, 25))
    assert titles(at)[:3] == ["loss on each half of a repeated sequence", "induction score of each head",
                              "previous-token score of each head"]
    ind = next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"] == "induction score of each head")
    assert [t["name"] for t in ind["data"]] == [f"L{l} H{h}" for l in range(2) for h in range(4)]
    assert ind["data"][0]["y"] == [m["induction"][0][0] for _, m in run.probes]  # the lines are the probes
    assert any(t.startswith("L1 ") and "induction" in t for t in titles(at))
    found = next(m.value for m in at.markdown if "What came out" in m.value)
    clean, _ = icl.ablation_rows(run.model, icl.InductionSettings(steps=250, seed=3), None)
    for line in icl.findings(run.probes, clean):
        assert line in found
    assert at.query_params["icl_trained"] == "1"
    table = shown_table(at, "icl_scores")
    assert len(table) == 8 and set(table.columns) == {"head", "induction score", "previous-token score"}


def test_ablating_a_head_measures_again_and_says_what_changed():
    at = trained({"icl_steps": "250", "icl_seed": "3"})
    at.selectbox(key="icl_ablate").set_value("L0 H1").run()
    assert_clean(at)
    run = at.session_state["icl_handle"].result()
    clean, ablated = icl.ablation_rows(run.model, icl.InductionSettings(steps=250, seed=3), (0, 1))
    assert clean != ablated
    table = shown_table(at, "icl_scores")
    col = "induction score, L0 H1 ablated"
    assert list(table[col]) == [round(ablated["induction"][l][h], 3) for l in range(2) for h in range(4)]
    found = next(m.value for m in at.markdown if "What came out" in m.value)
    assert "With L0 H1 ablated (its output zeroed)" in found
    assert any("with L0 H1 ablated" in c for c in texts(at.caption))


def test_a_link_with_fewer_heads_resets_an_ablation_it_cannot_have():
    at = trained({"icl_steps": "250", "icl_heads": "2", "icl_ablate": "L1 H3"})
    assert_clean(at)
    assert at.session_state["icl_ablate"] == icl.NO_ABLATION


def test_bad_link_values_are_ignored_with_a_message():
    at = opened_with({"icl_steps": "7", "icl_encoding": "<i>x</i>", "icl_tab": "Nope"})
    assert_clean(at)
    assert at.session_state["icl_steps"] == icl.InductionSettings().steps
    assert any("ignored" in w for w in texts(at.warning))


def test_the_few_shot_tab_trains_and_measures_held_out_mappings():
    at = opened_with({"icl_tab": "Few-shot", "icl_fs_steps": "250"})
    assert any("Not trained yet" in m.value for m in at.markdown)
    at.button(key="icl_fs_train").click().run()
    run_until(at, lambda a: "icl_fs_handle" in a.session_state and a.session_state["icl_fs_handle"].active,
              timeout_s=240)
    assert_clean(at)
    fig = next(sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"].startswith("accuracy on held-out"))
    rows = at.session_state["icl_fs_handle"].result().probes[-1][1]["by_shots"]
    model_line = next(t for t in fig["data"] if t["name"] == "model")
    assert model_line["y"] == [r["accuracy"] for r in rows]
    assert any(f"With 0 examples the model is right {rows[0]['accuracy']:.0%}" in m.value for m in at.markdown)
    assert any("A held-out prompt with 4 examples" in c and "the model says" in c for c in texts(at.caption))
