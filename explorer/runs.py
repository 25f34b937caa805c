"""A training run as a scheduler job, and the finished run it leaves behind.

``TrainJob`` trains a model in slices on the server's worker pool (``explorer.jobs``). After each
slice it publishes a ``TrainedRun``: a read-only view of the run so far (a copy of the weights,
the loss history, checkpoints to rewind to). Every session watching the run reads those views;
none of them touches the weights being trained. When the run ends, its last view is the result,
shared read-only by every session that asks for the same run (its key is the full run
description). A session that wants to change or continue a run works on its own copy.

A run can stop early once it has learned: the job checks held-out accuracy every
``check_every`` steps and stops when it has stayed at or above ``learned_accuracy`` for
``learned_checks`` checks in a row ("learned at step N", the first of those checks).

A run can also be measured as it trains: a ``Probe`` (``measure(model) -> dict``, every ``every``
steps, step 0 included) adds ``(step, figures)`` to the published run's ``probes`` (the job adds
``figures["train_seconds"]``, the run's training seconds then), so a page can draw any figure of the
model against training steps while the run goes on (the in-context page's per-head scores, say).
Probing takes wall time but none of the run's training seconds.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

import torch

from .jobs import Job
from .model import GPT
from .train import Trainer


@dataclass(frozen=True)
class StopRule:
    """When a run may stop before its last step: held-out accuracy at or above ``accuracy`` for
    ``checks`` checks in a row, one check every ``every`` steps."""
    accuracy: float = 0.99
    checks: int = 3
    every: int = 25


@dataclass(frozen=True)
class Probe:
    """Figures measured on the model every ``every`` steps while it trains (and at step 0)."""
    measure: Callable[[GPT], dict]  # model (in eval mode; do not train it) -> JSON-ready figures
    every: int = 25  # steps between measurements


@dataclass
class TrainedRun:
    """A run as far as it got: weights (a copy: never trained further), history, checkpoints."""
    model: GPT
    step: int  # steps trained
    total: int  # steps asked for
    history: list  # (step, loss, accuracy) of every training batch
    checkpoints: list  # (step, state_dict) to rewind to, oldest first, the last one included
    checks: list = field(default_factory=list)  # (step, held-out accuracy) of every stop-rule check
    learned_at: Optional[int] = None  # first step of the streak that stopped the run early
    seconds: float = 0.0  # wall time spent training
    finished: bool = False  # the run ended (all steps, or learned)
    probes: list = field(default_factory=list)  # (step, figures) of every probe measurement, oldest first

    def model_at(self, step: int) -> GPT:
        """The weights of the last checkpoint at or before ``step`` (a new module); the last weights
        for a run that kept no checkpoints."""
        if not self.checkpoints:
            return copy.deepcopy(self.model).eval()
        chosen = self.checkpoints[0]
        for ck in self.checkpoints:
            if ck[0] <= step:
                chosen = ck
        model = copy.deepcopy(self.model)
        model.load_state_dict(chosen[1])
        return model.eval()

    def nbytes(self) -> int:
        per = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        return per * (1 + len(self.checkpoints)) + 64 * len(self.history)


def state_copy(model: GPT) -> dict:
    """The weights, copied to the CPU (where every view of a run reads them)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def training_peak_bytes(config, batch_size: int, T: int) -> float:
    """Predicted peak memory of training ``config`` on batches of ``batch_size`` x ``T`` tokens:
    weights, gradients and two AdamW moments (16 bytes a parameter), the activations autograd keeps
    (about 24 numbers per token and width per layer, plus each kind's scores three times: scores,
    weights, their gradient), the logits three times, and 32 MB of slack for temporaries."""
    from .attention import ATTENTION

    C, L = config.n_embd, config.n_layer
    params = config.vocab_size * C + config.block_size * C + L * 12 * C * C + L * 13 * C
    scores = ATTENTION[config.attention].score_numbers(T, config) * config.n_head * batch_size
    acts = L * (24 * batch_size * T * C + 3 * scores) + 3 * batch_size * T * config.vocab_size
    return 16 * params + 4 * acts + 32e6


class TrainJob(Job):
    """Train a model in slices; publish a ``TrainedRun`` after each."""

    shippable = True  # seeded: the same weights and history for the same key (explorer.shelf)

    def __init__(self, key: Hashable, title: str, build: Callable[[], Trainer], peak_bytes: float,
                 held_out: Optional[Callable[[GPT], float]] = None, stop: Optional[StopRule] = None,
                 max_checkpoints: int = 16, step_s: Optional[float] = None, probe: Optional[Probe] = None):
        self.key, self.title, self.peak_bytes = key, title, peak_bytes
        self._build = build
        self.held_out = held_out  # model -> held-out accuracy, for the stop rule
        self.stop = stop
        self.max_checkpoints = max_checkpoints
        self.step_s = step_s  # an estimate of one step's time, until measured
        self.probe = probe  # figures measured every probe.every steps, published in the run's probes
        self._probes: list = []
        self.trainer: Optional[Trainer] = None
        self._live: Optional[TrainedRun] = None
        self._lock = threading.Lock()
        self._checkpoints: list = []
        self._checks: list = []
        self._streak_from: Optional[int] = None
        self._learned_at: Optional[int] = None
        self._total = None

    # ------------------------------------------------------------------------------------------ work
    def step(self, slice_s: float) -> bool:
        t0 = time.perf_counter()
        if self.trainer is None:
            self.trainer = self._build()
            self._total = self.trainer.config.steps
            if self.max_checkpoints:
                self._checkpoints.append((0, state_copy(self.trainer.model)))
            self._measure(self.trainer)
            self._publish(False)
        tr = self.trainer
        finished = tr.done
        while not finished and time.perf_counter() - t0 < slice_s:
            periods = [r.every for r in (self.stop, self.probe) if r is not None] or [tr.config.steps]
            tr.advance(min(e - tr.step % e for e in periods), seconds=slice_s - (time.perf_counter() - t0))
            if self.stop is not None and tr.step % self.stop.every == 0:
                finished = self._check(tr)
            finished = finished or tr.done
            if self.probe is not None and (tr.step % self.probe.every == 0 or finished):
                self._measure(tr)
            self._maybe_checkpoint(tr.step, finished)
        self._publish(finished)
        return finished

    def _check(self, tr: Trainer) -> bool:
        acc = self.held_out(tr.model)
        self._checks.append((tr.step, acc))
        if acc >= self.stop.accuracy:
            self._streak_from = self._streak_from or tr.step
            if len([1 for s, a in self._checks if s >= self._streak_from]) >= self.stop.checks:
                self._learned_at = self._streak_from
                return True
        else:
            self._streak_from = None
        return False

    def _measure(self, tr: Trainer) -> None:
        if self.probe is not None and (not self._probes or self._probes[-1][0] != tr.step):
            with torch.no_grad():
                figures = dict(self.probe.measure(tr.model.eval()), train_seconds=round(tr.seconds, 3))
            self._probes.append((tr.step, figures))

    def _maybe_checkpoint(self, step: int, final: bool) -> None:
        """Keep checkpoints evenly spread over the steps asked for (and the last step); none when
        ``max_checkpoints`` is 0 (a page that never rewinds: the run keeps its last weights only)."""
        if not self.max_checkpoints:
            return
        spacing = max(1, self._total // self.max_checkpoints)
        if final or step - self._checkpoints[-1][0] >= spacing:
            self._checkpoints.append((step, state_copy(self.trainer.model)))
            if len(self._checkpoints) > self.max_checkpoints + 1:  # thin: drop every other older one
                keep = self._checkpoints[:-1:2] + self._checkpoints[-1:]
                self._checkpoints = keep

    def _publish(self, finished: bool) -> None:
        tr = self.trainer
        model = copy.deepcopy(tr.model).to("cpu").eval()  # what sessions read: a CPU copy, wherever it trains
        for p in model.parameters():
            p.requires_grad_(False)
        run = TrainedRun(model, tr.step, tr.config.steps, list(tr.history), list(self._checkpoints),
                         list(self._checks), self._learned_at, tr.seconds, finished, list(self._probes))
        with self._lock:
            self._live = run

    # ------------------------------------------------------------------------------------------ read
    def live(self) -> Optional[TrainedRun]:
        """The run as far as it got (None before the first slice)."""
        with self._lock:
            return self._live

    def result(self) -> Optional[TrainedRun]:
        return self.live()

    def progress(self) -> tuple[float, str]:
        run = self.live()
        if run is None:
            return 0.0, "starting"
        return run.step / max(1, run.total), f"step {run.step}/{run.total}"

    def remaining_s(self) -> Optional[float]:
        run = self.live()
        step_s = (run.seconds / run.step) if run is not None and run.step else self.step_s
        if step_s is None:
            return None
        done = run.step if run is not None else 0
        return step_s * ((self._total or 0) - done) if self._total else None

    def close(self) -> None:
        self.trainer = None  # the optimiser state goes; the published run stays


def measure_step_s(build: Callable[[], Trainer], steps: int = 3) -> float:
    """Seconds per training step of a fresh trainer on this machine, now (after one warm-up step)."""
    tr = build()
    tr.advance(1)
    t0 = time.perf_counter()
    tr.advance(steps)
    return (time.perf_counter() - t0) / steps


class TurnsJob(Job):
    """Several models trained in turns by one job (a comparison: each gets the same steps).
    Subclasses fill ``trainers`` on their first slice and publish ``_live``; ``settings.steps`` is
    each model's number of steps."""

    settings = None
    trainers: dict  # name -> Trainer, set by the subclass
    shippable = True  # seeded models and data: the same comparison for the same key (explorer.shelf)
    _live = None

    @property
    def finished(self) -> bool:
        return bool(self.trainers) and all(tr.done for tr in self.trainers.values())

    def live(self):
        """The comparison as far as it got (None before the first slice)."""
        return self._live

    def result(self):
        return self._live

    def progress(self) -> tuple[float, str]:
        run = self._live
        return (0.0, "starting") if run is None else (run.step / self.settings.steps, f"step {run.step}")
