"""Character-level language models on text: nanoGPT's CPU recipe, reproduced, and the app's default run.

nanoGPT (Karpathy, github.com/karpathy/nanoGPT) trains a "baby GPT" on Shakespeare one character at a
time. Its README's command for a laptop CPU::

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

i.e. 4 layers, 4 heads, width 128, context 64, batch 12, 2,000 steps, AdamW (lr 1e-3, betas 0.9 / 0.99,
weight decay 0.1), 100 warm-up steps, cosine decay to min_lr 1e-4 at step 2,000, gradients clipped at
1.0, no dropout; the README reports a held-out loss of about 1.88 nats per character.

``nanogpt_cpu()`` is that recipe run by this project's ``GPT`` and ``Trainer`` (one trainer for every
page); ``app_default()`` is the Training page's default text run, chosen by experiment to reach the
recipe's final held-out loss in at most half its wall time (``python -m explorer.bench charlm``
measures both, in one process, on one corpus split). ``train_curve`` trains a recipe and records the
held-out loss against training seconds (evaluation excluded) on fixed held-out windows.

Papers: Vaswani et al. 2017 (the transformer); Radford et al. 2019 (GPT-2: pre-LN, weight tying);
Loshchilov & Hutter 2019 (AdamW; SGDR's cosine schedule, 2017).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .config import ModelConfig
from .corpus import Corpus
from .model import GPT, build_model
from .train import TrainConfig, Trainer

EVAL_LENGTH = 64  # held-out windows are this long for every recipe (the nanoGPT recipe's context), so
#                   both curves are measured on the very same characters
EVAL_BATCHES = 16  # held-out batches per evaluation
EVAL_BATCH_SIZE = 32  # windows per held-out batch (16 x 32 x 64 = 32,768 characters per evaluation)
EVAL_SEED = 1234  # seeds the held-out windows: the same ones at every evaluation, for every recipe


@dataclass(frozen=True)
class Recipe:
    name: str  # shown in tables and plots
    n_layer: int  # transformer blocks
    n_head: int  # attention heads per block
    n_embd: int  # residual stream width
    context: int  # characters per training window (the model's block_size)
    batch_size: int  # windows per optimisation step
    lr: float  # peak learning rate (AdamW)
    warmup: int  # linear warm-up steps
    min_lr_ratio: float  # the cosine decay ends at lr * min_lr_ratio on the last step
    weight_decay: float  # AdamW's decoupled weight decay
    steps: int  # optimisation steps in all
    seed: int = 0  # seeds the model's weights and the stream of training windows

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, block_size=self.context, n_layer=self.n_layer,
                           n_head=self.n_head, n_embd=self.n_embd, attention="softmax", encoding="learned",
                           norm="layernorm", layout="pre_ln", ffn="dense", mlp_ratio=4)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           weight_decay=self.weight_decay, seed=self.seed, min_lr_ratio=self.min_lr_ratio)

    def trainer(self, corpus: Corpus) -> Trainer:
        """A fresh model and the project's ``Trainer`` for it on ``corpus``."""
        model = build_model(self.model_config(corpus.vocab_size), self.seed)
        return Trainer(model, corpus, self.context, self.train_config())

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context


def nanogpt_cpu() -> Recipe:
    """nanoGPT's CPU recipe (README, ``config/train_shakespeare_char.py`` with its command-line overrides),
    with this project's model and trainer. Differences from nanoGPT, all of them:

    - biases: nanoGPT's ``train.py`` defaults to ``bias=False`` (no bias in Linear or LayerNorm layers);
      this project's GPT has biases in every Linear (but the tied output layer) and LayerNorm;
    - initialisation: both draw weights from N(0, 0.02); nanoGPT also scales each residual projection
      (``c_proj``) to 0.02 / sqrt(2 * n_layer), this project does not;
    - weight decay 0.1: nanoGPT decays only 2-D tensors (matrices and embeddings), this project's AdamW
      decays every parameter, LayerNorm gains and biases included;
    - the schedule: nanoGPT warms up as lr * (it + 1) / (warmup + 1) and runs iterations 0 to 2,000
      (2,001 steps, the last at exactly min_lr); this project warms up as lr * (step + 1) / warmup and runs
      steps 0 to 1,999, the cosine reaching lr * min_lr_ratio at step 2,000;
    - held-out loss: nanoGPT estimates it on 20 random batches of 12 x 64 drawn anew at each evaluation;
      here it is measured on fixed windows (``EVAL_BATCHES`` x ``EVAL_BATCH_SIZE`` x ``EVAL_LENGTH``).

    The same: 4 blocks of pre-LN attention + GELU MLP (4x), learned positions, tied embeddings, no
    dropout, AdamW betas (0.9, 0.99), gradients clipped at norm 1.0, float32, last 10 % of the text held out.
    """
    return Recipe("nanoGPT CPU recipe", n_layer=4, n_head=4, n_embd=128, context=64, batch_size=12, lr=1e-3,
                  warmup=100, min_lr_ratio=0.1, weight_decay=0.1, steps=2000)


def app_default() -> Recipe:
    """The Training page's default text run: the recipe's width, heads and context, one block fewer, twice
    the batch, 8x the learning rate with half the warm-up, weight decay 0.01, 700 steps (by estimate from
    the recipe's ~70 ms per step alone, about a minute of one idle thread; not measured on an idle core). ``python -m explorer.bench charlm`` measures it against ``nanogpt_cpu``.

    Found by experiment on tinyshakespeare (held-out loss after the whole run, one thread, cores shared):
    the recipe's model at lr 3e-3 (batch 12, 900 steps) 1.995 and at 6e-3 1.965; batch 16, lr 6e-3, weight
    decay 0.01, 900 steps 1.896 (too many steps for half the time); width 96, batch 24-32, lr 8e-3-1e-2,
    600-700 steps 1.913-1.930; batch 32, lr 1e-2, 400 steps 1.971; 3 blocks, batch 24, lr 8e-3, 600 steps
    1.902 in the least time per step of these. Per token a bigger batch runs faster on a CPU (fewer, larger
    matrix products); a higher learning rate (warmed up, clipped) learns more per step in a short run;
    weight decay 0.1 at that rate shrinks every weight, LayerNorm gains included, more than it helps.
    """
    return Recipe("app default", n_layer=3, n_head=4, n_embd=128, context=64, batch_size=24, lr=8e-3,
                  warmup=50, min_lr_ratio=0.1, weight_decay=0.01, steps=700)


@dataclass
class Curve:
    recipe: Recipe
    threads: int  # torch threads the run had
    points: list[tuple[float, int, float]] = field(default_factory=list)  # (training seconds, step, held-out loss)
    stopped_early: bool = False  # max_seconds ran out before the recipe's last step

    @property
    def final_loss(self) -> float:
        return self.points[-1][2]

    @property
    def seconds(self) -> float:
        return self.points[-1][0]

    def time_to(self, loss: float) -> tuple[float, int] | None:
        """(training seconds, step) of the first evaluation at or below ``loss``; None if never."""
        for seconds, step, value in self.points:
            if value <= loss:
                return seconds, step
        return None

    def loss_at(self, seconds: float) -> float | None:
        """Held-out loss at the last evaluation at or before ``seconds`` of training; None if the run
        ended before ``seconds``."""
        if self.seconds < seconds:
            return None
        return [value for s, _, value in self.points if s <= seconds][-1]

    def to_json(self) -> dict:
        return {"recipe": self.recipe.__dict__, "threads": self.threads, "stopped_early": self.stopped_early,
                "points": [{"seconds": round(s, 3), "step": step, "loss": round(value, 4)}
                           for s, step, value in self.points]}


def held_out_loss(model: GPT, corpus: Corpus) -> float:
    """The loss on the fixed held-out windows every curve is measured on."""
    return corpus.held_out_loss(model, EVAL_LENGTH, EVAL_BATCHES, EVAL_BATCH_SIZE, EVAL_SEED)


def train_curve(recipe: Recipe, corpus: Corpus, eval_every_steps: int, max_seconds: float | None = None,
                threads: int = 1) -> Curve:
    """Train ``recipe`` on ``corpus`` with the project's ``Trainer`` and ``threads`` torch threads,
    measuring the held-out loss at step 0, every ``eval_every_steps`` steps and at the end; stop early
    after ``max_seconds`` of training (evaluation excluded) if given."""
    return train_curves([(recipe, eval_every_steps)], corpus, max_seconds, threads)[0]


def train_curves(runs: list[tuple[Recipe, int]], corpus: Corpus, max_seconds: float | None = None,
                 threads: int = 1) -> list[Curve]:
    """Several ``(recipe, eval_every_steps)`` runs trained **in turns** in this process: each trains to its
    next evaluation, then the next run does, so a change in the machine's load while they run falls on
    all of them alike (each curve's seconds are its own training seconds, evaluation excluded)."""
    for recipe, _ in runs:
        if recipe.context < EVAL_LENGTH:
            raise ValueError(f"context {recipe.context}: held-out windows are {EVAL_LENGTH} characters, so the "
                             f"context must be at least {EVAL_LENGTH}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainers = [recipe.trainer(corpus) for recipe, _ in runs]
        curves = [Curve(recipe, threads, [(0.0, 0, held_out_loss(tr.model, corpus))])
                  for (recipe, _), tr in zip(runs, trainers)]
        active = list(range(len(runs)))
        while active:
            for i in list(active):
                trainer, curve, every = trainers[i], curves[i], runs[i][1]
                budget = None if max_seconds is None else max_seconds - trainer.seconds
                if budget is not None and budget <= 0:
                    curve.stopped_early = True
                if trainer.done or curve.stopped_early:
                    active.remove(i)
                    continue
                trainer.advance(every - trainer.step % every, seconds=budget)
                curve.points.append((trainer.seconds, trainer.step, held_out_loss(trainer.model, corpus)))
        return curves
    finally:
        torch.set_num_threads(before)


def _timed_steps(recipe: Recipe, corpus: Corpus, steps: int, threads: int) -> float:
    """Seconds per training step over ``steps`` steps after a few warm-up steps (for tuning)."""
    torch.set_num_threads(threads)
    trainer = recipe.trainer(corpus)
    trainer.advance(3)
    t0 = time.perf_counter()
    trainer.advance(steps)
    return (time.perf_counter() - t0) / steps
