"""In-context learning and induction heads: a two-layer attention-only transformer trained on the
``induction`` task (a random sequence, then the same again), watched as it trains.

Olsson et al. 2022 ("In-context Learning and Induction Heads") find that in-context learning, a
loss that falls the further a token is into its context, appears suddenly, in a *phase change*,
at the moment *induction heads* form; Elhage et al. 2021 ("A Mathematical Framework for Transformer
Circuits") explain the circuit in a two-layer attention-only model: a layer-0 *previous-token head*
writes "the token before me was A" into each position, and a layer-1 *induction head* at a token
A attends to the position just after an earlier A (its key holds "the token before me was A") and
copies the token found there. On a repeated random sequence the second copy becomes predictable,
the first never is.

Figures, each from one forward pass over repeated random sequences of period ``L`` (the tokens at
``i`` and ``i - L`` are equal for every ``i >= L``), read from the hook point
``blocks.{l}.attn.pattern`` (``(B, nh, T, T)`` attention weights):

- **previous-token score** of a head: its mean attention weight from position ``i`` to ``i - 1``,
  over every ``i >= 1`` (1 for a perfect previous-token head);
- **induction score** of a head: its mean attention weight, over the positions ``i`` of the second
  copy (``L <= i < T``), from ``i`` to ``i - L + 1``, the position just after the earlier
  occurrence of token ``i`` (TransformerLens's score of Olsson et al.; 1 for a perfect induction head);
- **first-half loss**: cross-entropy of the predictions of tokens ``1 .. L-1`` (random: at best
  ``ln(vocab)``); **repeated-half loss** (the in-context loss): of the predictions made from the
  second copy's positions ``L .. 2L-2``, whose next token already appeared once.

**Ablation** zeroes one head's output (``blocks.{l}.attn.z``, head ``h``, through the forward pass's
``edit``) and measures again: removing the layer-0 previous-token head should take the layer-1
induction head's score (and the in-context loss) down with it: the circuit is causal, not a
correlation.

Training goes through the one trainer (``explorer.train.Trainer``) as a ``TrainJob`` with a
``Probe``: every ``check_every`` steps the figures above land in the published run's ``probes``.
Each training step draws the period from ``[min_length, length]``, so no head can find the earlier
copy by position alone: only by content, through the previous-token head.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import ModelConfig
from .model import GPT, build_model
from .runs import Probe, TrainJob, training_peak_bytes
from .tasks import LETTERS, TASKS
from .train import TrainConfig, Trainer

THRESHOLD = 0.5  # an induction score at or above this marks the head as formed (the phase change)


@dataclass(frozen=True)
class InductionSettings:
    length: int = 16  # longest period L of the repeat; the model reads 2L - 1 tokens
    min_length: int = 8  # shortest period: each training step draws L from [min_length, length]
    n_embd: int = 64  # residual stream width
    n_head: int = 4  # heads per layer
    encoding: str = "rope"  # positional encoding (RoPE: a head reads relative offsets, so "previous token" is easy)
    steps: int = 2000  # training steps
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak learning rate (AdamW)
    warmup: int = 30  # warm-up steps
    seed: int = 0  # seeds the weights and the training sequences
    check_every: int = 25  # steps between measurements (scores and losses)
    eval_batch: int = 64  # repeated sequences each measurement reads (always period ``length``)
    eval_seed: int = 1234  # seeds those sequences: the same at every check, never the training stream

    def model_config(self) -> ModelConfig:
        """Two layers of attention, no MLP (``ffn="none"``)."""
        return ModelConfig(vocab_size=len(LETTERS), block_size=2 * self.length, n_layer=2, n_head=self.n_head,
                           n_embd=self.n_embd, encoding=self.encoding, ffn="none")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                           seed=self.seed, min_length=self.min_length)


class RepeatedSequences:
    """The ``induction`` task with every next token a target (the first copy too: the model learns
    that it cannot predict it), as the trainer's task: ``batch(gen, B, L) -> (x, y)``, each
    ``(B, 2L - 1)``."""

    task = TASKS["induction"]

    def batch(self, gen: torch.Generator, batch_size: int, length: int) -> tuple[Tensor, Tensor]:
        x, y = self.task.batch(gen, batch_size, length)  # y masked over the first copy
        return x, torch.cat([x[:, 1:], y[:, -1:]], dim=1)  # (B, 2L - 1): the sequence shifted by one


def distinct_repeats(gen: torch.Generator, batch_size: int, length: int, vocab: int) -> tuple[Tensor, Tensor]:
    """Repeated sequences whose first copy has ``length`` distinct tokens (drawn at random from
    ``vocab``), so every token of the second copy has exactly one earlier occurrence and the
    induction score's target position is unambiguous: ``(x, y)``, each ``(B, 2L - 1)``."""
    if not 1 <= length <= vocab:
        raise ValueError(f"length = {length}: a copy of distinct tokens needs 1 to {vocab} of them")
    src = torch.rand(batch_size, vocab, generator=gen).argsort(dim=1)[:, :length]  # (B, L) distinct ids
    seq = torch.cat([src, src], dim=1)  # (B, 2L)
    return seq[:, :-1], seq[:, 1:]


def eval_batch(settings: InductionSettings) -> tuple[Tensor, Tensor]:
    """The measurement's fixed repeated sequences (period ``length``, distinct tokens in a copy:
    ``distinct_repeats``): ``(x, y)`` of ``(eval_batch, 2 * length - 1)``."""
    return distinct_repeats(torch.Generator().manual_seed(settings.eval_seed), settings.eval_batch, settings.length,
                            len(LETTERS))


# ---------------------------------------------------------------------------------------------- scores
def prev_token_score(pattern: Tensor) -> Tensor:
    """``(B, nh, T, T)`` attention weights -> ``(nh,)``: each head's mean weight from position ``i``
    to ``i - 1``, over every ``i >= 1`` and the batch."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))  # diagonal: (B, nh, T-1)


def induction_score(pattern: Tensor, period: int) -> Tensor:
    """``(B, nh, T, T)`` attention weights over sequences repeating with ``period`` L -> ``(nh,)``:
    each head's mean weight from position ``i`` to ``i - L + 1`` (just after the earlier
    occurrence of token ``i``), over the second copy's positions ``L <= i < T`` and the batch."""
    T = pattern.shape[-1]
    if not 1 <= period < T:
        raise ValueError(f"period = {period}: needs 1 <= period < T = {T}")
    stripe = pattern.diagonal(offset=1 - period, dim1=-2, dim2=-1)  # (B, nh, T-L+1): i = L-1 .. T-1
    return stripe[..., 1:].mean(dim=(0, 2))  # i = L .. T-1


def ablate_head(layer: int, head: int) -> dict:
    """The forward pass's ``edit`` that zeroes head ``head``'s output in layer ``layer`` (its
    ``blocks.{layer}.attn.z``, ``(B, nh, T, hs)``), leaving every other head as it was."""
    def zero(z: Tensor) -> Tensor:
        z = z.clone()
        z[:, head] = 0
        return z

    return {f"blocks.{layer}.attn.z": zero}


@torch.no_grad()
def measure(model: GPT, x: Tensor, y: Tensor, period: int, edit: Optional[dict] = None) -> dict:
    """Every head's scores and the two half losses on repeated sequences ``x`` (``(B, 2L-1)``,
    targets ``y``) of ``period`` L, optionally with an ``edit`` (an ablation). Returns
    ``{"induction": [[score] * n_head] * n_layer, "prev_token": (same), "loss_first": float,
    "loss_repeat": float}``."""
    model.eval()
    out = model(x, capture=["blocks.*.attn.pattern"], edit=edit)
    layers = out.attentions  # n_layer x (B, nh, T, T)
    logp = F.log_softmax(out.logits.float(), dim=-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, T): position i predicts token i + 1
    return {"induction": [induction_score(p, period).tolist() for p in layers],
            "prev_token": [prev_token_score(p).tolist() for p in layers],
            "loss_first": nll[:, : period - 1].mean().item(),  # predictions of tokens 1 .. L-1
            "loss_repeat": nll[:, period:].mean().item()}  # from positions L .. 2L-2


def best_head(scores: list[list[float]], layers: Optional[range] = None) -> tuple[int, int, float]:
    """``(layer, head, score)`` of the highest score (over ``layers``, default all)."""
    layers = range(len(scores)) if layers is None else layers
    return max(((l, h, s) for l in layers for h, s in enumerate(scores[l])), key=lambda t: t[2])


def probe(settings: InductionSettings) -> Probe:
    """What the training job measures every ``check_every`` steps (``measure`` on the fixed sequences)."""
    x, y = eval_batch(settings)
    return Probe(lambda model: measure(model, x, y, settings.length), settings.check_every)


# ---------------------------------------------------------------------------------------------- training
def build_trainer(settings: InductionSettings) -> Trainer:
    return Trainer(build_model(settings.model_config(), settings.seed), RepeatedSequences(), settings.length,
                   settings.train_config())


def training_job(settings: InductionSettings) -> TrainJob:
    """The scheduler job that trains the attention-only model (shared by key: the full settings).
    Its published ``TrainedRun.probes`` hold ``(step, measure(...))`` every ``check_every`` steps."""
    config = settings.model_config()
    return TrainJob(("incontext", settings), "training a two-layer attention-only model on repeated sequences",
                    lambda: build_trainer(settings),
                    training_peak_bytes(config, settings.batch_size, 2 * settings.length - 1), probe=probe(settings),
                    max_checkpoints=0)  # its page never rewinds: no checkpoints to keep


def phase_change(probes: list, threshold: float = THRESHOLD) -> Optional[dict]:
    """The first measurement at which some head's induction score reaches ``threshold``, from a
    run's ``probes`` (``(step, figures)``), or None. Returns its step, the head, and the losses then
    beside those of the first measurement (the repeated-half loss's drop is the phase change)."""
    if not probes:
        return None
    first = probes[0][1]
    for step, m in probes:
        layer, head, score = best_head(m["induction"])
        if score >= threshold:
            return {"step": step, "layer": layer, "head": head, "induction_score": score,
                    "train_seconds": m.get("train_seconds"), "loss_first": m["loss_first"], "loss_repeat": m["loss_repeat"],
                    "loss_repeat_at_start": first["loss_repeat"], "loss_first_at_start": first["loss_first"],
                    "loss_repeat_drop": first["loss_repeat"] - m["loss_repeat"],
                    "in_context_gap": m["loss_first"] - m["loss_repeat"]}
    return None


@torch.no_grad()
def ablation(model: GPT, settings: InductionSettings) -> dict:
    """For a trained model: the best induction head (over layers >= 1), the best previous-token
    head of layer 0, and every head's scores and the half losses with nothing ablated, with that
    previous-token head ablated, and (for comparison) with the layer-0 head of the lowest
    previous-token score ablated (not a null control: in the bench's model that head matters too).
    Each is ``measure``'s dict; heads are ``[layer, head, score]``."""
    x, y = eval_batch(settings)
    base = measure(model, x, y, settings.length)
    ind = best_head(base["induction"], range(1, len(base["induction"])))
    prev = best_head(base["prev_token"], range(0, 1))
    other = min(((0, h, s) for h, s in enumerate(base["prev_token"][0])), key=lambda t: t[2])
    out = {"induction_head": list(ind), "prev_token_head": list(prev), "comparison_head": list(other),
           "clean": base, "ablated": measure(model, x, y, settings.length, ablate_head(*prev[:2]))}
    if other[1] != prev[1]:
        out["comparison"] = measure(model, x, y, settings.length, ablate_head(*other[:2]))
    return out


def train(settings: InductionSettings, until_formed: bool = False) -> tuple[GPT, list, float]:
    """Train in this thread (the bench and tests; the page submits ``training_job`` instead):
    the model, its probes and the wall seconds it took (measurements included; each probe has the
    training seconds alone). ``until_formed`` stops within a quarter second after the first check
    at which an induction score reaches ``THRESHOLD``."""
    job = training_job(settings)
    t0 = time.perf_counter()
    while not job.step(0.25):
        if until_formed and phase_change(job.live().probes) is not None:
            break
    run = job.live()
    return run.model, run.probes, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- the page's views
STEP_CHOICES = (250, 500, 1000, 1500, 2000, 3000, 4000)  # training steps the page offers


def url_defaults() -> dict:
    d = InductionSettings()
    from .fewshot import FewShotSettings

    f = FewShotSettings()
    return {"icl_tab": "Induction heads", "icl_steps": d.steps, "icl_heads": d.n_head, "icl_length": d.length,
            "icl_encoding": d.encoding, "icl_seed": d.seed, "icl_ablate": NO_ABLATION, "icl_example": 0,
            "icl_fs_steps": f.steps, "icl_fs_seed": f.seed}


NO_ABLATION = "none"


def head_name(layer: int, head: int) -> str:
    return f"L{layer} H{head}"


def head_choices(settings: InductionSettings) -> list[str]:
    return [NO_ABLATION] + [head_name(l, h) for l in range(2) for h in range(settings.n_head)]


def induction_title(layer: int, head: int, score: float) -> str:
    """A map's title: "the induction head" only once its score has reached ``THRESHOLD``."""
    if score >= THRESHOLD:
        return f"{head_name(layer, head)}: the induction head (score {score:.2f})"
    return f"{head_name(layer, head)}: layer {layer}'s highest induction score ({score:.2f}), not an induction head yet"


def layer_heads(settings: InductionSettings, layer: int) -> list[str]:
    return [head_name(layer, h) for h in range(settings.n_head)]


def parse_head(name: str) -> Optional[tuple[int, int]]:
    if name == NO_ABLATION:
        return None
    layer, head = name.split()
    return int(layer[1:]), int(head[1:])


def loss_series(probes: list) -> dict:
    steps = [s for s, _ in probes]
    return {"first half (random: unpredictable)": (steps, [m["loss_first"] for _, m in probes]),
            "repeated half (in context)": (steps, [m["loss_repeat"] for _, m in probes])}


def score_series(probes: list, key: str) -> dict:
    """One line per head: ``key`` is "induction" or "prev_token"."""
    if not probes:
        return {}
    steps = [s for s, _ in probes]
    first = probes[0][1][key]
    return {head_name(l, h): (steps, [m[key][l][h] for _, m in probes])
            for l in range(len(first)) for h in range(len(first[l]))}


@torch.no_grad()
def example_maps(model: GPT, settings: InductionSettings, index: int = 0, edit: Optional[dict] = None) -> dict:
    """One of the measurement's sequences (its letters) and every head's attention on it:
    ``{"tokens": [...], "patterns": (n_layer, nh, T, T) numpy}``."""
    x, _ = eval_batch(settings)
    row = x[index % x.shape[0]: index % x.shape[0] + 1]
    out = model.eval()(row, capture=["blocks.*.attn.pattern"], edit=edit)
    import numpy as np

    return {"tokens": [LETTERS[int(i)] for i in row[0]],
            "patterns": np.stack([p[0].numpy() for p in out.attentions])}


def ablation_rows(model: GPT, settings: InductionSettings, head: Optional[tuple[int, int]]) -> tuple[dict, dict]:
    """Every head's scores and the half losses, intact and with ``head`` ablated (None: intact twice)."""
    x, y = eval_batch(settings)
    clean = measure(model, x, y, settings.length)
    return clean, (clean if head is None else measure(model, x, y, settings.length, ablate_head(*head)))


def findings(probes: list, clean: Optional[dict] = None, head: Optional[tuple[int, int]] = None,
             ablated: Optional[dict] = None) -> list[str]:
    """What came out of a run, in sentences: the phase change from its probes; the strongest heads
    from ``clean`` (``measure`` on the model shown; default the last probe); and, with ``head``
    ablated, what changed (``ablated``: ``measure`` with that head zeroed)."""
    if not probes:
        return []
    out = []
    pc = phase_change(probes)
    last_step, last = probes[-1]
    now = clean if clean is not None else last
    layer, head_i, score = best_head(now["induction"], range(1, len(now["induction"])))
    if pc is None:
        out.append(f"No head's induction score has reached {THRESHOLD} yet (the best in the last layer: "
                   f"{head_name(layer, head_i)} at {score:.2f}, step {last_step}).")
    else:
        secs = f" after {pc['train_seconds']:.0f} s of training" if pc.get("train_seconds") is not None else ""
        out.append(f"**The phase change**: {head_name(pc['layer'], pc['head'])}'s induction score crossed {THRESHOLD} at "
                   f"step {pc['step']}{secs}. By then the repeated-half loss had fallen from "
                   f"{pc['loss_repeat_at_start']:.2f} to {pc['loss_repeat']:.2f} nats, while the first half's went from "
                   f"{pc['loss_first_at_start']:.2f} to {pc['loss_first']:.2f} (random letters: no model does better "
                   f"than ln {len(LETTERS)} = {math.log(len(LETTERS)):.2f}).")
    p_layer, p_head, p_score = best_head(now["prev_token"], range(0, 1))
    out.append(f"In layer 0, {head_name(p_layer, p_head)} is the strongest previous-token head (score {p_score:.2f}); "
               f"in layer 1 the strongest induction head is {head_name(layer, head_i)} ({score:.2f}).")
    if head is not None and ablated is not None:
        out.append(f"With {head_name(*head)} ablated (its output zeroed), {head_name(layer, head_i)}'s induction "
                   f"score goes from {now['induction'][layer][head_i]:.2f} to {ablated['induction'][layer][head_i]:.2f} "
                   f"and the repeated-half loss from {now['loss_repeat']:.2f} to {ablated['loss_repeat']:.2f} nats.")
    return out


# ---------------------------------------------------------------------------------------------- few-shot views
FEWSHOT_REFERENCES = ("best possible", "chance")


def fewshot_series(rows: list) -> dict:
    """Accuracy against the number of examples (``fewshot.accuracy_by_shots`` rows), beside the
    best possible and chance."""
    ks = [r["shots"] for r in rows]
    seen = [(r["shots"], r["accuracy_seen"]) for r in rows if r["accuracy_seen"] is not None]
    return {"model": (ks, [r["accuracy"] for r in rows]),
            "model, when the query was among the examples": ([k for k, _ in seen], [a for _, a in seen]),
            "best possible": (ks, [r["ideal"] for r in rows]), "chance": (ks, [r["chance"] for r in rows])}


def fewshot_findings(rows: list) -> list[str]:
    if not rows:
        return []
    by = {r["shots"]: r for r in rows}
    lo, hi = min(by), max(by)
    best = (f"the best possible is {by[hi]['ideal']:.0%}: a query whose letter was not among the examples can only be "
            "guessed" if by[hi]["ideal"] < 1 else "the best possible is 100%: every letter was among the examples")
    out = [f"With {lo} examples the model is right {by[lo]['accuracy']:.0%} of the time (chance: {by[lo]['chance']:.0%}); "
           f"with {hi}, {by[hi]['accuracy']:.0%} ({best})."]
    shown = [r for r in rows if r["accuracy_seen"] is not None]
    if shown:
        best = max(shown, key=lambda r: r["accuracy_seen"])
        k, acc, chance = best["shots"], best["accuracy_seen"], best["chance"]
        if acc >= 2 * chance:
            out.append(f"When the query's letter was among the examples it is right up to {acc:.0%} of the time "
                       f"(with {k} example{'s' if k != 1 else ''}), on mappings it never saw in training, where chance is {chance:.0%}: it reads "
                       "the answer from the prompt.")
        else:
            out.append(f"Even when the query's letter was among the examples it is right at most {acc:.0%} of the time "
                       f"(chance: {chance:.0%}): it has not learned to read the answer from the prompt yet.")
    unseen = [r["accuracy_unseen"] for r in rows if r["accuracy_unseen"] is not None]
    if unseen:
        span = f"{min(unseen):.0%}" if f"{min(unseen):.0%}" == f"{max(unseen):.0%}" else f"{min(unseen):.0%}–{max(unseen):.0%}"
        out.append(f"When it was not, it is right {span} of the time: nothing in the prompt tells the answer, so the "
                   "best it can do is guess.")
    return out


@torch.no_grad()
def fewshot_example(model: Optional[GPT], settings, shots: int, seed: int = 0) -> dict:
    """A held-out prompt with ``shots`` examples whose query letter is among them (the first such
    from ``seed`` on), its answer, and (given a model) what the model says."""
    from .fewshot import prompt_text, prompts

    shown = prompt_text(settings, shots, seed)
    while not shown["seen"]:
        seed += 1
        shown = prompt_text(settings, shots, seed)
    shown["said"] = None
    if model is not None:
        ids, _, _, _ = prompts(torch.Generator().manual_seed(seed), 1, shots, settings, "held_out")
        shown["said"] = settings.tokenizer.decode([int(model.eval()(ids).logits[0, -1].argmax())])
    return shown
