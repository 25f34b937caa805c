"""The server-wide scheduler: admission by memory, the queue, refusals, Stop, crashes, fair slices,
and one computation shared by every session that asks for the same work."""
import gc
import threading
import time
import weakref

import pytest

from explorer.jobs import CANCELLED, DONE, FAILED, QUEUED, REFUSED, RUNNING, FunctionJob, Job, Scheduler


class Steps(Job):
    """A job of ``n`` slices that waits for ``gate`` before each (so tests decide when it moves)."""

    def __init__(self, n, peak, key=None, gate=None, fail_at=None):
        self.n, self.peak_bytes, self.key, self.gate, self.fail_at = n, peak, key, gate, fail_at
        self.done_steps = 0
        self.closed = False

    def step(self, slice_s):
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail_at is not None and self.done_steps == self.fail_at:
            raise RuntimeError("boom")
        self.done_steps += 1
        time.sleep(0.002)
        return self.done_steps >= self.n

    def result(self):
        return self.done_steps

    def remaining_s(self):
        return 0.01 * (self.n - self.done_steps)

    def close(self):
        self.closed = True


def wait_for(cond, timeout=5):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def scheduler():
    s = Scheduler(memory_budget_bytes=100, workers=2, slice_s=0.01)
    yield s
    s.shutdown()


def test_jobs_over_the_budget_wait_in_order_and_budgets_add_up_across_sessions(scheduler):
    gate = threading.Event()
    a = scheduler.submit(Steps(3, 60, gate=gate), "student 1")
    b = scheduler.submit(Steps(3, 30, gate=gate), "student 2")  # 60 + 30 fit in 100
    c = scheduler.submit(Steps(3, 30, gate=gate), "student 3")  # 60 + 30 + 30 do not
    assert (a.status, b.status, c.status) == (RUNNING, RUNNING, QUEUED)
    assert c.place() == 1 and c.wait_estimate_s() is not None
    assert scheduler.snapshot()["reserved_bytes"] == 90
    gate.set()
    assert c.wait(5) == DONE and a.status == DONE and b.status == DONE
    assert scheduler.snapshot()["reserved_bytes"] == 0 and scheduler.snapshot()["peak_reserved_bytes"] == 90


def test_a_job_that_can_never_fit_is_refused_with_the_reason(scheduler):
    h = scheduler.submit(Steps(1, 101), "student")
    assert h.status == REFUSED and "can never run here" in h.error and "0.0 GB" in h.error
    assert h.job.closed


def test_stop_removes_a_queued_job_and_ends_a_running_one(scheduler):
    gate = threading.Event()
    big = scheduler.submit(Steps(50, 90, gate=gate), "student 1")
    queued = scheduler.submit(Steps(1, 50), "student 2")
    assert queued.status == QUEUED
    queued.release("student 2")
    assert queued.status == CANCELLED and queued.place() is None
    big.release("student 1")
    gate.set()
    assert big.wait(5) == CANCELLED and big.job.done_steps < 50 and big.job.closed
    assert scheduler.snapshot()["reserved_bytes"] == 0


def test_a_session_that_is_gone_releases_its_jobs_and_a_shared_run_goes_on(scheduler):
    """What ui.holder arranges: when a session's state is freed, a finalizer tells the scheduler the
    holder left; its own runs stop (a queued one leaves the queue), a run another session holds goes on."""
    gate = threading.Event()
    shared = scheduler.submit(Steps(10_000, 40, key="lesson run", gate=gate), "student 1")
    scheduler.submit(Steps(10_000, 40, key="lesson run", gate=gate), "student 2")
    own = scheduler.submit(Steps(10_000, 40, gate=gate), "student 1")
    queued = scheduler.submit(Steps(10_000, 40), "student 1")  # 40 + 40 + 40 do not fit in 100
    assert (shared.status, own.status, queued.status) == (RUNNING, RUNNING, QUEUED)

    class SessionState:  # stands in for a session's state, freed when Streamlit lets the session go
        pass

    state = SessionState()
    weakref.finalize(state, scheduler.left, "student 1")
    del state
    gc.collect()
    gate.set()
    assert own.wait(5) == CANCELLED and own.job.closed and own.job.done_steps < 10_000
    assert queued.status == CANCELLED and queued.job.done_steps == 0
    assert shared.status == RUNNING and shared.holders == {"student 2"}
    scheduler.left("student 2")
    assert shared.wait(5) == CANCELLED


def test_a_shared_job_runs_once_and_stops_only_when_the_last_session_lets_go(scheduler):
    gate = threading.Event()
    first = scheduler.submit(Steps(30, 10, key="reverse-16", gate=gate), "student 1")
    second = scheduler.submit(Steps(30, 10, key="reverse-16", gate=gate), "student 2")
    assert second is first
    first.release("student 1")
    gate.set()
    assert second.wait(5) == DONE and second.result() == 30  # student 2 still watched it: it ran on
    late = scheduler.submit(Steps(30, 10, key="reverse-16"), "student 3")
    assert late is first and late.done  # a finished result is served at once


def test_a_crash_fails_only_its_job_and_frees_its_share(scheduler):
    bad = scheduler.submit(Steps(5, 80, fail_at=2), "student 1")
    waiting = scheduler.submit(Steps(2, 50), "student 2")
    assert bad.wait(5) == FAILED and "RuntimeError: boom" in bad.error
    assert waiting.wait(5) == DONE
    again = scheduler.submit(Steps(5, 80, key=None), "student 1")  # a failed job is not a result to share
    assert again is not bad


def test_concurrent_jobs_progress_at_similar_rates():
    s = Scheduler(memory_budget_bytes=1e9, workers=1, slice_s=0.01)
    long_job = s.submit(Steps(10_000, 1), "a student with 20,000 steps")
    short = [s.submit(Steps(20, 1), f"student {i}") for i in range(5)]
    for h in short:
        assert h.wait(10) == DONE
    assert long_job.active and long_job.job.done_steps < 200  # round-robin: it did not starve the others
    long_job.release("a student with 20,000 steps")
    s.shutdown()


def test_function_job_and_result_store_bound():
    s = Scheduler(memory_budget_bytes=1e9, workers=1, keep_results=2)
    handles = [s.submit(FunctionJob(lambda i=i: i * i, key=("square", i)), "x") for i in range(4)]
    assert [h.wait(5) for h in handles] == [DONE] * 4 and [h.result() for h in handles] == [0, 1, 4, 9]
    assert s.submit(FunctionJob(lambda: -1, key=("square", 3)), "y").result() == 9  # kept
    evicted = s.submit(FunctionJob(lambda: -1, key=("square", 0)), "y")
    assert evicted.wait(5) == DONE and evicted.result() == -1  # evicted: computed again
    s.shutdown()


def test_a_small_job_passes_a_big_one_waiting_for_room_but_big_ones_keep_their_order(scheduler):
    gate = threading.Event()
    running = scheduler.submit(Steps(2, 60, gate=gate), "student 1")
    big = scheduler.submit(Steps(1, 50), "student 2")  # 60 + 50 > 100: waits
    bigger = scheduler.submit(Steps(1, 45), "student 3")  # would fit now (60 + 45 > 100: no) -- waits behind
    small = scheduler.submit(Steps(1, 1), "student 4")  # 1% of the budget: runs at once
    assert big.status == QUEUED and bigger.status == QUEUED and bigger.place() == 2
    assert small.wait(5) == DONE
    gate.set()
    assert big.wait(5) == DONE and bigger.wait(5) == DONE
