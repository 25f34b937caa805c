"""Measured cost of attention: wall time and peak memory of real forward (and backward) passes.

- Time: the median of ``repeats`` timed calls after one warm-up call (``time.perf_counter``).
- Peak memory: measured, not computed. On the CPU, from torch's profiler memory events
  (``profile_memory=True``): every allocation and free the call makes, replayed in time order; the
  peak is the highest running total above what was allocated before the call (inputs excluded).
  On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
- Every attention kind is measured on the path the kind declares (``AttentionKind.measured_call``:
  explicit softmax forms its ``T x T`` matrix, the others run their fast path), and every reference
  kernel beside them (``sdpa``, torch's fused ``scaled_dot_product_attention``): the names come from
  the registries, so a new kind is measured without a change here.
- Threads: ``sweep`` uses the calling process's torch thread count and never changes it. The app
  runs a sweep in a child process (``explorer.child``) with one thread, as the server runs every
  computation; the CLI sets its own process's count.

Before each point the sweep predicts the point's time (from the kind's previous point, scaled by
the theory FLOP ratio) and memory (theory bytes); points over the user's budget are skipped with
a reason rather than run into a freeze or an out-of-memory crash.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .attention import ATTENTION, REFERENCES
from .child import ChildWorker
from .config import ModelConfig
from .jobs import FunctionJob, Job

PASSES = ("forward", "forward+backward")
NOISY = 1.5  # a point whose slowest call took over 1.5x its fastest is measured again (up to twice more)


def all_kinds() -> tuple[str, ...]:
    """Every attention kind, then every reference kernel: what a sweep can measure."""
    return tuple(ATTENTION.names()) + tuple(REFERENCES.names())


def entry(name: str):
    """The registry entry of a measured name: an ``AttentionKind`` or a ``Reference``."""
    if name in REFERENCES:
        return REFERENCES[name]
    return ATTENTION[name]


@dataclass(frozen=True)
class SweepSettings:
    kinds: tuple[str, ...] = field(default_factory=all_kinds)  # attention kinds and reference kernels to measure
    min_n: int = 128  # shortest sequence
    max_n: int = 16384  # longest sequence (powers of two in between)
    n_embd: int = 64  # total width d (all heads together)
    n_head: int = 4  # heads
    window: int = 128  # window (sliding), smallest window (dynamic), block size (block_sparse)
    n_global: int = 1  # block_sparse global tokens
    n_strided: int = 2  # block_sparse strided hops
    pass_: str = "forward"  # "forward" or "forward+backward"
    repeats: int = 3  # timed calls per point (after one warm-up)
    time_budget_s: float = 15.0  # skip a point predicted to take longer than this (all its calls)
    memory_budget_bytes: float = 3e9  # skip a point predicted to need more memory than this

    def lengths(self) -> list[int]:
        n, out = self.min_n, []
        while n <= self.max_n:
            out.append(n)
            n *= 2
        return out

    def config(self, kind: str, n: int) -> ModelConfig:
        """The config of one point; the model's context is the measured length ``n``."""
        attention = REFERENCES[kind].same_as if kind in REFERENCES else kind
        return ModelConfig(n_embd=self.n_embd, n_head=self.n_head, block_size=max(n, 2), window=self.window,
                           n_global=self.n_global, n_strided=self.n_strided, attention=attention, encoding="none")

    def validate(self) -> None:
        bad = [k for k in self.kinds if k not in all_kinds()]
        if bad:
            raise ValueError(f"kinds {bad}: choose from {', '.join(all_kinds())}")
        if self.pass_ not in PASSES:
            raise ValueError(f"pass = {self.pass_!r}: choose one of {', '.join(PASSES)}")
        if not 2 <= self.min_n <= self.max_n <= 65536:
            raise ValueError(f"lengths {self.min_n}-{self.max_n}: need 2 <= min_n <= max_n <= 65536")
        if not 1 <= self.repeats <= 50:
            raise ValueError(f"repeats = {self.repeats}: allowed range is 1 to 50")
        self.config("softmax", self.min_n)  # width/heads/window checks, with the config's messages


@dataclass
class Row:
    kind: str
    n: int
    ms: float  # median wall time of one call
    peak_bytes: int  # measured peak memory of one call above its inputs
    pass_: str
    ms_min: float = 0.0  # the fastest timed call
    ms_max: float = 0.0  # the slowest timed call
    calls: int = 0  # timed calls behind the median (more where the first ones disagreed)

    @property
    def noisy(self) -> bool:
        """The timed calls disagree by more than half the fastest: the spread the page shows."""
        return self.ms_max > NOISY * self.ms_min

    def to_json(self) -> dict:
        d = asdict(self)
        d["pass"] = d.pop("pass_")
        return d


@dataclass
class Skip:
    kind: str
    n: int
    reason: str


@dataclass
class SweepResult:
    settings: SweepSettings
    device: str
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    seconds: float = 0.0
    sdpa_causal: Optional[dict] = None  # causal_skip_ratio, measured when sdpa is in the sweep

    def series(self, kind: str, what: str = "ms") -> tuple[list[int], list[float]]:
        pts = sorted((r.n, getattr(r, what)) for r in self.rows if r.kind == kind)
        return [p[0] for p in pts], [p[1] for p in pts]

    def timing(self, kind: str) -> tuple[list[int], list[float], tuple[list[float], list[float]]]:
        """``(ns, median ms, (fastest, slowest))`` of a kind: the whiskers of the time plot."""
        rows = sorted((r for r in self.rows if r.kind == kind), key=lambda r: r.n)
        return ([r.n for r in rows], [r.ms for r in rows], ([_spread(r)[0] for r in rows], [_spread(r)[1] for r in rows]))

    def to_json(self) -> dict:
        return {"device": self.device, "settings": {**asdict(self.settings), "kinds": list(self.settings.kinds)},
                "results": [r.to_json() for r in self.rows],
                "skipped": [asdict(s) for s in self.skipped], "seconds": round(self.seconds, 2),
                "sdpa_causal": self.sdpa_causal}


def theory_curves(s: SweepSettings) -> tuple[dict, dict]:
    """``({kind: (ns, flops)}, {kind: (ns, score bytes)})`` from the kinds' cost formulas; a
    reference kernel has the FLOPs of the kind it computes and stores no score matrix, so it has no
    memory curve."""
    ns = s.lengths()
    flops = {k: (ns, [entry(k).flops(s.config(k, n), n) for n in ns]) for k in s.kinds}
    memory = {k: (ns, [ATTENTION[k].score_bytes(s.config(k, n), n) for n in ns]) for k in s.kinds if k in ATTENTION}
    return flops, memory


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def attention_call(kind: str, config: ModelConfig) -> Callable:
    """The function measured for ``kind``: the path its registry entry declares."""
    return entry(kind).measured_call(config)


def _inputs(n: int, s: SweepSettings, device: str, grad: bool):
    gen = torch.Generator(device="cpu").manual_seed(n)
    shape = (1, s.n_head, n, s.n_embd // s.n_head)
    return [torch.randn(shape, generator=gen).to(device).requires_grad_(grad) for _ in range(3)]


def _run(call, q, k, v, backward: bool):
    if backward:
        call(q, k, v).sum().backward()
        for t in (q, k, v):
            t.grad = None
    else:
        with torch.no_grad():
            call(q, k, v)


def peak_memory(fn: Callable[[], None], device: str = "cpu") -> int:
    """Peak bytes allocated while ``fn`` runs, above what was allocated before it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    # autograd's profiler, which torch.profiler.profile wraps: the wrapper's first use imports
    # torch._inductor (0.9 s of a fresh process, the first point of every sweep) for CUDA graphs
    from torch.autograd.profiler import profile

    with profile(use_cpu=True, profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return int(peak)


def measure_point(kind: str, n: int, s: SweepSettings, device: str = "cpu") -> Row:
    """Peak memory (one call, doubling as the warm-up), then ``repeats`` timed calls; when their
    spread is wide (another session, the OS) another round of ``repeats``, at most twice more."""
    config = s.config(kind, n)
    call = attention_call(kind, config)
    backward = s.pass_ == "forward+backward"
    q, k, v = _inputs(n, s, device, backward)
    peak = peak_memory(lambda: _run(call, q, k, v, backward), device)
    times: list[float] = []
    for _ in range(3):
        for _ in range(s.repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            _run(call, q, k, v, backward)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000)
        if max(times) <= NOISY * min(times) or sum(times) / 1000 > s.time_budget_s / 3:
            break
    return Row(kind, n, statistics.median(times), peak, s.pass_, min(times), max(times), len(times))


def causal_skip_ratio(n: int = 4096, n_embd: int = 64, n_head: int = 4, repeats: int = 5) -> dict:
    """Time of torch's fused attention with the causal mask over the time without a mask, at
    length ``n``: near 1 if it computed every score, near 0.5 if it skips the key tiles above the
    diagonal (as PyTorch's CPU flash kernel does)."""
    s = SweepSettings(n_embd=n_embd, n_head=n_head)
    q, k, v = _inputs(n, s, "cpu", False)
    out = {}
    for name, causal in (("causal", True), ("full", False)):
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times) * 1000
    return {"n": n, "causal_ms": out["causal"], "full_ms": out["full"], "ratio": out["causal"] / out["full"]}


def human_bytes(b: float) -> str:
    return f"{b / 1e9:.1f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"


def predicted_bytes(kind: str, n: int, s: SweepSettings) -> float:
    """An upper bound on a point's peak memory, for skipping and for the scheduler's admission: the
    kind's score numbers times the score-sized tensors its kernel keeps at once (scores, mask,
    softmax, the pieces it concatenates; more with backward: the kind's ``score_copies``), plus q, k,
    v and the output (and their gradients and the fused kernel's tiles with backward). A reference
    kernel stores no scores. A test checks it against measured peaks for every kind."""
    backward = s.pass_ == "forward+backward"
    scores = ATTENTION[kind].score_bytes(s.config(kind, n), n) * ATTENTION[kind].score_copies[backward] \
        if kind in ATTENTION else 0.0
    return scores + (24 if backward else 8) * n * s.n_embd * 4


class Sweep:
    """A sweep in progress: which point to measure next, and which to skip (with each one's own
    reason) so as to stay inside the memory and time budgets. ``sweep`` runs one in this process;
    the app's ``SweepJob`` measures its points in a child process."""

    def __init__(self, s: SweepSettings, device: str = "cpu", server_budget: Optional[float] = None):
        s.validate()
        self.s = s
        self.result = SweepResult(s, device_name(device))
        self.points = [(kind, n) for kind in s.kinds for n in s.lengths()]
        self.i = 0
        self.last: dict[str, Row] = {}
        self.budget = min(s.memory_budget_bytes, server_budget or float("inf"))
        self.budget_name = "your" if self.budget == s.memory_budget_bytes else "this server's"
        self._t0 = time.perf_counter()

    def _skip_reason(self, kind: str, n: int) -> Optional[str]:
        s = self.s
        mem = predicted_bytes(kind, n, s)
        if mem > self.budget:
            return f"needs up to {human_bytes(mem)}, over {self.budget_name} {human_bytes(self.budget)} budget"
        prev = self.last.get(kind)
        if prev is not None:
            ratio = entry(kind).flops(s.config(kind, n), n) / entry(kind).flops(s.config(kind, prev.n), prev.n)
            est = prev.ms / 1000 * max(ratio, 1.0) * (s.repeats + 1)
            if est > s.time_budget_s:
                return f"would take about {est:.0f} s, over the {s.time_budget_s:.0f} s budget per point"
        skipped = [sk for sk in self.result.skipped if sk.kind == kind]
        if skipped:
            return f"a shorter length was already skipped ({skipped[0].n:,}: {skipped[0].reason})"
        return None

    def next(self) -> Optional[tuple[str, int]]:
        """The next point to measure (skipping, with reasons, those over a budget), or None at the end."""
        while self.i < len(self.points):
            kind, n = self.points[self.i]
            self.i += 1
            reason = self._skip_reason(kind, n)
            if reason is None:
                return kind, n
            self.result.skipped.append(Skip(kind, n, reason))
        self.result.seconds = time.perf_counter() - self._t0
        return None

    def record(self, row: Row) -> None:
        self.result.rows.append(row)
        self.last[row.kind] = row

    def peak_bytes(self) -> float:
        """The largest predicted point inside the budget: what running this sweep may need at once."""
        sizes = [predicted_bytes(k, n, self.s) for k, n in self.points]
        return max([b for b in sizes if b <= self.budget] or [0.0])

    def fraction(self) -> float:
        return self.i / max(1, len(self.points))

    def remaining_s(self) -> float:
        """A rough estimate: the points left, each like the last one measured of its kind."""
        left = self.points[self.i:]
        return sum((self.last[k].ms / 1000 * (self.s.repeats + 1)) if k in self.last else 0.5 for k, n in left)


def sweep(s: SweepSettings, device: str = "cpu",
          progress: Optional[Callable[[float, str], None]] = None) -> SweepResult:
    """Measure every kind at every length in this process, skipping what would break the budgets."""
    plan = Sweep(s, device)
    while (point := plan.next()) is not None:
        if progress:
            progress(plan.fraction(), f"{point[0]}, N = {point[1]:,}")
        plan.record(measure_point(*point, s, device))
    if progress:
        progress(1.0, "done")
    return plan.result


CALIBRATION_N = 1024  # the length a sweep's estimate is measured at


def calibrate(s: SweepSettings) -> dict:
    """Seconds of one call of each kind at N = 1,024 with these settings, measured now in this
    process (one thread, as the sweep's child): the ground of ``estimate_s``."""
    probe = SweepSettings(kinds=s.kinds, n_embd=s.n_embd, n_head=s.n_head, window=s.window, pass_=s.pass_, repeats=1,
                          min_n=CALIBRATION_N, max_n=CALIBRATION_N)
    out = {}
    for kind in s.kinds:
        config = probe.config(kind, CALIBRATION_N)
        call = attention_call(kind, config)
        q, k, v = _inputs(CALIBRATION_N, probe, "cpu", s.pass_ == "forward+backward")
        _run(call, q, k, v, s.pass_ == "forward+backward")
        t0 = time.perf_counter()
        _run(call, q, k, v, s.pass_ == "forward+backward")
        out[kind] = time.perf_counter() - t0
    return out


def estimate_s(s: SweepSettings, calibration: dict, server_budget: Optional[float] = None) -> float:
    """How long the sweep will take: every point it will not skip for memory, its calls (the
    profiled one, the timed ones) scaled from the calibration by the kind's FLOPs, a second for the
    measuring process to start; points past the time budget are cut as the sweep cuts them."""
    budget = min(s.memory_budget_bytes, server_budget or float("inf"))
    total = 1.0
    for kind in s.kinds:
        base = entry(kind).flops(s.config(kind, CALIBRATION_N), CALIBRATION_N)
        for n in s.lengths():
            if predicted_bytes(kind, n, s) > budget:
                break
            point = calibration[kind] * entry(kind).flops(s.config(kind, n), n) / base * (s.repeats + 1)
            if point > s.time_budget_s:
                break
            total += point + calibration[kind]
    return total


def calibration_job(s: SweepSettings) -> "FunctionJob":
    probe = dict(n_embd=s.n_embd, n_head=s.n_head, window=s.window, pass_=s.pass_, kinds=s.kinds)
    return FunctionJob(lambda: calibrate(s), key=("sweep-speed", tuple(sorted(probe.items()))),
                       peak_bytes=max(predicted_bytes(k, CALIBRATION_N, s) for k in s.kinds),
                       title="measuring this server's speed")


CHILD_BYTES = 0.6e9  # a measuring child process: Python and torch before it measures anything


class SweepJob(Job):
    """A sweep as a scheduler job: one point per slice, measured in a child process with one torch
    thread (the server's setting), so that one session's sweep never changes the server's threads
    and a point that runs out of memory ends the child, not the server. Its key is the settings:
    the same sweep runs once per server and everyone who asks shares the result."""

    def __init__(self, s: SweepSettings, server_budget: Optional[float] = None):
        self.key = ("sweep", s)
        self.title = "measuring"
        self.plan = Sweep(s, "cpu", None if server_budget is None else server_budget - CHILD_BYTES)
        self.peak_bytes = self.plan.peak_bytes() + CHILD_BYTES
        self.worker: Optional[ChildWorker] = None
        self._now = "starting"

    def step(self, slice_s: float) -> bool:
        if self.worker is None:
            self.worker = ChildWorker(threads=1)
        point = self.plan.next()
        if point is None:
            s = self.plan.s
            if "sdpa" in s.kinds and self.plan.result.sdpa_causal is None:
                self._now = "sdpa with and without its causal mask"
                n = min(4096, s.max_n)
                self.plan.result.sdpa_causal = self.worker.call("explorer.measure:causal_skip_ratio",
                                                                (n, s.n_embd, s.n_head))
            return True
        self._now = f"{point[0]}, N = {point[1]:,}"
        self.plan.record(self.worker.call("explorer.measure:measure_point", (point[0], point[1], self.plan.s)))
        return False

    def result(self) -> SweepResult:
        return self.plan.result

    def progress(self) -> tuple[float, str]:
        return self.plan.fraction(), self._now

    def remaining_s(self) -> float:
        return self.plan.remaining_s()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def loglog_slope(ns: list[int], ys: list[float], lo: int = 1024, hi: int = 1 << 30) -> Optional[float]:
    """Least-squares slope of log(y) against log(N) over lo <= N <= hi (None under 2 points)."""
    pts = [(n, y) for n, y in zip(ns, ys) if lo <= n <= hi and y > 0]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def _spread(row: Row) -> tuple[float, float]:
    return (row.ms_min or row.ms, row.ms_max or row.ms)


def compare(a: Row, b: Row) -> int:
    """-1 if ``a`` is clearly faster than ``b`` (its slowest call beats b's fastest), 1 if clearly
    slower, 0 when their spreads overlap and the measurement cannot tell."""
    (a_lo, a_hi), (b_lo, b_hi) = _spread(a), _spread(b)
    return -1 if a_hi < b_lo else 1 if a_lo > b_hi else 0


def crossover(result: SweepResult, kind: str, reference: str = "softmax") -> Optional[float]:
    """The length from which ``kind`` is clearly faster than ``reference`` at every longer measured
    length (spreads that overlap do not count as faster): log-log interpolated between the last
    length where it was clearly slower and the first of that run; the first length itself when the
    point before could not tell, or when it is faster throughout; None if never."""
    a = {r.n: r for r in result.rows if r.kind == kind}
    b = {r.n: r for r in result.rows if r.kind == reference}
    common = sorted(set(a) & set(b))
    verdict = [compare(a[n], b[n]) for n in common]
    start = len(common)
    while start > 0 and verdict[start - 1] == -1:
        start -= 1
    if start == len(common):
        return None
    if start == 0 or verdict[start - 1] == 0:
        return float(common[start])
    lo, hi = common[start - 1], common[start]
    d0, d1 = math.log(a[lo].ms / b[lo].ms), math.log(a[hi].ms / b[hi].ms)
    frac = d0 / (d0 - d1)
    return float(math.exp(math.log(lo) + frac * (math.log(hi) - math.log(lo))))


def summary(result: SweepResult, lo: int = 1024) -> list[dict]:
    """Per kind: fitted time and memory slopes from ``lo`` up beside the theory's slope over the same
    lengths, the crossover with explicit softmax, and how many points were noisy."""
    out = []
    flops, _ = theory_curves(result.settings)
    for kind in result.settings.kinds:
        ns, ms = result.series(kind)
        _, mem = result.series(kind, "peak_bytes")
        top = max(ns) if ns else lo
        out.append({
            "kind": kind, "points": len(ns),
            "time_slope": loglog_slope(ns, ms, lo), "memory_slope": loglog_slope(ns, mem, lo),
            "theory_slope": loglog_slope(*flops[kind], lo, top),
            "crossover_vs_softmax": None if kind == "softmax" or "softmax" not in result.settings.kinds
            else crossover(result, kind),
            "noisy_points": sum(r.noisy for r in result.rows if r.kind == kind),
        })
    return out
