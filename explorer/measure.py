"""Measured cost of attention: wall time and peak memory of real forward (and backward) passes.

- Time: the median of ``repeats`` timed calls after one warm-up call (``time.perf_counter``).
- Peak memory: measured, not computed. On the CPU, from torch's profiler memory events
  (``profile_memory=True``): every allocation and free the call makes, replayed in time order; the
  peak is the highest running total above what was allocated before the call (inputs excluded).
  On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
- ``sdpa`` is torch's fused ``scaled_dot_product_attention(is_causal=True)``: the reference line
  for full attention. ``softmax`` here is the explicit computation that forms the ``T x T`` matrix.

Before each point the sweep predicts the point's time (from the kind's previous point, scaled by
the theory FLOP ratio) and memory (theory bytes); points over the user's budget are skipped with
a reason rather than run into a freeze or an out-of-memory crash.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .attention import ATTENTION
from .config import ModelConfig
from .cost import attention_flops, attention_memory_bytes

KINDS = ("softmax", "sliding_window", "dynamic_window", "block_sparse", "linear", "sdpa")
PASSES = ("forward", "forward+backward")


@dataclass(frozen=True)
class SweepSettings:
    kinds: tuple[str, ...] = KINDS  # attention kinds to measure ("sdpa" = torch's fused kernel)
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
    threads: int = 0  # torch threads while measuring; 0 = every core

    def lengths(self) -> list[int]:
        n, out = self.min_n, []
        while n <= self.max_n:
            out.append(n)
            n *= 2
        return out

    def config(self, kind: str, n: int) -> ModelConfig:
        return ModelConfig(n_embd=self.n_embd, n_head=self.n_head, block_size=max(n, 2), window=self.window,
                           n_global=self.n_global, n_strided=self.n_strided,
                           attention="softmax" if kind == "sdpa" else kind, encoding="none")

    def validate(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"kinds {bad}: choose from {', '.join(KINDS)}")
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

    def series(self, kind: str, what: str = "ms") -> tuple[list[int], list[float]]:
        pts = sorted((r.n, getattr(r, what)) for r in self.rows if r.kind == kind)
        return [p[0] for p in pts], [p[1] for p in pts]

    def to_json(self) -> dict:
        return {"device": self.device, "settings": {**asdict(self.settings), "kinds": list(self.settings.kinds)},
                "results": [r.to_json() for r in self.rows],
                "skipped": [asdict(s) for s in self.skipped], "seconds": round(self.seconds, 2)}


def theory_curves(s: SweepSettings) -> tuple[dict, dict]:
    """``({kind: (ns, flops)}, {kind: (ns, score bytes)})`` from explorer.cost's formulas; sdpa has
    the FLOPs of softmax and stores no score matrix, so it has no memory curve."""
    ns = s.lengths()
    flops = {k: (ns, [attention_flops(s.config(k, n), n) for n in ns]) for k in s.kinds}
    memory = {k: (ns, [attention_memory_bytes(s.config(k, n), n) for n in ns]) for k in s.kinds if k != "sdpa"}
    return flops, memory


def device_name(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    import platform

    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def attention_call(kind: str, config: ModelConfig) -> Callable:
    """The function measured for ``kind``: explicit softmax forms its weights, the others run
    their fast path, ``sdpa`` is torch's fused kernel."""
    if kind == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    fn = ATTENTION[kind].fn
    need = kind == "softmax"
    return lambda q, k, v: fn(q, k, v, config, None, need).out


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
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return int(peak)


def measure_point(kind: str, n: int, s: SweepSettings, device: str = "cpu") -> Row:
    config = s.config(kind, n)
    call = attention_call(kind, config)
    backward = s.pass_ == "forward+backward"
    q, k, v = _inputs(n, s, device, backward)
    peak = peak_memory(lambda: _run(call, q, k, v, backward), device)  # doubles as the warm-up
    times = []
    for _ in range(s.repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _run(call, q, k, v, backward)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return Row(kind, n, statistics.median(times) * 1000, peak, s.pass_)


def predicted_bytes(kind: str, n: int, s: SweepSettings) -> float:
    """Theory bytes of a point: the score matrix and its softmax (x3 with backward), plus q/k/v."""
    base = attention_memory_bytes(s.config(kind, n), n) * (2 if kind != "sdpa" else 0)
    return base * (3 if s.pass_ == "forward+backward" else 1) + 8 * n * s.n_embd * 4


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n or max(1, os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sweep(s: SweepSettings, device: str = "cpu",
          progress: Optional[Callable[[float, str], None]] = None) -> SweepResult:
    """Measure every kind at every length, skipping what would break the budgets."""
    s.validate()
    t_start = time.perf_counter()
    with torch_threads(s.threads):
        result = SweepResult(s, device_name(device))
        points = [(kind, n) for kind in s.kinds for n in s.lengths()]
        stopped: dict[str, str] = {}
        last: dict[str, Row] = {}
        for i, (kind, n) in enumerate(points):
            if progress:
                progress(i / len(points), f"{kind}, N = {n:,}")
            if kind in stopped:
                result.skipped.append(Skip(kind, n, stopped[kind]))
                continue
            mem = predicted_bytes(kind, n, s)
            if mem > s.memory_budget_bytes:
                stopped[kind] = f"needs about {mem / 1e9:.1f} GB, over the {s.memory_budget_bytes / 1e9:.1f} GB budget"
                result.skipped.append(Skip(kind, n, stopped[kind]))
                continue
            if kind in last:
                prev = last[kind]
                ratio = attention_flops(s.config(kind, n), n) / attention_flops(s.config(kind, prev.n), prev.n)
                est = prev.ms / 1000 * max(ratio, 1.0) * (s.repeats + 1)
                if est > s.time_budget_s:
                    stopped[kind] = f"would take about {est:.0f} s, over the {s.time_budget_s:.0f} s budget per point"
                    result.skipped.append(Skip(kind, n, stopped[kind]))
                    continue
            row = measure_point(kind, n, s, device)
            result.rows.append(row)
            last[kind] = row
        if progress:
            progress(1.0, "done")
    result.seconds = time.perf_counter() - t_start
    return result


def loglog_slope(ns: list[int], ys: list[float], lo: int = 1024, hi: int = 1 << 30) -> Optional[float]:
    """Least-squares slope of log(y) against log(N) over lo <= N <= hi (None under 2 points)."""
    pts = [(n, y) for n, y in zip(ns, ys) if lo <= n <= hi and y > 0]
    if len(pts) < 2:
        return None
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def crossover(result: SweepResult, kind: str, reference: str = "softmax") -> Optional[float]:
    """The length where ``kind`` becomes faster than ``reference`` (log-log interpolation between
    measured lengths); the first length if it is faster throughout; None if never."""
    a = dict(zip(*result.series(kind)))
    b = dict(zip(*result.series(reference)))
    common = sorted(set(a) & set(b))
    prev = None
    for n in common:
        if a[n] < b[n]:
            if prev is None:
                return float(n)
            # interpolate the sign change of log(a/b) between prev and n
            d0, d1 = math.log(a[prev] / b[prev]), math.log(a[n] / b[n])
            frac = d0 / (d0 - d1)
            return float(math.exp(math.log(prev) + frac * (math.log(n) - math.log(prev))))
        prev = n
    return None


def summary(result: SweepResult, lo: int = 1024) -> list[dict]:
    """Per kind: fitted time and memory slopes from ``lo`` up, crossover with explicit softmax."""
    out = []
    for kind in result.settings.kinds:
        ns, ms = result.series(kind)
        _, mem = result.series(kind, "peak_bytes")
        out.append({
            "kind": kind, "points": len(ns),
            "time_slope": loglog_slope(ns, ms, lo), "memory_slope": loglog_slope(ns, mem, lo),
            "crossover_vs_softmax": None if kind == "softmax" else crossover(result, kind),
        })
    return out
