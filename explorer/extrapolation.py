"""Train short, test long: the same small model trained with each positional encoding at input
length ``L``, then evaluated at ``L``, ``2L`` and ``4L`` (Press et al. 2022, "Train Short, Test
Long: Attention with Linear Biases Enables Input Length Extrapolation").

Training draws each batch's input length from ``[L/2, L]``, so a model has to find the separator
by content rather than by a fixed position; evaluation uses lengths it never saw. A learned
absolute table has no rows past its training context: those evaluations are reported as not
possible (``accuracy = None``) with the reason, never run into an index error.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .config import ModelConfig
from .encodings import ENCODINGS, PositionTooFar
from .lab import stack, watch_ids
from .model import build_model
from .tasks import TASKS
from .train import TrainConfig, Trainer, evaluate


@dataclass(frozen=True)
class ExtrapolationSettings:
    task: str = "copy"  # a name in explorer.tasks.TASKS
    train_len: int = 8  # input length L the models are trained on (lengths L/2..L)
    factors: tuple[int, ...] = (1, 2, 4)  # evaluate at these multiples of L
    encodings: tuple[str, ...] = ("none", "sinusoidal", "learned", "rope", "alibi")
    steps: int = 400  # training steps per model
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
        if not 1 <= self.steps <= 5000:
            raise ValueError(f"steps = {self.steps}: allowed range is 1 to 5000")
        for e in self.encodings:
            self.config(e)

    def config(self, encoding: str) -> ModelConfig:
        task = TASKS[self.task]
        return ModelConfig(vocab_size=task.tokenizer.vocab_size, block_size=task.context(self.train_len),
                           n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd, attention=self.attention,
                           encoding=encoding)


@dataclass
class ExtrapolationResult:
    settings: ExtrapolationSettings
    rows: list[dict] = field(default_factory=list)  # encoding, train_len, eval_len, accuracy, loss, note
    maps: dict = field(default_factory=dict)  # encoding -> (tokens, (n_layer, nh, T, T)) at the longest length
    learned_table: Optional[np.ndarray] = None  # the learned model's position table (block_size, C)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"settings": {**asdict(self.settings), "factors": list(self.settings.factors),
                             "encodings": list(self.settings.encodings)},
                "results": self.rows, "seconds": round(self.seconds, 2)}

    def findings(self) -> list[str]:
        """What came out, in sentences computed from the numbers (markdown)."""
        s = self.settings
        lens = [s.train_len * f for f in s.factors]
        at_l = {e: self.accuracy(e, lens[0]) or 0.0 for e in s.encodings}
        best_l = max(at_l, key=at_l.get)
        out = [f"At the training length, the best was **{best_l}** ({at_l[best_l]:.0%})."]
        far = {e: self.accuracy(e, lens[-1]) for e in s.encodings if self.accuracy(e, lens[-1]) is not None}
        if far and len(lens) > 1:
            best = max(far, key=far.get)
            others = ", ".join(f"{e} {v:.0%}" for e, v in far.items() if e != best)
            out.append(f"At {lens[-1]} ({s.factors[-1]}× longer) the best was **{best}** ({far[best]:.0%})"
                       + (f"; {others}." if others else "."))
            if "alibi" in far:
                agrees = best == "alibi"
                out.append(("That agrees" if agrees else "That does not agree")
                           + " with the ALiBi paper's finding that linear biases extrapolate best.")
        return out

    def losses(self, encoding: str) -> list[Optional[float]]:
        """Loss at each evaluation length, in the order of ``settings.factors``."""
        by_len = {r["eval_len"]: r["loss"] for r in self.rows if r["encoding"] == encoding}
        return [by_len.get(self.settings.train_len * f) for f in self.settings.factors]

    def accuracy(self, encoding: str, eval_len: int) -> Optional[float]:
        for r in self.rows:
            if r["encoding"] == encoding and r["eval_len"] == eval_len:
                return r["accuracy"]
        return None


def run(s: ExtrapolationSettings, progress: Optional[Callable[[float, str], None]] = None) -> ExtrapolationResult:
    s.validate()
    t0 = time.perf_counter()
    task = TASKS[s.task]
    result = ExtrapolationResult(s)
    longest = s.train_len * max(s.factors)
    gen = torch.Generator().manual_seed(s.seed + 7)
    example = task.sample(gen, longest)[0]
    for i, enc in enumerate(s.encodings):
        if progress:
            progress(i / len(s.encodings), f"training with {enc}")
        model = build_model(s.config(enc), s.seed)
        cfg = TrainConfig(steps=s.steps, seed=s.seed, min_length=max(1, s.train_len // 2))
        Trainer(model, task, s.train_len, cfg).run()
        model.eval()
        for f in s.factors:
            n = s.train_len * f
            row = {"encoding": enc, "train_len": s.train_len, "eval_len": n}
            try:
                row.update(evaluate(model, task, n, batches=2, batch_size=128))
            except PositionTooFar as e:
                row.update(accuracy=None, loss=None, note=str(e))
            result.rows.append(row)
        ids = watch_ids(task, example)
        try:
            with torch.no_grad():
                out = model(ids, need_weights=True)
            result.maps[enc] = (list(task.tokenizer.decode(ids[0])), stack([w[0] for w in out.attentions]))
        except PositionTooFar as e:
            result.maps[enc] = (None, str(e))
        if enc == "learned":
            result.learned_table = model.pos.wpe.weight.detach().numpy().copy()
    if progress:
        progress(1.0, "done")
    result.seconds = time.perf_counter() - t0
    return result
