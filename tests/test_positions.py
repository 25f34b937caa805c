"""Positional encodings' views (each from its own class), the extrapolation experiment, and its page."""
import json

import numpy as np
import pytest

from apptest_helpers import assert_clean, open_page, plotly_specs, run_until, texts
from explorer import bench, positions, view
from explorer.encodings import ENCODINGS
from explorer.encodings.alibi import alibi_view
from explorer.encodings.none import uniform_average_signals
from explorer.encodings.rope import rope_example, rope_planes, rope_scores
from explorer.encodings.sinusoidal import SCALE, SinusoidalEncoding, sinusoidal_table
from explorer.extrapolation import ExtrapolationSettings, ModelJob, run
from explorer.tasks import TASKS, Task


def test_rope_scores_depend_only_on_offset_and_planes_keep_length():
    q, k = rope_example(8)
    scores = rope_scores(q, k, 20)
    for off in range(-5, 6):
        d = np.diagonal(scores, offset=off)
        assert np.allclose(d, d[0], atol=1e-4)
    for p in (0, 3, 17):
        assert np.allclose(np.linalg.norm(rope_planes(q, p), axis=1), np.linalg.norm(q.reshape(4, 2), axis=1), atol=1e-5)
    # score from the planes equals the matrix entry
    assert float((rope_planes(q, 7) * rope_planes(k, 3)).sum()) == pytest.approx(scores[7, 3], abs=1e-4)


def test_alibi_and_sinusoidal_views():
    slopes, bias = alibi_view(8, 6)
    assert np.allclose(slopes, [2.0 ** -(8 * (h + 1) / 8) for h in range(8)])  # m_h = 2^(-8(h+1)/H), h from 0
    assert np.isnan(bias[0, 0, 1]) and bias[0, 5, 0] == pytest.approx(-5 * 0.5)
    assert positions.pca_2d(np.random.rand(10, 6)).shape == (10, 2)
    sim = positions.cosine_similarity(sinusoidal_table(16, 8).numpy())
    assert np.allclose(np.diag(sim), 1, atol=1e-5)


def test_sinusoidal_page_states_the_scale_the_model_uses():
    from explorer.config import ModelConfig

    enc = SinusoidalEncoding(ModelConfig(n_embd=16, encoding="sinusoidal"))
    assert np.allclose(enc.embed(5).numpy(), SCALE * sinusoidal_table(5, 16).numpy())
    text = " ".join(b.text for b in view.walk(SinusoidalEncoding.section().blocks()) if isinstance(b, view.Markdown))
    assert f"times **{SCALE}**" in text


def test_none_encoding_signals_are_measured_and_match_their_laws():
    m = uniform_average_signals(64, samples=2048)
    t = np.arange(64)
    assert np.allclose(m["marked"], 1 / (t + 1), atol=0.02)  # a recognisable token's share: 1/(t+1)
    assert np.allclose(m["size"], 1 / np.sqrt(t + 1), rtol=0.1)  # ordinary tokens: the size shrinks as 1/sqrt(t+1)


def test_every_encoding_with_a_tab_builds_it_and_controls_have_unique_keys():
    keys = []
    for name in ENCODINGS.names():
        sec = ENCODINGS[name].section()
        if sec is None:
            continue
        keys += [c.key for c in sec.controls]
        blocks = view.walk(sec.blocks(experiment=None) if sec.context else sec.blocks())
        assert blocks, name
    assert len(keys) == len(set(keys)) and all(k.startswith("pe_") for k in keys)


def test_copy_needs_a_lookback_of_exactly_its_length():
    for n in (4, 8, 16):
        assert TASKS["copy"].lookback(n) == (n, n)
    assert TASKS["reverse"].lookback(8) == (1, 15)
    assert TASKS["induction"].lookback(12) == (11, 11)


@pytest.fixture(scope="module")
def small_result():
    return run(ExtrapolationSettings(task="copy", train_len=4, max_steps=100, check_every=50))


def test_experiment_reports_every_encoding_and_refuses_learned_past_its_table(small_result):
    r = small_result
    assert {(row["encoding"], row["eval_len"]) for row in r.rows} == {
        (e, n) for e in ENCODINGS.names() for n in (4, 8, 16)}
    learned_far = [row for row in r.rows if row["encoding"] == "learned" and row["eval_len"] > 4]
    assert all(row["accuracy"] is None and "rows" in row["note"] for row in learned_far)
    assert r.models["learned"].tokens is None and r.models["rope"].maps.shape == (2, 4, 32, 32)
    assert r.learned_table.shape == (9, 64)
    for m in r.models.values():  # each trained until it fitted or hit the cap, and says which
        assert m.steps == 100 or m.fitted
        assert all(row["steps"] == m.steps and row["fitted"] == m.fitted for row in m.rows)
    assert len(r.losses("rope")) == 3 and r.losses("learned")[1:] == [None, None]


def test_each_models_summary_states_its_own_rows(small_result):
    for e, m in small_result.models.items():
        text = small_result.summary(e)
        assert text.startswith(f"**{e}** {'fitted' if m.fitted else 'did not fit'} length 4 in {m.steps:,} steps")
        for row in m.rows:  # each length's accuracy, as the table shows it
            shown = "nothing" if row["accuracy"] is None else f"{row['accuracy']:.1%}"
            assert f"{shown} at {row['eval_len']}" in text, (text, row)


def test_findings_say_which_models_did_not_learn(small_result):
    found = " ".join(small_result.findings())
    unfit = [e for e, m in small_result.models.items() if not m.fitted]
    for e in unfit:
        assert f"**{e}**" in found
    if unfit:
        assert "not about extrapolation" in found


def test_learned_rows_movement_is_measured(small_result):
    rows = small_result.learned_rows()
    # copy at L = 4 trains on lengths 2..4: inputs of 4..8 tokens, so rows 0-3 always, 4-7 sometimes, 8 never
    assert rows["reached"][:4] == [1, 1, 1, 1] and 0 < rows["reached"][5] < 1 and rows["reached"][8] == 0
    moved = np.array(rows["moved"])
    assert moved[8] < 0.05 < moved[:4].min()  # a row no sequence reaches stays put; used rows move
    assert "rows no training sequence reaches" in small_result.learned_finding()


def test_training_draws_lengths_from_half_to_full(monkeypatch):
    seen = []
    original = Task.batch

    def spy(self, gen, batch_size, length):
        seen.append(length)
        return original(self, gen, batch_size, length)

    monkeypatch.setattr(Task, "batch", spy)
    job = ModelJob(ExtrapolationSettings(task="copy", train_len=8, max_steps=30, check_every=30,
                                         encodings=("rope",)), "rope")
    while not job.step(0.5):
        pass
    train_lengths = seen[:30]
    assert set(train_lengths) <= set(range(4, 9)) and len(set(train_lengths)) >= 3  # L/2..L, not only L


def test_extrapolation_benchmark_json_schema(tmp_path):
    out = tmp_path / "results.json"
    bench.main(["extrapolation", "--task", "reverse", "--train-len", "4", "--max-steps", "20",
                "--encodings", "rope,learned", "--json", str(out)])
    data = json.loads(out.read_text())
    assert len(data["results"]) == 6
    for row in data["results"]:
        assert {"encoding", "train_len", "eval_len", "accuracy", "loss", "steps", "fitted"} <= set(row)
        assert row["train_len"] == 4 and row["eval_len"] in (4, 8, 16)
        assert row["accuracy"] is None or 0 <= row["accuracy"] <= 1
    rope = [r for r in data["results"] if r["encoding"] == "rope"]
    assert all(isinstance(r["accuracy"], float) and isinstance(r["loss"], float) for r in rope)


def test_cli_defaults_are_the_dataclass_defaults(capsys):
    with pytest.raises(SystemExit):
        bench.main(["extrapolation", "--help"])
    d = ExtrapolationSettings()
    import argparse

    parser = argparse.ArgumentParser()
    bench.BENCHES["extrapolation"].arguments(parser)
    args = parser.parse_args([])
    assert (args.task, args.train_len, args.max_steps, args.seed) == (d.task, d.train_len, d.max_steps, d.seed)


def test_positions_page_runs_the_experiment():
    at = open_page("pages/positions.py")
    drawn = {}
    for cls in [c for c in ENCODINGS.values() if c.section() is not None]:  # the encodings' figures need no training
        at.session_state["pe_tab"] = cls.title
        at.run()
        assert_clean(at)
        drawn[cls.title] = [s["layout"]["title"]["text"] for s in plotly_specs(at)]
    # only the open tab is drawn (the browser draws a hidden tab's charts too); the others keep their controls
    assert all(not set(a) & set(b) for t, a in drawn.items() for u, b in drawn.items() if t != u), drawn
    assert sum(map(len, drawn.values())) >= 6 and "cosine similarity of positions" in drawn["Sinusoidal"], drawn
    at.session_state["pe_tab"] = "Learned"
    at.run()
    at.slider(key="pe_rope_m").set_value(9).run()  # a closed tab's control
    assert_clean(at)
    at.slider(key="pe_train_len").set_value(4)
    at.number_input(key="pe_steps").set_value(50)
    at.button[0].click().run()
    run_until(at, lambda a: any(h.active for h in a.session_state["pe_handles"]))
    assert_clean(at)
    specs = plotly_specs(at)
    print([h.status for h in at.session_state["pe_handles"]], texts(at.info), texts(at.error), texts(at.warning))
    acc = next(s for s in specs if s["layout"]["title"]["text"] == "token accuracy")
    assert {t["name"] for t in acc["data"]} == set(ENCODINGS.names())
    learned = next(t for t in acc["data"] if t["name"] == "learned")
    assert learned["x"] == [4, 8, 16] and learned["y"][1:] == [None, None]
    assert any("cannot represent positions" in w for w in texts(at.warning))
    assert any("What came out" in m.value for m in at.markdown)
    assert any(s["layout"]["title"]["text"].startswith("how far each row moved") for s in specs)  # learned tab
    # the maps at the longest length: one encoding's at a time, the open tab's (a link names it)
    maps = [s["layout"]["title"]["text"] for s in specs if s["layout"]["title"]["text"] in ENCODINGS.names()]
    assert maps == ["sinusoidal"], maps
    at.query_params["pe_map"] = "rope"  # as a copied link gives it
    at.run()
    assert_clean(at)
    maps = [s["layout"]["title"]["text"] for s in plotly_specs(at) if s["layout"]["title"]["text"] in ENCODINGS.names()]
    assert maps == ["rope"], maps
    assert any(m.value.startswith("**rope** ") and "tokens right" in m.value for m in at.markdown)  # beside it, what the rope model scored
    at.query_params["pe_map"] = "learned"  # a table with no row at length 16: said, not drawn
    at.run()
    assert_clean(at)
    assert not [s for s in plotly_specs(at) if s["layout"]["title"]["text"] in ENCODINGS.names()]
    assert any("cannot represent positions" in c for c in texts(at.caption))
