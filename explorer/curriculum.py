"""Sequence-length warm-up: train on short sequences first, growing them to the full length.

Li, Zhang & He 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for
Training GPT Models": the length grows linearly from a short start to the full length over the
first part of training, rounded to a multiple of 8. Each early step keeps its number of sequences
but holds fewer tokens, so it costs less; the paper finds it also steadies training at large
batches and learning rates.

``Curriculum.length_at(step, full_length, steps)`` is the length of one step;
``schedule(full_length, steps)`` all of them, for drawing. ``TrainConfig.curriculum`` hands one to
the ``Trainer`` (None: every step at the full length).
"""
from __future__ import annotations

from dataclasses import dataclass


class CurriculumError(ValueError):
    """Curriculum settings that cannot be used; the message says why."""


@dataclass(frozen=True)
class Curriculum:
    start: int = 16  # sequence length of the first step (never more than the full length)
    fraction: float = 0.5  # share of the steps over which the length grows linearly to the full length
    multiple: int = 8  # lengths are rounded down to a multiple of this (but never below the start)

    def __post_init__(self) -> None:
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 1:
            raise CurriculumError(f"start = {self.start!r}: the first length must be a whole number of at least 1")
        if not isinstance(self.fraction, (int, float)) or not 0 <= self.fraction <= 1:
            raise CurriculumError(f"fraction = {self.fraction!r}: the share of steps spent growing the length "
                                  "must be from 0 to 1")
        if isinstance(self.multiple, bool) or not isinstance(self.multiple, int) or self.multiple < 1:
            raise CurriculumError(f"multiple = {self.multiple!r}: lengths are rounded to a multiple of a whole "
                                  "number of at least 1")

    def full_at(self, steps: int) -> int:
        """The first step (0-based) trained at the full length."""
        return round(self.fraction * steps)

    def length_at(self, step: int, full_length: int, steps: int) -> int:
        """The sequence length of step ``step`` (0-based) of ``steps``, growing to ``full_length``."""
        ramp = self.full_at(steps)
        first = min(self.start, full_length)
        if step >= ramp:
            return full_length
        grown = first + (full_length - first) * step / ramp
        return max(first, min(full_length, int(grown) // self.multiple * self.multiple))

    def schedule(self, full_length: int, steps: int) -> list[int]:
        """Every step's sequence length."""
        return [self.length_at(s, full_length, steps) for s in range(steps)]

    def tokens(self, full_length: int, steps: int, batch_size: int) -> int:
        """Tokens read in all (input positions), against ``steps * batch_size * full_length`` without it."""
        return batch_size * sum(self.schedule(full_length, steps))
