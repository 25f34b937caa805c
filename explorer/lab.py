"""The Attention Lab's logic, free of any UI: settings -> configs, a training run that a page
keeps in its session, and the analysis of one input (tokens, attention, generated answer).

The page only reads widgets into ``LabSettings``, calls these functions and draws the results.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import torch

from .config import ModelConfig
from .cost import model_attention_flops
from .figures import md_escape
from .generate import generate
from .model import GPT, build_model, same_parameters, with_config
from .tasks import LETTERS, TASKS, Task
from .train import TrainConfig, Trainer

WIDTHS = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class LabSettings:
    task: str = "reverse"  # a name in explorer.tasks.TASKS
    length: int = 16  # input length the model is trained on
    attention: str = "softmax"  # a name in explorer.attention.ATTENTION
    window: int = 8  # window / block size for the kinds that use one
    n_head: int = 4  # attention heads
    encoding: str = "learned"  # a name in explorer.encodings.ENCODINGS
    n_layer: int = 2  # transformer blocks
    n_embd: int = 64  # width
    steps: int = 300  # training steps
    seed: int = 0  # seeds weights and data

    @property
    def task_obj(self) -> Task:
        try:
            return TASKS[self.task]
        except KeyError as e:
            raise ValueError(f"task = {self.task!r}: choose one of {', '.join(TASKS.names())}") from e

    def model_config(self) -> ModelConfig:
        """The model these settings describe; ``ValueError`` names the field that is wrong."""
        task = self.task_obj
        if not 2 <= self.length <= 32:
            raise ValueError(f"length = {self.length}: allowed range is 2 to 32")
        return ModelConfig(
            vocab_size=task.tokenizer.vocab_size, block_size=task.context(self.length), n_layer=self.n_layer,
            n_head=self.n_head, n_embd=self.n_embd, attention=self.attention, window=self.window,
            encoding=self.encoding,
        )

    def train_config(self) -> TrainConfig:
        if not 1 <= self.steps <= 20000:
            raise ValueError(f"steps = {self.steps}: allowed range is 1 to 20000")
        return TrainConfig(steps=self.steps, seed=self.seed)


FIELD_NAMES = tuple(f.name for f in fields(LabSettings))
_run_ids = itertools.count(1)


@dataclass
class LabRun:
    """One training run: the settings it was started with, its model and its trainer."""

    settings: LabSettings
    config: ModelConfig
    model: GPT
    trainer: Trainer
    id: int = field(default_factory=lambda: next(_run_ids))

    @classmethod
    def start(cls, settings: LabSettings, text: Optional[str] = None) -> "LabRun":
        """A fresh model and trainer; progress snapshots watch ``text`` (else the task's example)."""
        config = settings.model_config()
        model = build_model(config, settings.seed)
        task = settings.task_obj
        if text is None or not check_input(task, config, text, settings.length).ok:
            text = example(settings)[0]
        trainer = Trainer(model, task, settings.length, settings.train_config(), watch=watch_ids(task, text))
        return cls(settings, config, model, trainer)

    def differences(self, settings: LabSettings) -> list[str]:
        """The settings that differ from those this run was trained with."""
        return [n for n in FIELD_NAMES if getattr(settings, n) != getattr(self.settings, n)]

    def view(self, config: ModelConfig) -> tuple[GPT, bool]:
        """The trained weights read under ``config`` when the parameter shapes allow it (attention
        kind, window, heads): ``(model, True)``; otherwise the model as trained: ``(model, False)``."""
        if config == self.config:
            return self.model, True
        if same_parameters(config, self.config):
            return with_config(self.model, config), True
        return self.model, False


def watch_ids(task: Task, text: str) -> torch.Tensor:
    """``(1, T)`` ids of an input and its right answer (where the task has one) to watch in training."""
    expected = task.expected(text)
    full = text + task.separator + (expected or "")
    return torch.tensor([task.tokenizer.encode(full[:-1] if expected else full)])


def stack(attentions: list[torch.Tensor]) -> np.ndarray:
    """n_layer tensors (nh, T, T) -> one array (n_layer, nh, T, T)."""
    return torch.stack(attentions).numpy()


def example(settings: LabSettings) -> tuple[str, str]:
    """The default input (and its answer) for these settings: the same for the same seed."""
    gen = torch.Generator().manual_seed(settings.seed)
    return settings.task_obj.sample(gen, settings.length)


@dataclass
class InputCheck:
    ok: bool
    message: str = ""  # what is wrong and what to do


def check_input(task: Task, config: ModelConfig, text: str, length: int) -> InputCheck:
    """Validate a user's input before the model sees it."""
    if not text:
        return InputCheck(False, "The input is empty: type a few characters for the model to work on.")
    bad = task.tokenizer.unknown(text)
    if bad:
        shown = " ".join(md_escape(repr(c)) for c in bad[:10]) + (" …" if len(bad) > 10 else "")
        return InputCheck(False, f"The input has characters this task's vocabulary does not know: {shown}. "
                                 f"Use only {describe_chars(task.input_chars)}.")
    limit = length if task.symbolic else config.block_size - 1
    if len(text) > limit:
        return InputCheck(False, f"The input is {len(text)} characters long; this model's context fits at most "
                                 f"{limit}. Shorten it, or raise the length and retrain.")
    return InputCheck(True)


def describe_chars(chars: str) -> str:
    if chars == LETTERS:
        return "lowercase letters a-z"
    if chars.endswith(LETTERS):
        extra = " ".join({" ": "space", ".": "'.'"}.get(c, repr(c)) for c in chars[: -len(LETTERS)])
        return f"lowercase letters a-z, {extra}"
    return repr(chars)


@dataclass
class Analysis:
    tokens: list[str]  # every position's character: input, separator, answer
    attentions: np.ndarray  # (n_layer, nh, T, T) the weights the model applied
    answer: str  # what the model wrote
    probs: list[float]  # the probability it gave each written character
    expected: Optional[str]  # the right answer, where the task has one
    flops: float  # attention FLOPs of one forward pass over the whole sequence


@torch.no_grad()
def analyze(model: GPT, task: Task, text: str) -> Analysis:
    """Generate the answer to ``text`` and read the attention over input + answer."""
    prompt = text + task.separator
    if task.symbolic:
        gen = generate(model, task.tokenizer, prompt, task.answer_length(text))
    else:
        room = model.config.block_size - len(prompt)
        gen = generate(model, task.tokenizer, prompt, max(1, room), stop=".")
    ids = gen.ids[: model.config.block_size]
    out = model(torch.tensor([ids]), need_weights=True)
    return Analysis(
        tokens=list(task.tokenizer.decode(ids)), attentions=stack([w[0] for w in out.attentions]), answer=gen.text,
        probs=gen.probs, expected=task.expected(text), flops=model_attention_flops(model.config, len(ids)),
    )


def untrained(settings: LabSettings) -> GPT:
    return build_model(settings.model_config(), settings.seed).eval()
