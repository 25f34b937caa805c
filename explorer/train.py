"""Training (AdamW, seeded, resumable in slices) and evaluation.

``Trainer`` keeps its model, optimiser, data generator and history, so a page can run it a slice
at a time between redraws (``advance``), stop it, and pick it up again. ``Trainer.run`` calls back
every ``every`` steps with a ``Progress``: the loss so far and a snapshot of the attention weights on a
fixed example, so a caller can watch the maps form.

Each batch goes to the model's device (a model moved to CUDA trains there unchanged). The forward
pass runs under the config's precision (``explorer.precision``: fp32, or bf16 autocast; backward
outside it, weights and optimiser state float32). A ``Curriculum`` (``explorer.curriculum``) sets
each step's sequence length (short first, growing to the full length; Li et al. 2022); without
one every step is at the full length, or, with ``min_length``, at a length drawn at random.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from .curriculum import Curriculum
from .device import model_device, move
from .model import GPT
from .precision import PRECISIONS
from .tasks import IGNORE, Task


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600  # optimisation steps in all
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak learning rate (AdamW), after linear warm-up, then cosine decay
    warmup: int = 30  # warm-up steps
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    seed: int = 0  # seeds the data stream (the model has its own seed)
    min_length: int | None = None  # if set, each step draws its input length from [min_length, length]
    min_lr_ratio: float = 0.1  # the cosine decay ends at lr * min_lr_ratio on the last step
    precision: str = "fp32"  # arithmetic of the forward pass, a name in explorer.precision.PRECISIONS
    curriculum: Optional[Curriculum] = None  # sequence-length warm-up; None: every step at the full length

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision = {self.precision!r}: choose one of {', '.join(PRECISIONS.names())}")
        if self.curriculum is not None and self.min_length is not None:
            raise ValueError("a curriculum sets each step's length, and min_length draws it at random: "
                             "use one or the other")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimisation step ``step`` (0-based): linear warm-up to ``lr``, then a
        cosine decay to ``lr * min_lr_ratio`` (a tenth, by default) at the last step."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        frac = (step - self.warmup) / max(1, self.steps - self.warmup)
        floor = self.min_lr_ratio
        return self.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@dataclass
class Progress:
    step: int  # steps done so far
    total: int  # steps in all
    loss: float  # mean loss of the last slice
    accuracy: float  # token accuracy on the answer positions of the last batch
    attentions: Optional[list[Tensor]] = None  # n_layer x (nh, T, T) on the watched example


@dataclass
class Trainer:
    model: GPT
    task: Task
    length: int  # task input length
    config: TrainConfig = field(default_factory=TrainConfig)
    watch: Optional[Tensor] = None  # (1, T) example whose attention is snapshot in progress reports

    def __post_init__(self):
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay, betas=(0.9, 0.99)
        )
        self.gen = torch.Generator().manual_seed(self.config.seed)
        self.step = 0
        self.history: list[tuple[int, float, float]] = []  # (step, loss, accuracy)
        self.seconds = 0.0  # wall time spent in optimisation steps

    @property
    def done(self) -> bool:
        return self.step >= self.config.steps

    def _lr(self) -> float:
        return self.config.lr_at(self.step)

    def length_at(self, step: int) -> int:
        """The sequence length of step ``step`` under the curriculum (the full length without one)."""
        if self.config.curriculum is None:
            return self.length
        return self.config.curriculum.length_at(step, self.length, self.config.steps)

    def train_step(self) -> tuple[float, float]:
        self.model.train()
        length = self.length_at(self.step)
        if self.config.min_length is not None:
            length = int(torch.randint(self.config.min_length, self.length + 1, (1,), generator=self.gen))
        device = model_device(self.model)
        x, y = move(self.task.batch(self.gen, self.config.batch_size, length), device)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        with PRECISIONS[self.config.precision].autocast(device.type):
            out = self.model(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        out.objective.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        with torch.no_grad():
            mask = y != IGNORE
            acc = (out.logits.argmax(-1)[mask] == y[mask]).float().mean().item()
        return out.loss.item(), acc

    def snapshot(self) -> Optional[list[Tensor]]:
        """Every layer's attention on the watched example: n_layer x (nh, T, T)."""
        if self.watch is None:
            return None
        self.model.eval()
        with torch.no_grad():
            return [w[0] for w in self.model(move(self.watch, model_device(self.model)), need_weights=True).attentions]

    def advance(self, steps: Optional[int] = None, seconds: Optional[float] = None) -> Progress:
        """Train for up to ``steps`` more steps (default: to the end) or ``seconds`` of wall time,
        whichever comes first; the ``Progress`` holds the mean loss and accuracy of these steps."""
        target = self.config.steps if steps is None else min(self.config.steps, self.step + steps)
        t0 = time.perf_counter()
        losses, accs = [], []
        while self.step < target:
            loss, acc = self.train_step()
            losses.append(loss)
            accs.append(acc)
            self.history.append((self.step, loss, acc))
            if seconds is not None and time.perf_counter() - t0 >= seconds:
                break
        self.seconds += time.perf_counter() - t0
        self.model.eval()
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        return Progress(self.step, self.config.steps, mean(losses), mean(accs))

    def run(self, steps: Optional[int] = None, callback: Optional[Callable[[Progress], None]] = None,
            every: int = 50) -> Progress:
        """Train ``steps`` more steps (default: to the end), calling ``callback`` every ``every``
        steps and at the end with the progress and a snapshot of the watched example's attention."""
        target = self.config.steps if steps is None else min(self.config.steps, self.step + steps)
        progress = Progress(self.step, self.config.steps, float("nan"), float("nan"))
        while self.step < target:
            progress = self.advance(min(every - self.step % every, target - self.step))
            if callback is not None:
                progress.attentions = self.snapshot()
                callback(progress)
        return progress


@torch.no_grad()
def evaluate(model: GPT, task: Task, length: int, batches: int = 4, batch_size: int = 256, seed: int = 1234):
    """Token accuracy and loss on fresh examples (teacher-forced, answer positions only)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    correct = total = 0
    loss = 0.0
    for _ in range(batches):
        x, y = task.batch(gen, batch_size, length)
        out = model(x, y)
        mask = y != IGNORE
        correct += (out.logits.argmax(-1)[mask] == y[mask]).sum().item()
        total += mask.sum().item()
        loss += out.loss.item()
    return {"accuracy": correct / total, "loss": loss / batches}
