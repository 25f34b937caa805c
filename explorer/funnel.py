"""Hierarchical representations: a funnel model (the sequence pooled to half its length before
chosen blocks, causally, and handed back to full length for the outputs) beside the same model
flat, trained on the same task; the attention maps at each level over the merged tokens; and the
time per training step of both as the sequence grows.

Papers: Dai et al. 2020 (Funnel-Transformer); Nawrot et al. 2022 (Hierarchical Transformers Are
More Efficient Language Models: a causal "hourglass" that shortens, then upsamples).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .blocks import spans
from .config import ModelConfig
from .jobs import Job
from .model import GPT, build_model
from .runs import TrainJob, training_peak_bytes
from .tasks import TASKS
from .train import TrainConfig, Trainer

SWEEP_N = (256, 512, 1024, 2048)  # lengths the cost comparison measures
COST_BATCH = 2  # sequences per timed step (small: each timing is one slice of the server's scheduler)


@dataclass(frozen=True)
class FunnelSettings:
    pool_before: tuple = (1,)  # blocks before which the sequence is halved
    n_layer: int = 3  # blocks
    task: str = "reverse"  # a task in TASKS
    length: int = 8  # input length
    steps: int = 300  # training steps of each model
    seed: int = 0
    n_embd: int = 64  # width
    n_head: int = 4  # heads

    def config(self, funnel: bool = True) -> ModelConfig:
        t = TASKS[self.task]
        return ModelConfig(vocab_size=t.tokenizer.vocab_size, block_size=t.context(self.length), n_layer=self.n_layer,
                           n_embd=self.n_embd, n_head=self.n_head, funnel=tuple(self.pool_before) if funnel else ())

    def problem(self) -> Optional[str]:
        if not self.pool_before:
            return "choose at least one block to pool before (otherwise the funnel is the flat model)"
        try:
            self.config()
        except ValueError as e:
            return str(e)
        return None

    def jobs(self) -> list[TrainJob]:
        """The funnel and the flat model, each a shared training job."""
        out = []
        for funnel in (True, False):
            cfg, task = self.config(funnel), TASKS[self.task]

            def build(cfg=cfg, task=task) -> Trainer:
                return Trainer(build_model(cfg, self.seed), task, self.length, TrainConfig(steps=self.steps, seed=self.seed))

            out.append(TrainJob(("funnel", self, funnel), "training the funnel" if funnel else "training the flat model",
                                build, training_peak_bytes(cfg, TrainConfig.batch_size, cfg.block_size),
                                max_checkpoints=0))  # its page never rewinds: no checkpoints to keep
        return out


def url_defaults() -> dict:
    d = FunnelSettings()
    return {"moe_fun_pool": list(d.pool_before), "moe_fun_steps": d.steps, "moe_fun_level": 0}


def levels(config: ModelConfig) -> list[int]:
    """The level (0 = full length, 1 = halved once, ...) each block reads."""
    return [sum(1 for p in config.funnel if p <= i) for i in range(config.n_layer)]


def level_names(settings: FunnelSettings) -> list[str]:
    """One name per level of the funnel: its length on the task's sequences and its blocks."""
    cfg = settings.config()
    lv = levels(cfg)
    T = cfg.block_size
    return [f"level {x}: {T // 2 ** x} tokens (block{'s' if lv.count(x) > 1 else ''} "
            f"{', '.join(str(i) for i, y in enumerate(lv) if y == x)})" for x in sorted(set(lv))]


@dataclass
class LevelMaps:
    level: int
    blocks: list  # the blocks at this level
    labels: list  # one label per (merged) token: the characters it covers
    maps: np.ndarray  # (blocks at this level, heads, T', T')


def example_maps(model: GPT, settings: FunnelSettings) -> list[LevelMaps]:
    """The maps on the task's seeded example followed by the model's own answer."""
    from .generate import generate

    task = TASKS[settings.task]
    text, _ = task.sample(torch.Generator().manual_seed(settings.seed), settings.length)
    gen = generate(model, task.tokenizer, text + task.separator, settings.length)
    ids = gen.ids[: model.config.block_size]
    return maps_for(model, ids, [task.tokenizer.decode([i]) for i in ids])


def maps_for(model: GPT, ids: list[int], chars: list[str]) -> list[LevelMaps]:
    """Attention of every block on the token ids, grouped by level, each merged token labelled with
    the characters it averages."""
    model.eval()
    with torch.no_grad():
        trace = model(torch.tensor([ids]), capture=["blocks.*.attn.pattern"]).trace
    lv = levels(model.config)
    cover = spans(len(ids), max(lv) if lv else 0)
    out = []
    for level in sorted(set(lv)):
        blocks = [i for i, x in enumerate(lv) if x == level and f"blocks.{i}.attn.pattern" in trace]
        if not blocks:
            continue
        labels = ["".join(chars[a:b + 1]) for a, b in cover[level]]
        maps = np.stack([trace[f"blocks.{i}.attn.pattern"][0].numpy() for i in blocks])
        out.append(LevelMaps(level, blocks, labels, maps))
    return out


class CostJob(Job):
    """The cost comparison as a job, one (model, length) per slice so that Stop and shutdown take
    effect between measurements; shared by key."""

    def __init__(self, settings: FunnelSettings, lengths=SWEEP_N):
        self.settings, self.lengths = settings, tuple(lengths)
        self.key = ("funnel-cost", settings.pool_before, settings.n_layer, settings.n_embd, settings.n_head, self.lengths)
        self.title = "timing the funnel and the flat model"
        self.peak_bytes = 4e8
        self._todo = [(funnel, n) for funnel in (True, False) for n in self.lengths]
        self._done: dict = {}

    def step(self, slice_s: float) -> bool:
        from .experts import step_ms

        funnel, n = self._todo.pop(0)
        cfg = self.settings.config(funnel)
        self._done[(funnel, n)] = round(step_ms(dataclasses.replace(cfg, block_size=int(n)), int(n), batch=COST_BATCH,
                                                repeats=3), 2)
        return not self._todo

    def result(self) -> dict:
        out = {}
        for funnel in (True, False):
            cfg = self.settings.config(funnel)
            name = f"funnel (pool before {', '.join(map(str, cfg.funnel))})" if funnel else "flat"
            out[name] = (list(self.lengths), [self._done.get((funnel, n)) for n in self.lengths])
        return out

    def progress(self) -> tuple[float, str]:
        total = 2 * len(self.lengths)
        return (total - len(self._todo)) / total, f"{total - len(self._todo)} of {total} timings"


def cost_job(settings: FunnelSettings, lengths=SWEEP_N) -> CostJob:
    return CostJob(settings, lengths)


MODEL_MAX_N = 2048  # the Complexity page times whole models up to this length (each timing one slice)


def cost_finding(series: dict) -> str:
    """What the timing shows, from the numbers."""
    (fname, (ns, f)), (_, (_, flat)) = list(series.items())
    ratios = [a / b for a, b in zip(f, flat)]
    return (f"At N = {ns[0]:,} the {fname} takes {ratios[0]:.0%} of the flat model's time per step; at N = {ns[-1]:,}, "
            f"{ratios[-1]:.0%}. The blocks after a pooling attend over half as many tokens (a quarter of the scores) "
            f"and run their MLPs on half as many, while the first block still reads every token.")


def loss_series(funnel_run, flat_run, settings: FunnelSettings) -> dict:
    """Training loss by step of both models (thinned to about 60 points each)."""
    out = {}
    for name, run in ((f"funnel (pool before {', '.join(map(str, settings.pool_before))})", funnel_run),
                      ("flat", flat_run)):
        hist = run.history[:: max(1, len(run.history) // 60)]
        out[name] = ([h[0] for h in hist], [h[1] for h in hist])
    return out


def run_finding(funnel_run, flat_run, settings: FunnelSettings) -> str:
    """Loss and time per step of both, from the runs."""
    def ms(run):
        return 1000 * run.seconds / max(1, run.step)

    last = lambda run: float(np.mean([h[1] for h in run.history[-20:]]))  # noqa: E731
    saved = 1 - ms(funnel_run) / ms(flat_run)
    return (f"After {funnel_run.step} steps: funnel loss {last(funnel_run):.3f} at {ms(funnel_run):.0f} ms a step, flat "
            f"{last(flat_run):.3f} at {ms(flat_run):.0f} ms a step (training loss, mean of the last 20 steps). At "
            f"{settings.config().block_size} tokens the funnel's time per step is {abs(saved):.0%} "
            f"{'shorter' if saved >= 0 else 'longer'}; the timing below shows longer sequences.")
