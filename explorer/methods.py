"""Two training methods measured against plain training on a text corpus, each as a scheduler job.

- **Curriculum** (sequence-length warm-up; Li, Zhang & He 2022, "The Stability-Efficiency Dilemma:
  Investigating Sequence Length Warmup for Training GPT Models"): the same seeded model trained
  with short sequences growing to the full length, and at the full length throughout.
- **Mixed precision** (Micikevicius et al. 2018; Kalamkar et al. 2019 on bfloat16): the same
  seeded model trained in bf16 autocast and in fp32.

Both models of a comparison are trained in turns by one job (``explorer.runs.TurnsJob``), ``every``
steps at a time; after each turn the model's held-out loss is measured (in float32, at the full
length, on the same held-out windows for both) and recorded with its step and its own training
seconds (the trainer's clock runs only inside its own steps, so taking turns and measuring bias
neither). Both can then be drawn as held-out loss against wall time on one plot. ``findings()``
turns the numbers into sentences, saying so where they go against the textbook.

A job's key is its settings: the corpus enters by name and the sha256 digest of its text, never
the text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .config import ModelConfig
from .corpus import Corpus
from .curriculum import Curriculum
from .device import cpu_bf16_instructions, pick_device
from .model import build_model
from .precision import PRECISIONS, precision_report, report_sentences
from .runs import TurnsJob, training_peak_bytes
from .train import TrainConfig, Trainer

HELD_OUT_SEED = 4321  # the held-out windows every measurement of every comparison reads


@dataclass(frozen=True)
class MethodSettings:
    corpus: str = "emma"  # the corpus's name
    digest: str = ""  # sha256 of the corpus's text (Corpus.digest); the job checks it
    n_layer: int = 4  # blocks
    n_embd: int = 128  # width
    n_head: int = 4  # attention heads
    length: int = 128  # full sequence length (the context)
    batch_size: int = 12  # sequences per step (a curriculum keeps the number, shortening them)
    lr: float = 2e-3  # peak learning rate (AdamW; linear warm-up, cosine decay)
    warmup: int = 10  # learning-rate warm-up steps
    steps: int = 150  # training steps of each model
    every: int = 15  # steps between held-out measurements
    eval_batches: int = 4  # held-out batches per measurement
    seed: int = 0  # seeds the weights (the same for both models) and the data stream
    encoding: str = "learned"  # positional encoding, a name in explorer.encodings.ENCODINGS

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, block_size=self.length, n_layer=self.n_layer,
                           n_embd=self.n_embd, n_head=self.n_head, encoding=self.encoding)

    def problem(self, vocab_size: int) -> Optional[str]:
        """Why these settings cannot run on a text of ``vocab_size`` characters, or None."""
        if not 1 <= self.every <= self.steps:
            return f"steps = {self.steps}: train at least {max(1, self.every)} steps (one measurement)"
        try:
            self.model_config(vocab_size)
            self.arms()
        except ValueError as e:
            return str(e)
        return None

    def train_config(self, **changes) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           seed=self.seed, **changes)

    def for_corpus(self, corpus: Corpus):
        """These settings naming ``corpus`` (its name and digest)."""
        return type(self)(**{**self.__dict__, "corpus": corpus.name, "digest": corpus.digest})


@dataclass(frozen=True)
class CurriculumSettings(MethodSettings):
    start: int = 16  # the curriculum's first sequence length
    fraction: float = 0.5  # share of the steps over which it grows to the full length
    multiple: int = 8  # its lengths are rounded down to a multiple of this

    @property
    def curriculum(self) -> Curriculum:
        return Curriculum(self.start, self.fraction, self.multiple)

    def problem(self, vocab_size: int) -> Optional[str]:
        if self.start > self.length:
            return (f"start length = {self.start} is above the full length of {self.length}: a curriculum starts "
                    "shorter and grows to the full length")
        return super().problem(vocab_size)

    def arms(self) -> dict[str, TrainConfig]:
        return {"curriculum": self.train_config(curriculum=self.curriculum), "fixed": self.train_config()}


@dataclass(frozen=True)
class PrecisionSettings(MethodSettings):
    steps: int = 90  # training steps of each model (bf16 on a CPU may be slower than fp32)
    precisions: tuple = ("bf16", "fp32")  # names in explorer.precision.PRECISIONS

    def arms(self) -> dict[str, TrainConfig]:
        return {p: self.train_config(precision=p) for p in self.precisions}


# The Training page's controls of the two comparisons (URL key -> settings field) and their choices.
CURRICULUM_CONTROLS = {"tr_cur_steps": "steps", "tr_cur_length": "length", "tr_cur_start": "start",
                       "tr_cur_fraction": "fraction", "tr_cur_encoding": "encoding"}
PRECISION_CONTROLS = {"tr_prec_steps": "steps"}
STEP_CHOICES = (30, 60, 90, 150, 300, 600)  # steps of each arm
LENGTH_CHOICES = (16, 32, 64, 128, 256)  # full sequence lengths
START_CHOICES = (8, 16, 32, 64, 128)  # the curriculum's first length
FRACTION_RANGE = (0.1, 1.0)  # share of the steps spent growing the length


def url_defaults() -> dict:
    """The page's comparison controls at their defaults."""
    c, p = CurriculumSettings(), PrecisionSettings()
    return ({key: getattr(c, name) for key, name in CURRICULUM_CONTROLS.items()}
            | {key: getattr(p, name) for key, name in PRECISION_CONTROLS.items()})


def settings_from(kind: type, corpus: Corpus, values: dict, controls: dict):
    """Settings of ``kind`` naming ``corpus``, with the page's control ``values`` (URL key -> value)."""
    return kind(**{name: values[key] for key, name in controls.items()}).for_corpus(corpus)


@dataclass
class Record:
    seconds: float  # the model's own training seconds so far
    step: int  # steps trained
    loss: float  # held-out loss (nats per character)
    tokens: int  # input tokens trained on so far


@dataclass
class ComparisonRun:
    settings: MethodSettings
    records: dict  # arm -> [Record], step 0 first
    step: int  # steps every arm has trained
    finished: bool

    def series(self) -> dict:
        """Held-out loss against training seconds, per arm: ``{arm: (seconds, losses)}``."""
        return {arm: ([r.seconds for r in recs], [r.loss for r in recs]) for arm, recs in self.records.items()}

    def loss_at(self, arm: str, seconds: float) -> float:
        """An arm's held-out loss at ``seconds`` of its training (linear between measurements)."""
        xs, ys = self.series()[arm]
        return float(np.interp(seconds, xs, ys))

    def step_ms(self, arm: str) -> float:
        """Milliseconds per training step of an arm, over its whole run."""
        last = self.records[arm][-1]
        return 1000 * last.seconds / max(1, last.step)

    def step_series(self) -> dict:
        """Held-out loss against the training step, per arm: ``{arm: (steps, losses)}``."""
        return {arm: ([r.step for r in recs], [r.loss for r in recs]) for arm, recs in self.records.items()}

    def common_seconds(self) -> float:
        """The longest time both arms have trained."""
        return min(recs[-1].seconds for recs in self.records.values())

    def largest_rise(self, arm: str) -> float:
        """The largest increase of an arm's held-out loss from one measurement to the next."""
        losses = [r.loss for r in self.records[arm]]
        return max([b - a for a, b in zip(losses, losses[1:])] + [0.0])


@dataclass
class CurriculumRun(ComparisonRun):
    schedule: list = field(default_factory=list)  # the curriculum's length at every step

    def findings(self) -> list[str]:
        cur, fix = self.records["curriculum"][-1], self.records["fixed"][-1]
        t = self.common_seconds()
        a, b = self.loss_at("curriculum", t), self.loss_at("fixed", t)
        s = self.settings
        out = [f"After {cur.step} steps each the curriculum run trained for {cur.seconds:.1f} s against "
               f"{fix.seconds:.1f} s at fixed length: its sequences grew from {self.schedule[0]} to {s.length} "
               f"characters, {cur.tokens / max(1, fix.tokens):.0%} of the fixed run's tokens.",
               f"At {t:.1f} s of training the curriculum run's held-out loss is {a:.2f} against {b:.2f} for fixed "
               f"length; after the same {cur.step} steps, {cur.loss:.2f} against {fix.loss:.2f}."]
        if a <= b:
            out.append("As Li et al. 2022 report, sequence-length warm-up reaches a lower held-out loss in the "
                       "same wall time: its early steps are cheaper.")
        else:
            rise = self.largest_rise("fixed")
            out.append("Against the textbook: Li et al. 2022 find sequence-length warm-up reaches a given loss "
                       f"sooner, yet here fixed length is ahead at {t:.1f} s. Their gain comes mostly from "
                       "steadier training at large batches and learning rates; here fixed-length training "
                       + ("was already steady (its held-out loss never rose between measurements)"
                          if rise < 0.01 else f"rose by at most {rise:.2f} between measurements")
                       + ", so the warm-up had little to fix, while its short early windows hold "
                       f"{1 - cur.tokens / max(1, fix.tokens):.0%} fewer tokens to learn from.")
        rise = self.largest_rise("curriculum")
        if rise > 0.1 and s.model_config(2).encoding == "learned":
            out.append(f"Early on the curriculum run's held-out loss rose by up to {rise:.2f}: it is measured at the "
                       f"full length of {s.length}, and the rows of the learned position table beyond the lengths "
                       "trained so far have not been trained yet.")
        return out


@dataclass
class PrecisionRun(ComparisonRun):
    report: list = field(default_factory=list)  # (where, dtype) of one measured bf16 step (precision_report)

    def findings(self) -> list[str]:
        arms = list(self.records)
        low = next((a for a in arms if PRECISIONS[a].dtype is not None), None)
        full = next((a for a in arms if PRECISIONS[a].dtype is None), None)
        if low is None or full is None:
            return [f"{a}: {self.step_ms(a):.0f} ms per step, held-out loss {self.records[a][-1].loss:.2f}."
                    for a in arms]
        ms_low, ms_full = self.step_ms(low), self.step_ms(full)
        r_low, r_full = self.records[low], self.records[full]
        gap = max(abs(x.loss - y.loss) for x, y in zip(r_low, r_full))
        out = [f"Time per step: {low} {ms_low:.0f} ms against {full} {ms_full:.0f} ms "
               f"({ms_full / ms_low:.2f}× the speed).",
               f"After {r_low[-1].step} steps the held-out loss is {r_low[-1].loss:.3f} in {low} against "
               f"{r_full[-1].loss:.3f} in {full}; at equal steps the curves differ by at most {gap:.3f}."]
        if ms_low > ms_full:
            instr = cpu_bf16_instructions()
            out.append(f"Against the usual expectation, {low} is slower here. On a GPU bfloat16 matrix multiplies run "
                       "on tensor cores at several times float32's rate; on this CPU"
                       + (f" (which has {', '.join(instr)})" if instr else " (which reports no bfloat16 matrix "
                          "instructions)")
                       + " autocast also casts every weight and activation to bfloat16 before each multiply, and "
                       "with this model's small matrices the whole step measured slower.")
        if self.report:
            out += report_sentences(self.report, low)
        return out


class ComparisonJob(TurnsJob):
    """Train each arm's copy of the same seeded model in turns, ``every`` steps at a time,
    measuring held-out loss after each turn."""

    kind = ""  # the first element of the key

    def __init__(self, settings: MethodSettings, corpus: Corpus):
        if settings.digest != corpus.digest:
            raise ValueError(f"these settings name corpus {settings.corpus!r} with another text: "
                             "make them with settings.for_corpus(corpus)")
        self.settings, self.corpus = settings, corpus
        self.key = (self.kind, settings)
        self.config = settings.model_config(corpus.vocab_size)
        arms = settings.arms()
        self.peak_bytes = len(arms) * training_peak_bytes(self.config, settings.batch_size, settings.length)
        self._arms = arms
        self.trainers: dict[str, Trainer] = {}
        self.records: dict[str, list[Record]] = {arm: [] for arm in arms}
        self._tokens: dict[str, int] = {arm: 0 for arm in arms}
        self._live: Optional[ComparisonRun] = None

    def _record(self, arm: str, tr: Trainer) -> None:
        s = self.settings
        loss = self.corpus.held_out_loss(tr.model, s.length, s.eval_batches, s.batch_size, HELD_OUT_SEED)
        self.records[arm].append(Record(tr.seconds, tr.step, loss, self._tokens[arm]))

    def step(self, slice_s: float) -> bool:
        t0 = time.perf_counter()
        s = self.settings
        if not self.trainers:
            for arm, tc in self._arms.items():
                self.trainers[arm] = Trainer(build_model(self.config, s.seed).to(pick_device()), self.corpus, s.length, tc)
                self._record(arm, self.trainers[arm])
            self._start()
        while time.perf_counter() - t0 < slice_s and not self.finished:
            for arm, tr in self.trainers.items():
                if not tr.done:
                    before = tr.step
                    tr.advance(s.every - tr.step % s.every)
                    self._tokens[arm] += s.batch_size * sum(tr.length_at(i) for i in range(before, tr.step))
                    self._record(arm, tr)
        self._live = self._publish(min(tr.step for tr in self.trainers.values()))
        return self.finished

    def _start(self) -> None:
        """Anything measured once, after the trainers are made."""

    def _publish(self, step: int) -> ComparisonRun:
        """The comparison as far as it got (each kind adds its own figures)."""
        raise NotImplementedError


class CurriculumJob(ComparisonJob):
    kind = "curriculum"
    title = "training with and without a curriculum"

    def _publish(self, step: int) -> CurriculumRun:
        s = self.settings
        return CurriculumRun(s, {a: list(r) for a, r in self.records.items()}, step, self.finished,
                             s.curriculum.schedule(s.length, s.steps))


class PrecisionJob(ComparisonJob):
    kind = "precision"
    title = "training in bf16 and fp32"
    report: list = []

    def _start(self) -> None:
        low = next((a for a in self._arms if PRECISIONS[a].dtype is not None), None)
        if low is not None:
            x, y = self.corpus.batch(torch.Generator().manual_seed(self.settings.seed), 2, self.settings.length)
            self.report = precision_report(self.trainers[low].model, x, y, low)

    def _publish(self, step: int) -> PrecisionRun:
        return PrecisionRun(self.settings, {a: list(r) for a, r in self.records.items()}, step, self.finished,
                            list(self.report))


def job(settings: MethodSettings, corpus: Corpus) -> ComparisonJob:
    """The comparison job of ``settings`` (curriculum or precision) on ``corpus``."""
    return JOBS[type(settings)](settings, corpus)


JOBS = {CurriculumSettings: CurriculumJob, PrecisionSettings: PrecisionJob}  # settings class -> its job
