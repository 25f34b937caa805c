"""The Mixture of experts lab: its task, its training job, its statistics and its page."""
import numpy as np
import pytest
import torch

from apptest_helpers import assert_clean, open_page, plotly_specs, run_until, shown_table, texts
from explorer import experts
from explorer.config import ModelConfig
from explorer.tasks import IGNORE, TASKS

SMALL = experts.ExpertsSettings(n_experts=4, top_k=1, steps=150, length=6)


@pytest.fixture(scope="module")
def trained():
    """A small run of the three models (about 10 s): the page's job, run to the end."""
    job = experts.ExpertsJob(SMALL)
    while not job.step(1.0):
        pass
    return job.result()


def test_the_mixed_task_tags_each_sequence_and_its_answer_follows_the_tag():
    x, y, which = experts.MIXED.batch_with_tasks(torch.Generator().manual_seed(0), 64, 5)
    tok = experts.MIXED.tokenizer
    assert set(which.tolist()) == {0, 1, 2}
    for row in range(64):
        name = list(experts.TAGS)[int(which[row])]
        assert tok.decode(x[row, 5:6]) == experts.TAGS[name]
        src = tok.decode(x[row, :5])
        assert tok.decode(y[row, 5:]) == TASKS[name].expected(src)  # the answer, after the tag
        assert (y[row, :5] == IGNORE).all()


def test_the_dense_model_has_the_mixtures_active_parameters():
    for k in (1, 2):
        s = experts.ExpertsSettings(n_experts=4, top_k=k)
        moe, dense = s.config(), s.config("dense")
        active = experts.active_params(moe)
        # per layer the router's weights (width x experts) and, for k experts against one k-times wider
        # MLP, k - 1 more output biases (width each) are the only difference
        assert active - experts.active_params(dense) == s.n_layer * (s.n_embd * s.n_experts + (k - 1) * s.n_embd)
        assert experts.params_of(moe) > active  # the experts a token is not sent to


def test_active_parameters_count_what_one_token_really_uses():
    cfg = ModelConfig(n_layer=1, n_embd=16, n_head=2, ffn="moe", n_experts=3, top_k=2, vocab_size=10, block_size=8)
    m = experts.build_model(cfg)
    expert = sum(p.numel() for p in m.blocks[0].mlp.experts[0].parameters())
    assert experts.active_params(cfg) == m.num_params() - 3 * expert + 2 * expert


def test_training_learns_and_records_load_drops_and_imbalance(trained):
    recs = trained.records
    assert set(recs) == {"MoE", "MoE, no balancing loss", "dense (same active parameters)"}
    for name, r in recs.items():
        assert r[-1].step == SMALL.steps and r[-1].held_out_loss < 0.8 * r[0].held_out_loss  # it learns
    last = recs["MoE"][-1]
    assert len(last.load) == SMALL.n_layer and all(abs(sum(layer) - 1) < 1e-6 for layer in last.load)
    assert 0 <= last.dropped < 1 and last.cv >= 0
    assert recs["dense (same active parameters)"][-1].load is None
    series = experts.load_series(trained, 0)
    assert len(series) == SMALL.n_experts
    assert [s.step for s in recs["MoE"]] == series["expert 0"][0]


def test_load_cv_is_zero_when_even_and_sqrt_e_minus_1_when_collapsed():
    assert experts.load_cv(torch.full((4,), 0.25)) == pytest.approx(0.0)
    assert experts.load_cv(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(3 ** 0.5)


def test_specialisation_table_is_computed_from_the_routing(trained):
    table = experts.specialisation(trained.models["MoE"], SMALL.length)
    assert table.shape == (SMALL.n_layer, 3, SMALL.n_experts)
    assert np.allclose(table.sum(-1), 1)
    # the same numbers by hand for layer 0, reverse: first choices at the tag and answer positions
    x, _, which = experts.MIXED.batch_with_tasks(torch.Generator().manual_seed(99), 256, SMALL.length)
    routes = experts.routing_of(trained.models["MoE"], x)
    first = routes[0].experts[:, 0].view(256, -1)[which == 1][:, SMALL.length:].reshape(-1)
    assert np.allclose(table[0, 1], np.bincount(first.numpy(), minlength=SMALL.n_experts) / first.numel())
    finding = experts.specialisation_finding(table)
    E = SMALL.n_experts
    strong = any(t.max(axis=1).min() > 2 / E and len(set(t.argmax(axis=1).tolist())) > 1 for t in table)
    assert finding.startswith("Experts specialise" if strong else "No clear specialisation")
    assert f"{table[0].max(axis=1).min():.0%}–{table[0].max(axis=1).max():.0%}" in finding


def test_findings_state_the_measured_losses(trained):
    text = " ".join(experts.findings(trained))
    for name, recs in trained.records.items():
        assert f"{recs[-1].held_out_loss:.3f}" in text


def test_input_view_messages_and_routing(trained):
    model = trained.models["MoE"]
    assert "shorten" in experts.input_view(model, "abcdefghij", "copy", SMALL.length).message
    assert "a–z" in experts.input_view(model, "ab<d", "copy", SMALL.length).message
    assert experts.input_view(model, "", "copy", SMALL.length).message
    view = experts.input_view(model, "abc", "reverse", SMALL.length)
    assert not view.message and view.expected == "cba" and view.tokens[:4] == ["a", "b", "c", "<"]
    assert view.gates.shape == (SMALL.n_layer, len(view.tokens), SMALL.n_experts)


def test_impossible_settings_get_a_message_in_the_pages_words():
    assert "top-k = 3" in experts.ExpertsSettings(n_experts=2, top_k=3).problem()
    assert experts.ExpertsSettings().problem() is None


def test_page_trains_and_shows_every_view():
    at = open_page("pages/experts.py")
    routing = plotly_specs(at)  # before training: the untrained router on the example
    assert len(routing) == 1 and routing[0]["data"][0]["type"] == "heatmap"
    assert any("untrained" in h.value for h in at.subheader)
    assert any("Press **Train**" in i for i in texts(at.info))
    at.sidebar.number_input(key="moe_steps").set_value(50).run()
    at.button(key="moe_train").click().run()
    run_until(at, lambda a: "moe_handle" in a.session_state and a.session_state["moe_handle"].active)
    assert_clean(at)
    titles = [s["layout"].get("title", {}).get("text", "") for s in plotly_specs(at)]
    assert "held-out loss" in titles and any(t.startswith("each expert") for t in titles)
    assert any("What came out" in m.value for m in at.markdown)
    table = shown_table(at, "moe_table")
    assert list(table["task"]) == list(experts.TAGS) and f"expert {SMALL.n_experts - 1}" in table.columns
    at.text_input(key="moe_input").set_value("ab1").run()  # bad input: a message, nothing lost
    assert_clean(at)
    assert any("a–z" in w for w in texts(at.warning))
    assert "moe_handle" in at.session_state and at.session_state["moe_handle"].done


def test_page_says_why_top_k_cannot_exceed_the_experts():
    at = open_page("pages/experts.py")
    at.sidebar.slider(key="moe_experts").set_value(2)
    at.sidebar.slider(key="moe_top_k").set_value(3).run()
    assert_clean(at)
    assert any("top-k = 3" in e for e in texts(at.error))
    assert at.button(key="moe_train").disabled


# ---------------------------------------------------------------------------------------------- residuals
from explorer import residuals  # noqa: E402
from explorer.model import build_model  # noqa: E402


def test_block_gradient_norms_are_the_norms_of_each_blocks_gradients():
    s = residuals.ResidualSettings(n_layer=3)
    m = build_model(s.config("post_ln"), 0)
    x, y = TASKS["reverse"].batch(torch.Generator().manual_seed(1), 8, 8)
    got = residuals.block_grad_norms(m, x, y)
    assert all(p.grad is None for p in m.parameters())  # measuring leaves nothing behind for an update
    m.zero_grad()
    m(x, y).loss.backward()
    want = [torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item() for b in m.blocks]
    assert got == pytest.approx(want, rel=1e-5)
    norms = residuals.residual_norms(m, x)
    with torch.no_grad():
        embedded = m.wte(x) + m.pos.embed(x.shape[1])
    assert len(norms) == 4 and norms[0] == pytest.approx(float(embedded.norm(dim=-1).mean()))


def test_post_ln_first_block_gradient_and_the_embedding_scale_check():
    s = residuals.ResidualSettings()
    small, big = residuals.init_ratio(s, "post_ln"), residuals.init_ratio(s, "post_ln", residuals.BIG_EMBEDDINGS)
    assert small > 1 > big * 0.9  # small embeddings magnify the first block's gradient; large ones do not
    run = residuals.ResidualRun(s, {"post_ln": [residuals.ResidualRecord(0, 3.0, 0.1, [small, 1.0], [1, 1])]}, 0, True)
    text = " ".join(residuals.findings(run))
    assert "Against the textbook" in text and f"{small:.2g}×" in text and f"is {big:.2g}" in text


def test_residuals_tab_trains_the_layouts_and_says_what_came_out():
    at = open_page("pages/experts.py")
    at.query_params["moe_tab"] = "Residuals and norms"
    at.run()
    at.number_input(key="moe_res_steps").set_value(20)
    at.multiselect(key="moe_res_layouts").set_value(["pre_ln", "no_residual"]).run()
    at.button(key="moe_res_train").click().run()
    run_until(at, lambda a: "moe_res_handle" in a.session_state and a.session_state["moe_res_handle"].active)
    assert_clean(at)
    titles = [s["layout"].get("title", {}).get("text", "") for s in plotly_specs(at)]
    assert "gradient norm per block, at initialisation" in titles
    grad = next(s for s in plotly_specs(at) if s["layout"]["title"]["text"].startswith("gradient norm"))
    run = at.session_state["moe_res_handle"].result()
    assert grad["data"][0]["y"] == pytest.approx(run.records["pre_ln"][0].grad_norms)
    ratio = next(s for s in plotly_specs(at) if s["layout"]["title"]["text"].startswith("first block"))
    first = run.records["pre_ln"][-1].grad_norms
    assert ratio["data"][0]["y"][-1] == pytest.approx(first[0] / first[-1])
    assert any("What came out" in m.value and "No residual" in m.value for m in at.markdown)
    at.multiselect(key="moe_res_layouts").set_value([]).run()  # nothing chosen: a message, no traceback
    assert_clean(at)
    assert any("at least one layout" in w for w in texts(at.warning))


def test_bench_moe_writes_every_figure(tmp_path):
    from explorer import bench

    out = tmp_path / "moe.json"
    bench.main(["moe", "--seconds", "0.3", "--json", str(out)])
    import json

    data = json.loads(out.read_text())
    assert set(data["runs"]) == set(experts.ExpertsSettings().runs())
    moe = data["runs"]["MoE"]
    assert set(moe["dropped_at_capacity"]) == {"1.0", "1.25"} and moe["steps"] > 0
    assert set(data["grad_ratio_first_over_last_at_init"]) == set(residuals.ResidualSettings().layouts)
    assert len(data["funnel_ms_per_step_n1024"]) == 2


def test_reading_a_mixture_with_a_smaller_capacity_drops_more():
    m = build_model(experts.ExpertsSettings().config(), 0)
    assert experts.dropped_at(m, 0.5) >= experts.dropped_at(m, 1.0) >= experts.dropped_at(m, 4.0) == 0.0


# ---------------------------------------------------------------------------------------------- funnel
from explorer import funnel  # noqa: E402


def test_funnel_levels_labels_and_maps():
    s = funnel.FunnelSettings(pool_before=(1, 2))
    cfg = s.config()
    assert funnel.levels(cfg) == [0, 1, 2]
    assert funnel.level_names(s)[1].startswith(f"level 1: {cfg.block_size // 2} tokens")
    m = build_model(cfg, 0)
    ids = list(range(10))
    maps = funnel.maps_for(m, ids, list("abcdefghij"))
    assert [x.labels for x in maps] == [list("abcdefghij"), ["ab", "cd", "ef", "gh", "ij"], ["abcd", "efgh"]]
    assert maps[1].maps.shape == (1, 4, 5, 5) and np.allclose(maps[2].maps.sum(-1), 1, atol=1e-5)
    assert "choose at least one block" in funnel.FunnelSettings(pool_before=()).problem()


def test_cost_finding_states_the_measured_ratios():
    series = {"funnel (pool before 1)": ([256, 2048], [10.0, 40.0]), "flat": ([256, 2048], [20.0, 100.0])}
    text = funnel.cost_finding(series)
    assert "takes 50% of the flat model's time per step" in text and "2,048, 40%" in text


def test_funnel_tab_trains_both_models_and_draws_each_level():
    at = open_page("pages/experts.py")
    at.query_params["moe_tab"] = "Funnel"
    at.run()
    at.number_input(key="moe_fun_steps").set_value(20).run()
    at.button(key="moe_fun_train").click().run()
    run_until(at, lambda a: any(h.active for h in a.session_state["moe_fun_handles"]))
    assert_clean(at)
    grid = next(s for s in plotly_specs(at) if any("head" in str(a.get("text")) for a in s["layout"].get("annotations", [])))
    assert grid["data"][0]["z"] and len(grid["data"][0]["z"]) == funnel.FunnelSettings().config().block_size
    at.selectbox(key="moe_fun_level").set_value(1).run()
    assert_clean(at)
    grid = next(s for s in plotly_specs(at) if any("head" in str(a.get("text")) for a in s["layout"].get("annotations", [])))
    assert len(grid["data"][0]["z"]) == funnel.FunnelSettings().config().block_size // 2  # the merged pairs
