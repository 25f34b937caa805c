"""The positional-encoding figures' mathematics, the extrapolation experiment, and its page."""
import json

import numpy as np
import pytest

from apptest_helpers import assert_clean, open_page, plotly_specs, texts
from explorer import bench, positions
from explorer.extrapolation import ExtrapolationSettings, run


def test_rope_scores_depend_only_on_offset_and_planes_keep_length():
    q, k = positions.rope_example(8)
    scores = positions.rope_scores(q, k, 20)
    for off in range(-5, 6):
        d = np.diagonal(scores, offset=off)
        assert np.allclose(d, d[0], atol=1e-4)
    for p in (0, 3, 17):
        assert np.allclose(np.linalg.norm(positions.rope_planes(q, p), axis=1),
                           np.linalg.norm(q.reshape(4, 2), axis=1), atol=1e-5)
    # score from the planes equals the matrix entry
    assert float((positions.rope_planes(q, 7) * positions.rope_planes(k, 3)).sum()) == pytest.approx(scores[7, 3], abs=1e-4)


def test_alibi_and_sinusoidal_views():
    slopes, bias = positions.alibi(8, 6)
    assert np.allclose(slopes, [2.0 ** -(i + 1) for i in range(8)])
    assert np.isnan(bias[0, 0, 1]) and bias[0, 5, 0] == pytest.approx(-5 * 0.5)
    table, sim = positions.sinusoidal(16, 8)
    assert table.shape == (16, 8) and np.allclose(np.diag(sim), 1, atol=1e-5)
    assert positions.pca_2d(np.random.rand(10, 6)).shape == (10, 2)
    assert positions.uniform_attention_signal(4).tolist() == [1, 0.5, 1 / 3, 0.25]


def test_experiment_reports_every_encoding_and_refuses_learned_past_its_table():
    r = run(ExtrapolationSettings(task="copy", train_len=4, steps=30))
    assert {(row["encoding"], row["eval_len"]) for row in r.rows} == {
        (e, n) for e in ("none", "sinusoidal", "learned", "rope", "alibi") for n in (4, 8, 16)}
    learned_far = [row for row in r.rows if row["encoding"] == "learned" and row["eval_len"] > 4]
    assert all(row["accuracy"] is None and "rows" in row["note"] for row in learned_far)
    assert r.maps["learned"][0] is None and r.maps["rope"][1].shape == (2, 4, 32, 32)
    assert r.learned_table.shape == (9, 64)
    found = r.findings()
    assert found[0].startswith("At the training length, the best was **")
    assert "16 (4× longer)" in found[1] and "learned" not in found[1]  # learned cannot be evaluated there
    assert len(r.losses("rope")) == 3 and r.losses("learned")[1:] == [None, None]


def test_extrapolation_benchmark_json_schema(tmp_path):
    out = tmp_path / "results.json"
    bench.main(["extrapolation", "--task", "reverse", "--train-len", "4", "--steps", "20",
                "--encodings", "rope,learned", "--json", str(out)])
    data = json.loads(out.read_text())
    assert len(data["results"]) == 6
    for row in data["results"]:
        assert {"encoding", "train_len", "eval_len", "accuracy", "loss"} <= set(row)
        assert row["train_len"] == 4 and row["eval_len"] in (4, 8, 16)
        assert row["accuracy"] is None or 0 <= row["accuracy"] <= 1
    rope = [r for r in data["results"] if r["encoding"] == "rope"]
    assert all(isinstance(r["accuracy"], float) and isinstance(r["loss"], float) for r in rope)


def test_positions_page_runs_the_experiment():
    at = open_page("pages/positions.py")
    assert len(plotly_specs(at)) >= 6  # the encodings' own figures need no training
    at.slider(key="pe_rope_m").set_value(9).run()
    assert_clean(at)
    at.slider(key="pe_train_len").set_value(4)
    at.number_input(key="pe_steps").set_value(40)
    at.button[0].click().run(timeout=180)
    assert_clean(at)
    specs = plotly_specs(at)
    acc = next(s for s in specs if s["layout"]["title"]["text"] == "token accuracy")
    assert {t["name"] for t in acc["data"]} == {"none", "sinusoidal", "learned", "rope", "alibi"}
    learned = next(t for t in acc["data"] if t["name"] == "learned")
    assert learned["x"] == [4, 8, 16] and learned["y"][1:] == [None, None]
    assert any("cannot represent positions" in w for w in texts(at.warning))
    assert any("What came out" in m.value for m in at.markdown)
