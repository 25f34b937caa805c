"""Server-wide admission and fair sharing for heavy work (training runs, sweeps, experiments).

Every heavy computation of every session is a ``Job`` handed to one ``Scheduler`` per server:

- **Memory.** A job states its predicted peak memory. The scheduler admits jobs in arrival order
  while the sum of the running jobs' predictions stays within the server-wide budget (a setting;
  by default a safe share of the machine's memory, read from the operating system). A job that
  does not fit waits in the queue, and its handle tells its place and an estimate; a job that
  could never fit, even alone, is refused with the reason.
- **Cores.** A pool of worker threads, one per core, runs the admitted jobs in short slices,
  round-robin, so concurrent runs progress at similar rates: one student's 20,000-step run
  cannot starve thirty 300-step runs. Torch runs one thread per computation (app.py), so a slice
  holds one core.
- **Sharing.** A job has a key: its full description (settings, seed, steps; never anything a
  student typed). Submitting a key that is queued, running or finished returns the same handle,
  so thirty students opening the same lesson cost one training, and the second sees the finished
  result at once. Finished results are kept, read-only, in a bounded store.
- **Stop.** A handle is held by the sessions that asked for it; ``release`` by the last one
  cancels the job (a queued job leaves the queue at once, a running one at the end of its slice).
  A session that is gone for good (``left``) releases all it held.
- **Shipped runs.** A job whose class is ``shippable`` (seeded training: the same result on any
  machine with this torch) is first looked up on the scheduler's shelf (``explorer.shelf``: the
  lessons' runs, made when the app was built); found there, it is done at once.
- **Failures.** An exception inside a job fails that job only, frees its share, and is reported
  on its handle.

Nothing here imports streamlit: the app creates one scheduler per server process
(``st.cache_resource``), tests create their own.
"""
from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Optional

QUEUED, RUNNING, DONE, FAILED, CANCELLED, REFUSED = "queued", "running", "done", "failed", "cancelled", "refused"
ACTIVE = (QUEUED, RUNNING)


def machine_memory_bytes() -> int:
    """Total memory of this machine, from the operating system."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


SMALL = 0.02  # a job needing under this share of the budget may start ahead of bigger ones waiting for room
DEFAULT_SHARE = 0.5  # of the machine's memory, for all heavy jobs together (the rest: the server, sessions, the OS)


def default_workers() -> int:
    """Worker threads: ``TE_WORKERS`` if set (several app processes on one machine share its cores),
    else one per core this process may use."""
    env = os.environ.get("TE_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_budget() -> int:
    """The server-wide memory budget: ``TE_MEMORY_BUDGET_GB`` if set, else half the machine's memory."""
    env = os.environ.get("TE_MEMORY_BUDGET_GB")
    if env:
        return int(float(env) * 1e9)
    return int(machine_memory_bytes() * DEFAULT_SHARE)


class Job:
    """A unit of heavy work. Subclasses set ``key``, ``title`` and ``peak_bytes`` and implement
    ``step``; the scheduler calls ``step`` repeatedly, each time for about ``slice_s`` seconds."""

    key: Hashable = None  # the full description of the work: equal keys are the same work
    title: str = "job"
    peak_bytes: float = 0.0  # predicted peak memory while it runs
    shippable: bool = False  # its result depends only on its key (seeded training), never on this machine

    def restore(self, result: Any) -> None:
        """Take a finished result made earlier by the same job (the shelf's): ``result()`` and
        ``live()`` return it from now on."""
        self._live = result

    def live(self) -> Any:
        return getattr(self, "_live", None)

    def step(self, slice_s: float) -> bool:
        """Do about ``slice_s`` seconds of work; return True when finished."""
        raise NotImplementedError

    def result(self) -> Any:
        return None

    def progress(self) -> tuple[float, str]:
        """``(fraction done, what is happening)``."""
        return 0.0, ""

    def remaining_s(self) -> Optional[float]:
        """Estimated seconds of work left when running alone, if known."""
        return None

    def close(self) -> None:
        """Free what the job holds (a child process, say) once it ends, however it ends."""


@dataclass
class Handle:
    """What a session holds of a job: its status, place in the queue, progress, result or error."""
    job: Job
    id: int
    status: str = QUEUED
    error: str = ""  # why it failed or was refused
    holders: set = field(default_factory=set)  # the sessions that asked for it
    submitted: float = field(default_factory=time.monotonic)
    started: Optional[float] = None
    finished: Optional[float] = None
    cpu_s: float = 0.0  # time spent in its slices
    shipped: bool = False  # its result came from the shelf (made when the app was built), not from a run here
    _scheduler: Any = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def done(self) -> bool:
        return self.status == DONE

    def result(self) -> Any:
        return self.job.result() if self.status == DONE else None

    def progress(self) -> tuple[float, str]:
        return self.job.progress()

    def place(self) -> Optional[int]:
        """1 for the next job to start, None when not queued."""
        return self._scheduler.place(self) if self.status == QUEUED else None

    def wait_estimate_s(self) -> Optional[float]:
        return self._scheduler.wait_estimate_s(self) if self.status == QUEUED else None

    def release(self, holder: Hashable = None) -> None:
        """``holder`` no longer wants this job (the last one's release cancels it)."""
        self._scheduler.release(self, holder)

    def wait(self, timeout: Optional[float] = None, poll_s: float = 0.05) -> str:
        """Block until the job is no longer queued or running (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active and (deadline is None or time.monotonic() < deadline):
            time.sleep(poll_s)
        return self.status


class Scheduler:
    def __init__(self, memory_budget_bytes: Optional[float] = None, workers: Optional[int] = None,
                 slice_s: float = 0.15, keep_results: int = 64, shelf=None):
        self.budget = float(default_budget() if memory_budget_bytes is None else memory_budget_bytes)
        self.workers = workers or default_workers()
        self.slice_s = slice_s
        self.keep_results = keep_results
        self.shelf = shelf  # finished runs shipped with the app (explorer.shelf.Shelf), or None
        self._lock = threading.Condition()
        self._queue: deque[Handle] = deque()  # waiting for memory, in arrival order
        self._ready: deque[Handle] = deque()  # admitted, waiting for a core (round-robin)
        self._running: dict[int, Handle] = {}  # admitted and not finished, by id
        self._by_key: OrderedDict[Hashable, Handle] = OrderedDict()  # every live or kept handle
        self._cancel: set[int] = set()
        self._left: deque[Hashable] = deque()  # holders gone for good, their jobs not yet released
        self._next_id = 1
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self.peak_reserved = 0.0  # the most memory ever reserved at once (for the load report)

    # ------------------------------------------------------------------------------------------ public
    def submit(self, job: Job, holder: Hashable = None) -> Handle:
        """Run ``job`` (or join the same work already queued, running or finished, or take its
        result from the shelf)."""
        shipped = None
        if self.shelf is not None and job.shippable and job.key is not None and job.key not in self._by_key:
            shipped = self.shelf.get(job.key)  # read from disk outside the lock
        with self._lock:
            self._release_left()
            known = self._by_key.get(job.key) if job.key is not None else None
            if known is not None and known.status in (QUEUED, RUNNING, DONE):
                known.holders.add(holder)
                self._by_key.move_to_end(job.key)
                return known
            handle = Handle(job, self._next_id, holders={holder}, _scheduler=self)
            self._next_id += 1
            if job.key is not None:
                self._by_key[job.key] = handle
            if shipped is not None:
                job.restore(shipped)
                handle.started, handle.shipped = time.monotonic(), True
                self._end(handle, DONE)
                return handle
            if job.peak_bytes > self.budget:
                handle.status, handle.finished = REFUSED, time.monotonic()
                handle.error = (f"it would need about {job.peak_bytes / 1e9:.1f} GB at its peak, more than this "
                                f"server's budget of {self.budget / 1e9:.1f} GB for all heavy work together, so "
                                "it can never run here; choose smaller settings")
                job.close()
                return handle
            self._queue.append(handle)
            self._admit()
            self._ensure_workers()
            return handle

    def release(self, handle: Handle, holder: Hashable = None) -> None:
        """``holder`` no longer wants the job; the last holder's release cancels it if still active."""
        with self._lock:
            self._release(handle, holder)

    def left(self, holder: Hashable) -> None:
        """``holder`` (a session) is gone for good: it releases every job it holds, as if it had pressed
        Stop on each (a run another session holds goes on). Safe from any thread, and from a garbage
        collector's finalizer, which may run inside this scheduler's own code: it only notes the
        holder, and the scheduler releases its jobs on its next turn (within half a second)."""
        self._left.append(holder)  # deque.append is atomic: no lock is taken here

    def snapshot(self) -> dict:
        """Queue and load, for a page's status line and the load report."""
        with self._lock:
            return {"queued": len(self._queue), "running": len(self._running), "workers": self.workers,
                    "reserved_bytes": sum(h.job.peak_bytes for h in self._running.values()),
                    "budget_bytes": self.budget, "peak_reserved_bytes": self.peak_reserved}

    def watchers(self) -> int:
        """Sessions holding a queued or running job: how many live views the server is redrawing."""
        with self._lock:
            return sum(len(h.holders) for h in list(self._queue) + list(self._running.values()))

    def place(self, handle: Handle) -> Optional[int]:
        with self._lock:
            for i, h in enumerate(self._queue):
                if h is handle:
                    return i + 1
        return None

    def wait_estimate_s(self, handle: Handle) -> Optional[float]:
        """Seconds until a queued job can start: the memory it waits for is freed as the running
        jobs (sharing the cores) and the jobs queued ahead of it finish."""
        with self._lock:
            ahead = []
            for h in self._queue:
                if h is handle:
                    break
                ahead.append(h)
            work = [h.job.remaining_s() for h in list(self._running.values()) + ahead]
            known = [w for w in work if w is not None]
            if not known:
                return None
            return sum(known) / self.workers

    def shutdown(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for t in self._threads:
            t.join(5)

    # ------------------------------------------------------------------------------------------ inside
    def _release(self, handle: Handle, holder: Hashable) -> None:
        """(lock held) ``holder`` lets go of ``handle``: the last one cancels it."""
        handle.holders.discard(holder)
        if handle.holders or not handle.active:
            return
        if handle.status == QUEUED:
            self._queue.remove(handle)
            self._end(handle, CANCELLED)
            self._admit()
        else:
            self._cancel.add(handle.id)

    def _release_left(self) -> None:
        """(lock held) Release the jobs of the holders that ``left``."""
        while self._left:
            holder = self._left.popleft()
            for handle in list(self._queue) + list(self._running.values()):
                if holder in handle.holders:
                    self._release(handle, holder)

    def _ensure_workers(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.workers:
            t = threading.Thread(target=self._work, name=f"te-worker-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    def _admit(self) -> None:
        """Admit queued jobs in arrival order while they fit in the budget; then let small jobs that
        fit (a speed measurement, a tiny run: under ``SMALL`` of the budget) pass the ones waiting
        for room, which they barely delay (lock held)."""
        reserved = sum(h.job.peak_bytes for h in self._running.values())
        for handle in list(self._queue):
            head = handle is self._queue[0]
            if reserved + handle.job.peak_bytes <= self.budget and (head or handle.job.peak_bytes <= SMALL * self.budget):
                self._queue.remove(handle)
                handle.status, handle.started = RUNNING, time.monotonic()
                self._running[handle.id] = handle
                self._ready.append(handle)
                reserved += handle.job.peak_bytes
        self.peak_reserved = max(self.peak_reserved, reserved)
        self._lock.notify_all()

    def _end(self, handle: Handle, status: str, error: str = "") -> None:
        """Finish a job (lock held): free its share, keep a finished result, drop the rest."""
        handle.status, handle.error, handle.finished = status, error, time.monotonic()
        self._running.pop(handle.id, None)
        self._cancel.discard(handle.id)
        try:
            handle.job.close()
        except Exception:  # closing must not take the scheduler down
            pass
        if status != DONE and handle.job.key is not None and self._by_key.get(handle.job.key) is handle:
            del self._by_key[handle.job.key]  # a failed or cancelled job is not a result to share
        done = [k for k, h in self._by_key.items() if h.status == DONE]
        for k in done[: max(0, len(done) - self.keep_results)]:
            del self._by_key[k]

    def _work(self) -> None:
        while True:
            with self._lock:
                self._release_left()
                while not self._ready and not self._stopping:
                    self._lock.wait(0.5)
                    self._release_left()
                if self._stopping:
                    return
                handle = self._ready.popleft()
                if handle.id in self._cancel:
                    self._end(handle, CANCELLED)
                    self._admit()
                    continue
            t0 = time.perf_counter()
            try:
                finished = handle.job.step(self.slice_s)
                error = ""
            except Exception as e:  # a crash fails this job only
                finished, error = True, f"{type(e).__name__}: {e}"
            with self._lock:
                handle.cpu_s += time.perf_counter() - t0
                if error:
                    self._end(handle, FAILED, error)
                    self._admit()
                elif finished:
                    self._end(handle, DONE)
                    self._admit()
                elif handle.id in self._cancel:
                    self._end(handle, CANCELLED)
                    self._admit()
                else:
                    self._ready.append(handle)  # back of the line: round-robin
                    self._lock.notify_all()


def run_to_end(job: Job, slice_s: float = 1.0):
    """Step ``job`` in this thread, ``slice_s`` at a time, until it is done; its result (scripts, tests and
    benches run a page's job this way, without the scheduler)."""
    while not job.step(slice_s):
        pass
    return job.result()


class FunctionJob(Job):
    """A job that is one call (a test helper, and for small work): ``fn()`` runs in one slice."""

    def __init__(self, fn: Callable[[], Any], key: Hashable = None, peak_bytes: float = 0.0, title: str = "job"):
        self.fn, self.key, self.peak_bytes, self.title = fn, key, peak_bytes, title
        self._result = None

    def step(self, slice_s: float) -> bool:
        self._result = self.fn()
        return True

    def restore(self, result) -> None:
        self._result = result

    def result(self):
        return self._result
