"""A few students on one server at once, and the queue a student sees when the server is full."""
import asyncio
import argparse
import threading

from apptest_helpers import assert_clean, open_page, texts
from explorer.jobs import Job
from scripts import load


class Hold(Job):
    """Holds most of the server's memory budget until released (a stand-in for a big sweep)."""

    def __init__(self, peak):
        self.key, self.peak_bytes, self.gate = ("hold", id(self)), peak, threading.Event()

    def step(self, slice_s):
        return self.gate.wait(slice_s)

    def remaining_s(self):
        return 30.0


def test_a_sweep_that_does_not_fit_waits_in_the_queue_and_the_page_says_so():
    import ui

    scheduler = ui.scheduler()  # the same one the pages use in this process
    from explorer import lab

    assert scheduler.submit(lab.calibration_job(), "test").wait(120) == "done"  # the Lab's, measured once per server
    hold = Hold(scheduler.budget - 3e8)  # room for small jobs (the sweep's speed estimate), not for a sweep
    handle = scheduler.submit(hold, "another student")
    try:
        at = open_page("pages/complexity.py")
        at.sidebar.select_slider(key="cx_max_n").set_value(1024)
        at.run()
        at.button(key="cx_measure").click().run()
        assert_clean(at)
        notice = " ".join(texts(at.caption))
        assert "Waiting for room on this server" in notice and "number 1 in the queue" in notice
        assert at.session_state["cx_handle"].status == "queued"
        assert not at.button(key="cx_stop").disabled
        at.button(key="cx_stop").click().run()  # Stop works while queued
        assert_clean(at)
        assert "cx_handle" not in at.session_state
        assert any("Press **Measure**" in i for i in texts(at.info))
    finally:
        hold.gate.set()
        handle.release("another student")


def test_a_few_students_train_measure_and_change_controls_at_once(server):
    args = argparse.Namespace(sessions=4, measurers=1, changers=1, distinct_seeds=False, measure_seconds=4.0,
                              train_limit=120.0, timeout=120.0, think=0.5)
    url = server.replace("http://", "ws://") + "/_stcore/stream"
    out = []  # in a thread of its own: the browser tests' driver may own this thread's event loop
    worker = threading.Thread(target=lambda: out.append(asyncio.run(load.classroom_scenario(args, url))))
    worker.start()
    worker.join(300)
    result = out[0]
    assert result["errors"] == [] and result["lost_sessions"] == []
    assert result["training_finished"] == result["trainers"] == 3
    assert result["control_changes"] > 0 and len(result["measure"]) == 1


def test_the_server_runs_on_uvloop():
    """requirements.txt installs Streamlit's ``performance`` extra: its server then runs on uvloop, which
    hands a fresh browser the page's script files about 0.3 s sooner (python -m explorer.bench pages)."""
    from pathlib import Path

    import uvloop
    from streamlit.web import bootstrap

    assert "streamlit[performance]==" in (Path(__file__).resolve().parents[1] / "requirements.txt").read_text()
    assert bootstrap._get_uvloop_loop_factory() is uvloop.new_event_loop  # what `streamlit run` starts its loop with
