"""Train short, test long: the same small model trained with each positional encoding at input
length ``L``, then evaluated at ``L``, ``2L`` and ``4L`` (Press et al. 2022, "Train Short, Test
Long: Attention with Linear Biases Enables Input Length Extrapolation").

Training draws each batch's input length from ``[L/2, L]``, so a model has to find the separator
by content rather than by a fixed position; evaluation uses lengths it never saw. Each model
trains until it fits its training lengths (token accuracy >= 95% on fresh inputs of length ``L``,
checked every ``check_every`` steps) or until the step cap; one that never fits is marked, since
its longer results then say nothing about extrapolation. An encoding that cannot represent
positions past its training context (a learned table) is reported as not possible there, with the
reason, never run into an index error.

Each encoding's model is one scheduler job (``ModelJob``), keyed by its full description, so the
models train side by side on the server's cores and a model trained for one experiment serves
every other experiment that asks for it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .config import ModelConfig
from .encodings import ENCODINGS, PositionTooFar
from .jobs import Job
from .lab import stack, watch_ids
from .model import build_model
from .runs import training_peak_bytes
from .tasks import TASKS
from .train import TrainConfig, Trainer, evaluate

FIT = 0.95  # token accuracy at the training length that counts as "learned the task"
EVAL = dict(batches=2, batch_size=128, seed=1234)  # fresh examples: the fit check and the table use the same


@dataclass(frozen=True)
class ExtrapolationSettings:
    task: str = "copy"  # a name in explorer.tasks.TASKS
    train_len: int = 8  # input length L the models are trained on (lengths L/2..L)
    factors: tuple[int, ...] = (1, 2, 4)  # evaluate at these multiples of L
    encodings: tuple[str, ...] = field(default_factory=lambda: tuple(ENCODINGS.names()))
    max_steps: int = 2500  # the step cap: a model that has not fitted by then is marked
    check_every: int = 50  # steps between fit checks
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    attention: str = "softmax"
    seed: int = 0

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task = {self.task!r}: choose one of {', '.join(TASKS.names())}")
        bad = [e for e in self.encodings if e not in ENCODINGS]
        if bad or not self.encodings:
            raise ValueError(f"encodings {bad or '(none)'}: choose from {', '.join(ENCODINGS.names())}")
        if not 2 <= self.train_len <= 32:
            raise ValueError(f"train_len = {self.train_len}: allowed range is 2 to 32")
        if not 1 <= self.max_steps <= 5000:
            raise ValueError(f"max_steps = {self.max_steps}: allowed range is 1 to 5000")
        for e in self.encodings:
            self.config(e)

    def config(self, encoding: str) -> ModelConfig:
        task = TASKS[self.task]
        return ModelConfig(vocab_size=task.tokenizer.vocab_size, block_size=task.context(self.train_len),
                           n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd, attention=self.attention,
                           encoding=encoding)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.max_steps, seed=self.seed, min_length=max(1, self.train_len // 2))

    def lengths(self) -> list[int]:
        return [self.train_len * f for f in self.factors]

    def model_key(self, encoding: str) -> tuple:
        """Everything that decides one encoding's trained model (not the other encodings)."""
        return ("extrapolation-model", self.task, self.train_len, self.factors, encoding, self.max_steps,
                self.check_every, self.n_layer, self.n_head, self.n_embd, self.attention, self.seed)


URL_CONTROLS = {  # the page's URL key -> (ExtrapolationSettings field, the control's label)
    "pe_task": ("task", "Task"), "pe_train_len": ("train_len", "Training length L"),
    "pe_steps": ("max_steps", "Step cap per model"), "pe_encodings": ("encodings", "Encodings"),
}
VIEW_DEFAULTS = {"pe_layer": 0, "pe_head": 0, "pe_map": ExtrapolationSettings().encodings[0]}  # pe_map: whose map is open


def url_defaults() -> dict:
    """Every control of the experiment at its default (what a lesson starts from)."""
    d = ExtrapolationSettings()
    values = {key: getattr(d, field) for key, (field, _) in URL_CONTROLS.items()}
    return values | {"pe_encodings": list(d.encodings)} | VIEW_DEFAULTS


@dataclass
class ModelResult:
    """One encoding's model: how long it trained, whether it fitted, and its evaluations."""
    encoding: str
    steps: int  # steps trained
    fitted: bool  # reached FIT at the training length
    rows: list[dict]  # encoding, train_len, eval_len, accuracy, loss (, note)
    tokens: Optional[list[str]]  # the example at the longest length (None if it cannot be read)
    maps: object  # (n_layer, nh, T, T) attention on it, or the reason it cannot be computed
    seconds: float
    table: Optional[np.ndarray] = None  # a learned position table after training
    table_init: Optional[np.ndarray] = None  # and before


class ModelJob(Job):
    """Train one encoding's model until it fits (or the cap), then evaluate it at every length."""

    shippable = True  # seeded (explorer.shelf)

    def __init__(self, s: ExtrapolationSettings, encoding: str):
        self.s, self.encoding = s, encoding
        self.key = s.model_key(encoding)
        self.title = f"training with {encoding}"
        self.peak_bytes = training_peak_bytes(s.config(encoding), TrainConfig.batch_size,
                                              TASKS[s.task].context(s.train_len))
        self.trainer: Optional[Trainer] = None
        self._result: Optional[ModelResult] = None
        self._acc = 0.0
        self._t0 = None

    def step(self, slice_s: float) -> bool:
        s, task = self.s, TASKS[self.s.task]
        t0 = time.perf_counter()
        if self.trainer is None:
            self._t0 = t0
            self.trainer = Trainer(build_model(s.config(self.encoding), s.seed), task, s.train_len, s.train_config())
        tr = self.trainer
        while time.perf_counter() - t0 < slice_s:
            tr.advance(s.check_every - tr.step % s.check_every, seconds=slice_s - (time.perf_counter() - t0))
            if tr.step % s.check_every == 0 or tr.done:
                self._acc = evaluate(tr.model, task, s.train_len, **EVAL)["accuracy"]
                if self._acc >= FIT or tr.done:
                    self._result = self._evaluate(self._acc >= FIT)
                    return True
        return False

    def _evaluate(self, fitted: bool) -> ModelResult:
        s, task, model = self.s, TASKS[self.s.task], self.trainer.model.eval()
        rows = []
        for n in s.lengths():
            row = {"encoding": self.encoding, "train_len": s.train_len, "eval_len": n, "steps": self.trainer.step,
                   "fitted": fitted}
            try:
                row.update(evaluate(model, task, n, **EVAL))
            except PositionTooFar as e:
                row.update(accuracy=None, loss=None, note=str(e))
            rows.append(row)
        example = task.sample(torch.Generator().manual_seed(s.seed + 7), max(s.lengths()))[0]
        ids = watch_ids(task, example)
        try:
            with torch.no_grad():
                out = model(ids, need_weights=True)
            tokens, maps = list(task.tokenizer.decode(ids[0])), stack([w[0] for w in out.attentions])
        except PositionTooFar as e:
            tokens, maps = None, str(e)
        table = init = None
        if hasattr(model.pos, "wpe"):
            table = model.pos.wpe.weight.detach().numpy().copy()
            init = build_model(s.config(self.encoding), s.seed).pos.wpe.weight.detach().numpy().copy()
        return ModelResult(self.encoding, self.trainer.step, fitted, rows, tokens, maps,
                           time.perf_counter() - self._t0, table, init)

    def result(self) -> Optional[ModelResult]:
        return self._result

    def restore(self, result: ModelResult) -> None:
        self._result = result

    def progress(self) -> tuple[float, str]:
        step = self.trainer.step if self.trainer else 0
        checked = (f"accuracy {self._acc:.0%} at length {self.s.train_len} (step {step - step % self.s.check_every})"
                   if step >= self.s.check_every else "first check at step " + str(self.s.check_every))
        return step / self.s.max_steps, f"{self.encoding}: step {step}, {checked}"

    def remaining_s(self) -> Optional[float]:
        tr = self.trainer
        per = tr.seconds / tr.step if tr is not None and tr.step else 0.03
        return per * (self.s.max_steps - (tr.step if tr else 0))

    def close(self) -> None:
        self.trainer = None


@dataclass
class ExtrapolationResult:
    settings: ExtrapolationSettings
    models: dict = field(default_factory=dict)  # encoding -> ModelResult

    @property
    def rows(self) -> list[dict]:
        return [r for e in self.settings.encodings for r in self.models[e].rows]

    @property
    def seconds(self) -> float:
        return sum(m.seconds for m in self.models.values())

    @property
    def learned_table(self) -> Optional[np.ndarray]:
        return self.models["learned"].table if "learned" in self.models else None

    def to_json(self) -> dict:
        return {"settings": {**asdict(self.settings), "factors": list(self.settings.factors),
                             "encodings": list(self.settings.encodings)},
                "results": self.rows, "seconds": round(self.seconds, 2)}

    def accuracy(self, encoding: str, eval_len: int) -> Optional[float]:
        for r in self.models[encoding].rows:
            if r["eval_len"] == eval_len:
                return r["accuracy"]
        return None

    def losses(self, encoding: str) -> list[Optional[float]]:
        """Loss at each evaluation length, in the order of ``settings.factors``."""
        return [r["loss"] for r in self.models[encoding].rows]

    def summary(self, encoding: str) -> str:
        """One model's results in a sentence (markdown): its steps and its accuracy at each length."""
        m = self.models[encoding]
        at = [f"{r['accuracy']:.1%} at {r['eval_len']}" if r["accuracy"] is not None else
              f"nothing at {r['eval_len']} (no position for it)" for r in m.rows]
        return (f"**{encoding}** {'fitted' if m.fitted else 'did not fit'} length {self.settings.train_len} in "
                f"{m.steps:,} steps; tokens right: " + ", ".join(at) + ".")

    def findings(self) -> list[str]:
        """What came out, in sentences computed from the numbers (markdown), beside the literature."""
        s = self.settings
        lens = s.lengths()
        fitted = [e for e in s.encodings if self.models[e].fitted]
        unfit = [e for e in s.encodings if not self.models[e].fitted]
        out = []
        if fitted:
            out.append("Fitted the training length (≥ 95%): " + ", ".join(
                f"**{e}** in {self.models[e].steps} steps" for e in fitted) + ".")
        if unfit:
            out.append(", ".join(f"**{e}**" for e in unfit) + f" did not learn the task at L = {s.train_len} within "
                       f"{s.max_steps} steps: {'its' if len(unfit) == 1 else 'their'} longer results are not about "
                       "extrapolation.")
        far = {e: self.accuracy(e, lens[-1]) for e in fitted if self.accuracy(e, lens[-1]) is not None}
        if far and len(lens) > 1:
            ranked = sorted(far, key=far.get, reverse=True)
            out.append(f"At {lens[-1]} ({s.factors[-1]}× longer), among the models that fitted: "
                       + ", ".join(f"{e} {far[e]:.0%}" for e in ranked) + ".")
            best = far[ranked[0]]
            if "alibi" in far:
                if far["alibi"] >= best - 0.05 and best >= 0.5:
                    out.append("ALiBi extrapolated best (within 5 points), as Press et al. 2022 report.")
                elif best < 0.5:
                    out.append(f"No encoding kept even half its accuracy at {lens[-1]} (best {best:.0%}), so this "
                               "run neither confirms nor refutes Press et al. 2022 (ALiBi extrapolates): on these "
                               "tasks longer inputs need attention offsets no training example used.")
                else:
                    out.append(f"ALiBi ({far['alibi']:.0%}) did not extrapolate best here ({ranked[0]} did), unlike "
                               "Press et al. 2022, who measured language-model loss on long text.")
            if "none" in far and ({"rope", "alibi"} & set(far)):
                rivals = {e: far[e] for e in ("rope", "alibi") if e in far}
                beats = [e for e, v in rivals.items() if far["none"] > v + 0.02]
                loses = [e for e, v in rivals.items() if far["none"] < v - 0.02]
                if beats and not loses:
                    out.append("No positional encoding generalised better than " + " and ".join(beats)
                               + ", as Kazemnejad et al. 2023 found for decoders.")
                elif loses:
                    out.append("No positional encoding generalised worse than " + " and ".join(loses)
                               + " here, unlike the decoder results of Kazemnejad et al. 2023.")
                else:
                    out.append("No positional encoding did about as well as RoPE and ALiBi (within 2 points); "
                               "Kazemnejad et al. 2023 found it often better in decoders.")
        if "randomized" not in s.encodings:
            out.append("Ruoss et al. 2023 report that randomised positions (each training sequence placed at a "
                       "random, ordered subset of a much longer range of positions) help length generalisation; "
                       "that encoding is not in this run.")
        return out

    def learned_rows(self) -> Optional[dict]:
        """Per row of the learned table: how far it moved from its random start (relative to its
        initial length), and the share of training sequences long enough to use it."""
        m = self.models.get("learned")
        if m is None or m.table is None:
            return None
        s, task = self.settings, TASKS[self.settings.task]
        moved = np.linalg.norm(m.table - m.table_init, axis=1) / np.linalg.norm(m.table_init, axis=1)
        lengths = range(max(1, s.train_len // 2), s.train_len + 1)
        seq = [task.context(n) - 1 for n in lengths]  # the input sequence a training example of length n has
        reached = [sum(L > p for L in seq) / len(seq) for p in range(len(moved))]
        return {"position": list(range(len(moved))), "moved": np.round(moved, 4).tolist(), "reached": reached}

    def learned_finding(self) -> str:
        rows = self.learned_rows()
        moved, reached = np.array(rows["moved"]), np.array(rows["reached"])
        always, rare, never = moved[reached == 1], moved[(reached > 0) & (reached < 1)], moved[reached == 0]
        parts = [f"The table has {len(moved)} rows."]
        if always.size:
            parts.append(f"Rows every training sequence uses moved {always.mean():.1f}× their initial length on average")
        if rare.size:
            parts.append(f"rows only some sequences reach moved {rare.mean():.1f}×"
                         + (" — more, not less: Adam scales each row's rare updates up to full-size steps"
                            if always.size and rare.mean() > always.mean() else ""))
        if never.size:
            parts.append(f"rows no training sequence reaches moved {never.mean():.2f}×"
                         + (" (weight decay alone): they stay near their random start" if never.mean() < 0.1 else ""))
        return parts[0] + " " + "; ".join(parts[1:]) + "."


def estimate_text(s: ExtrapolationSettings, speed: tuple[float, float], workers: int) -> str:
    """How long the experiment may take, from this machine's measured training speed (see
    ``explorer.lab.calibrate``): every model at its step cap, side by side on the server's cores."""
    from .lab import LabSettings, step_flops

    total = 0.0
    for e in s.encodings:
        probe = LabSettings(task=s.task, length=s.train_len, attention=s.attention, n_head=s.n_head, encoding=e,
                            n_layer=s.n_layer, n_embd=s.n_embd)
        total += (speed[0] + speed[1] * step_flops(probe)) * s.max_steps
    return (f"At most about {total / max(1, min(workers, len(s.encodings))):.0f} s on this server if no model fits "
            f"before the step cap (from its measured training speed); models that fit stop sooner.")


def jobs(s: ExtrapolationSettings) -> list[ModelJob]:
    s.validate()
    return [ModelJob(s, e) for e in s.encodings]


def combine(s: ExtrapolationSettings, results: list[ModelResult]) -> ExtrapolationResult:
    return ExtrapolationResult(s, {m.encoding: m for m in results})


def run(s: ExtrapolationSettings, progress: Optional[Callable[[float, str], None]] = None) -> ExtrapolationResult:
    """The whole experiment in this process, one model after another (the CLI and the tests)."""
    results = []
    for i, job in enumerate(jobs(s)):
        while not job.step(1.0):
            if progress:
                frac, what = job.progress()
                progress((i + frac) / len(s.encodings), what)
        results.append(job.result())
    if progress:
        progress(1.0, "done")
    return combine(s, results)
