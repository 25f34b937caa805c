"""Measurement, the complexity benchmark's JSON, and the Complexity page."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from apptest_helpers import assert_clean, open_page, plotly_specs, run_until, shown_table, texts
from explorer import bench
from explorer.jobs import Scheduler
from explorer.measure import (Row, SweepJob, SweepResult, SweepSettings, all_kinds, crossover, loglog_slope,
                              peak_memory, summary, sweep)


def test_peak_memory_is_measured_from_allocations():
    def work():
        a = torch.empty(1_000_000)  # 4 MB
        b = torch.empty(2_000_000)  # 8 MB, both alive: 12 MB
        del a
        c = torch.empty(500_000)  # 2 MB after a is freed: 10 MB
        return b, c

    assert peak_memory(work) == 12_000_000


def test_measuring_memory_does_not_import_the_compiler():
    """torch.profiler.profile's first use imports torch._inductor (0.9 s of every sweep's child,
    before its first point); the autograd profiler it wraps gives the same events without it."""
    code = ("import sys, torch; from explorer.measure import peak_memory; "
            "print(peak_memory(lambda: torch.empty(1_000_000)), 'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout.split()
    assert out == ["4000000", "False"]


def test_slope_and_crossover_on_known_curves():
    ns = [1024, 2048, 4096, 8192]
    assert loglog_slope(ns, [n ** 2 * 3.0 for n in ns]) == pytest.approx(2.0)
    assert loglog_slope(ns, [n * 5.0 + 0 for n in ns]) == pytest.approx(1.0)
    assert loglog_slope([1024], [1.0]) is None


def test_sweep_measures_and_skips_within_budget():
    s = SweepSettings(kinds=("softmax", "linear", "sdpa"), min_n=64, max_n=512, repeats=1,
                      memory_budget_bytes=3e6)
    r = sweep(s)
    kinds_ns = {(row.kind, row.n) for row in r.rows}
    assert ("linear", 512) in kinds_ns and ("sdpa", 512) in kinds_ns
    # softmax's score matrix at N=512 (4 heads x 512^2 x 4 bytes x 2) is over 3 MB: skipped, with a reason
    assert any(sk.kind == "softmax" and "budget" in sk.reason for sk in r.skipped)
    assert all(row.ms > 0 and row.peak_bytes > 0 for row in r.rows)
    # linear memory grows linearly: doubling N doubles the peak
    ns, mem = r.series("linear", "peak_bytes")
    assert loglog_slope(ns, mem, lo=64) == pytest.approx(1.0, abs=0.15)
    assert {row["kind"] for row in summary(r)} == {"softmax", "linear", "sdpa"}
    # each skipped point carries its own estimate
    reasons = [sk.reason for sk in r.skipped if sk.kind == "softmax"]
    assert len(set(reasons)) == len(reasons)


def rows(kind, spans):
    """Rows of one kind at N = 128, 256, ... with (fastest, median, slowest) times."""
    return [Row(kind, 128 * 2 ** i, med, 1, "forward", lo, hi, 3) for i, (lo, med, hi) in enumerate(spans)]


def test_crossover_counts_only_points_whose_spreads_allow_it():
    r = SweepResult(SweepSettings(kinds=("softmax", "linear")), "cpu")
    r.rows = rows("softmax", [(4, 5, 6), (5, 6, 7), (30, 32, 34), (120, 125, 130)]) + \
        rows("linear", [(9, 10, 11), (9, 10, 11), (10, 11, 12), (12, 13, 14)])
    # slower at 128 and 256, faster from 512: the sign change is interpolated between 256 and 512
    assert 256 < crossover(r, "linear") < 512
    # a noisy softmax point at 128 (80 ms, spread 5-90) does not make linear "faster from 128"
    r.rows[0] = Row("softmax", 128, 80, 1, "forward", 5, 90, 9)
    assert crossover(r, "linear") > 256
    # when the point before could not tell, the crossover is the first clearly faster length
    r.rows[1] = Row("softmax", 256, 10.5, 1, "forward", 9, 12, 9)
    assert crossover(r, "linear") == 512
    # never clearly faster: no crossover
    r.rows[-1] = Row("linear", 1024, 200, 1, "forward", 190, 210, 3)
    assert crossover(r, "linear") is None


def test_benchmark_json_schema(tmp_path, capsys):
    out = tmp_path / "results.json"
    bench.main(["complexity", "--max-n", "256", "--min-n", "128", "--repeats", "1", "--json", str(out)])
    data = json.loads(out.read_text())
    assert isinstance(data["device"], str) and data["device"]
    kinds = {r["kind"] for r in data["results"]}
    assert kinds == set(all_kinds())
    for row in data["results"]:
        assert {"kind", "n", "ms", "peak_bytes", "pass"} <= set(row)
        assert row["ms_min"] <= row["ms"] <= row["ms_max"]
        assert isinstance(row["n"], int) and isinstance(row["ms"], float) and isinstance(row["peak_bytes"], int)
        assert row["pass"] == "forward" and row["n"] in (128, 256)
    assert "sdpa" in capsys.readouterr().out


def test_complexity_page_small_sweep():
    at = open_page("pages/complexity.py")
    assert len(plotly_specs(at)) == 2  # theory plots before any measurement
    assert any("Measure" in i for i in texts(at.info))
    at.sidebar.multiselect(key="cx_kinds").set_value(["softmax", "sliding_window", "linear", "sdpa"])
    at.sidebar.select_slider(key="cx_max_n").set_value(2048)
    at.sidebar.number_input(key="cx_repeats").set_value(1)
    at.sidebar.number_input(key="cx_mem_budget").set_value(0.1)
    at.run()
    at.button(key="cx_measure").click().run()
    run_until(at, lambda a: a.session_state["cx_handle"].active)
    assert_clean(at)
    specs = plotly_specs(at)
    measured = next(s for s in specs if "Wall time" in s["layout"]["title"]["text"])
    names = {t["name"] for t in measured["data"]}
    assert names == {"softmax", "sliding_window", "linear", "sdpa"}
    sdpa = next(t for t in measured["data"] if t["name"] == "sdpa")
    assert sdpa["x"] == [128, 256, 512, 1024, 2048] and all(y > 0 for y in sdpa["y"])
    assert "error_y" in sdpa  # whiskers: the fastest and slowest call
    assert any("Skipped" in w and "softmax at N = 2,048" in w for w in texts(at.warning))  # over 0.1 GB
    assert shown_table(at, "cx_table").shape[0] == 4
    reading = next(m.value for m in at.markdown if m.value.startswith("**Reading the plots"))
    assert "of the time it needs without a mask" in reading  # the sdpa causal/no-mask measurement
    # the whole model beside it: flat and funnel, timed at the sweep's lengths from 256 (a job of its own)
    import ui
    from explorer import complexity

    assert ui.scheduler().submit(complexity.funnel_job(at.session_state["cx_settings"]), "test").wait(120) == "done"
    at.run()
    whole = next(s for s in plotly_specs(at) if s["layout"]["title"]["text"].startswith("Whole model"))
    assert [t["x"] for t in whole["data"]] == [[256, 512, 1024, 2048]] * 2 and all(
        y > 0 for t in whole["data"] for y in t["y"])
    assert any("of the flat model's time per step" in c for c in texts(at.caption))
    # a second visit with the same settings is served from the shared result
    at.run()
    assert len(plotly_specs(at)) == 5


def test_a_second_session_gets_the_shared_sweep_at_once():
    scheduler = Scheduler(workers=1)
    s = SweepSettings(kinds=("linear",), min_n=128, max_n=256, repeats=1)
    first = scheduler.submit(SweepJob(s, scheduler.budget), "student 1")
    assert first.wait(120) == "done"
    second = scheduler.submit(SweepJob(s, scheduler.budget), "student 2")
    assert second is first and second.done and len(second.result().rows) == 2
    scheduler.shutdown()


def test_complexity_page_rejects_impossible_settings():
    at = open_page("pages/complexity.py")
    at.sidebar.select_slider(key="cx_width").set_value(16)
    at.sidebar.selectbox(key="cx_heads").set_value(16)  # head size 1 is fine: 16 heads of width 1
    at.run()
    assert_clean(at)
    assert not at.warning and len(plotly_specs(at)) == 2
    at.sidebar.select_slider(key="cx_width").set_value(64)
    at.sidebar.multiselect(key="cx_kinds").set_value([])
    at.run()
    assert_clean(at)
    assert any("at least one" in w for w in texts(at.warning))


def test_forward_and_backward_pass_is_measured_too():
    from explorer.measure import measure_point

    s = SweepSettings(pass_="forward+backward", repeats=1)
    fwd = measure_point("sliding_window", 512, SweepSettings(repeats=1))
    both = measure_point("sliding_window", 512, s)
    assert both.pass_ == "forward+backward" and both.peak_bytes > fwd.peak_bytes  # gradients need memory too


@pytest.mark.parametrize("pass_", ["forward", "forward+backward"])
def test_predicted_memory_bounds_the_measured_peak_for_every_kind(pass_):
    """The scheduler admits sweeps by their predicted peaks: a prediction under the truth would let the
    server run out of memory."""
    from explorer.measure import measure_point, predicted_bytes

    s = SweepSettings(n_embd=64, n_head=8, window=64, pass_=pass_, repeats=1)
    for kind in all_kinds():
        for n in (256, 1024):
            measured = measure_point(kind, n, s).peak_bytes
            assert measured <= predicted_bytes(kind, n, s), (kind, n, measured)
