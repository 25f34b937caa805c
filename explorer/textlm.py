"""A character-level language model trained on a text: the built-in novel or the user's own.

The recipe is that of the minimal GPT trainers (Karpathy's char-rnn and nanoGPT's
``shakespeare_char``, after Radford et al. 2018/2019, "Improving Language Understanding by
Generative Pre-Training" / "Language Models are Unsupervised Multitask Learners"): one token per
character, a decoder-only transformer predicting the next character at every position, AdamW
(Loshchilov & Hutter 2019) with a linear warm-up and a cosine decay (Loshchilov & Hutter 2017,
SGDR), the last tenth of the text held out to measure what it learned. Sampling writes past the
context the way nanoGPT's ``sample.py`` does: the model re-reads only its last ``context``
characters; temperature and top-k (Fan et al. 2018) shape each draw.

Training goes through the one trainer (``explorer.train.Trainer``; a ``Corpus`` has the
``Task.batch`` call) as a ``TrainJob`` with a ``Probe``: every ``every`` steps the held-out loss and
a short sample land in the published run's ``probes``, so the page can print samples as training
goes. The functions after ``training_job`` turn a run into what the page draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .charlm import app_default
from .config import ModelConfig
from .corpus import BUILTIN, Corpus
from .device import pick_device
from .generate import Generation, generate
from .model import GPT, build_model
from .runs import Probe, TrainedRun, TrainJob, training_peak_bytes
from .tasks import UnknownCharacters
from .train import TrainConfig, Trainer


_APP = app_default()  # the defaults: the run `python -m explorer.bench charlm` measures against nanoGPT's recipe


@dataclass(frozen=True)
class TextSettings:
    corpus: str = BUILTIN  # the corpus's name: "emma" (built in) or the uploaded file's name
    digest: str = ""  # sha256 of the corpus's text (``Corpus.digest``), never the text itself; "" = the built-in corpus
    n_layer: int = _APP.n_layer  # transformer blocks
    n_head: int = _APP.n_head  # attention heads per block; must divide n_embd
    n_embd: int = _APP.n_embd  # residual stream width
    context: int = _APP.context  # characters the model reads at once (block size); training windows are this long
    attention: str = "softmax"  # attention kind, a name in explorer.attention.ATTENTION
    encoding: str = "learned"  # positional encoding, a name in explorer.encodings.ENCODINGS
    batch_size: int = _APP.batch_size  # windows per training step
    lr: float = _APP.lr  # peak learning rate (AdamW), after warm-up, then cosine decay to a tenth
    warmup: int = _APP.warmup  # warm-up steps (linear, from lr / warmup up to lr)
    steps: int = _APP.steps  # optimisation steps in all
    seed: int = _APP.seed  # seeds the weights and the stream of training windows
    every: int = 100  # steps between measurements (held-out loss and a sample), step 0 included
    eval_batches: int = 8  # held-out batches of batch_size windows per measurement (fixed windows, seed 1234)
    sample_chars: int = 160  # characters each measurement's sample writes
    sample_temperature: float = 0.8  # temperature of those samples (nanoGPT's sample.py default)

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The model for a corpus of ``vocab_size`` characters; ``ValueError`` names a wrong field."""
        return ModelConfig(vocab_size=vocab_size, block_size=self.context, n_layer=self.n_layer, n_head=self.n_head,
                           n_embd=self.n_embd, attention=self.attention, encoding=self.encoding)

    def train_config(self) -> TrainConfig:
        for name, lo, hi in (("steps", 1, 50_000), ("batch_size", 1, 512), ("every", 1, 50_000),
                             ("warmup", 0, 50_000), ("context", 2, 1024)):
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(f"{name} = {value}: allowed range is {lo} to {hi}")
        if not 1e-6 <= self.lr <= 1.0:
            raise ValueError(f"lr = {self.lr}: allowed range is 1e-6 to 1")
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=max(1, self.warmup),
                           weight_decay=_APP.weight_decay, min_lr_ratio=_APP.min_lr_ratio, seed=self.seed)

    def problem(self, vocab_size: int) -> Optional[str]:
        """Why these settings cannot train a model on a text of ``vocab_size`` characters, or None."""
        try:
            self.model_config(vocab_size)
            self.train_config()
        except ValueError as e:
            return str(e)
        return None


def settings_for(corpus: Corpus, **fields) -> TextSettings:
    """Settings naming ``corpus`` (its name and digest) with the other fields given."""
    return TextSettings(corpus=corpus.name, digest=corpus.digest, **fields)


def check_corpus(settings: TextSettings, corpus: Corpus) -> None:
    """``ValueError`` unless ``settings`` name ``corpus`` (an empty digest stands for the built-in)."""
    wanted = settings.digest or (corpus.digest if settings.corpus == BUILTIN else "")
    if settings.corpus != corpus.name or wanted != corpus.digest:
        raise ValueError(f"these settings are for the text {settings.corpus!r}, not {corpus.name!r}")


# ---------------------------------------------------------------------------------------------- the page's controls
STEP_CHOICES = (100, 250, 500, 700, 1000, 1500, 2000, 3000, 5000)
LAYER_RANGE = (1, 6)
HEAD_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16)
WIDTH_CHOICES = (32, 64, 96, 128, 192, 256)
CONTEXT_CHOICES = (16, 32, 64, 128, 256)
BATCH_CHOICES = (8, 12, 16, 24, 32, 64, 128)
LR_CHOICES = (3e-4, 6e-4, 1e-3, 2e-3, 3e-3, 6e-3, 8e-3, 1e-2)
TOP_K_CHOICES = (1, 2, 3, 5, 10, 20, 40, 0)  # 0: no top-k (every character may be drawn)
URL_CONTROLS = {  # the page's URL key -> the TextSettings field it sets
    "tr_layers": "n_layer", "tr_heads": "n_head", "tr_width": "n_embd", "tr_context": "context",
    "tr_attention": "attention", "tr_encoding": "encoding", "tr_batch": "batch_size", "tr_lr": "lr",
    "tr_steps": "steps", "tr_seed": "seed",
}
SAMPLE_DEFAULTS = {"tr_prompt": "", "tr_chars": 300, "tr_temperature": 0.8, "tr_top_k": 0, "tr_sample_seed": 0,
                   "tr_layer": 0, "tr_head": 0}


def url_defaults() -> dict:
    """Every control of the page at its default (what a lesson starts from)."""
    d = TextSettings()
    from . import methods, train_ddp

    return {"tr_tab": "Train on text", "tr_source": SOURCES[0]} | {
        key: getattr(d, name) for key, name in URL_CONTROLS.items()} | SAMPLE_DEFAULTS | methods.url_defaults() \
        | train_ddp.url_defaults()


SOURCES = ("Jane Austen, Emma", "Your own text")  # the corpus choice


def run_device() -> torch.device:
    """Where the page's runs train: a CUDA GPU when one is available, else the CPU
    (``explorer.device.pick_device``). What the page shows of a run (its published copy) is on the CPU."""
    return pick_device()


# ---------------------------------------------------------------------------------------------- sampling
class PromptError(ValueError):
    """A prompt the model cannot read; the message says why."""


def sample(model: GPT, corpus: Corpus, prompt: str, n: int, temperature: float = 0.8, top_k: Optional[int] = None,
           seed: int = 0) -> Generation:
    """Continue ``prompt`` by ``n`` characters, as far past the context as asked (the model re-reads
    only its last ``context`` characters); an empty prompt starts where the training samples do
    (``probe_prompt``). ``temperature`` 0 is greedy; ``top_k`` None or 0 draws from every character.
    ``PromptError`` names characters the corpus never uses."""
    prompt = prompt or probe_prompt(corpus)
    try:
        return generate(model, corpus.tokenizer, prompt, n, temperature, top_k or None, seed, slide=True)
    except ValueError as e:
        raise prompt_error(e, corpus) from None


def prompt_error(e: ValueError, corpus: Corpus) -> PromptError:
    """What a learner is told when ``generate`` refuses a prompt: the characters the text never uses
    named (``UnknownCharacters``), or the reason as given."""
    if not isinstance(e, UnknownCharacters):
        return PromptError(str(e))
    shown = ", ".join(repr(c) for c in e.chars[:10]) + (" …" if len(e.chars) > 10 else "")
    return PromptError(f"the prompt holds {len(e.chars)} character{'s' if len(e.chars) != 1 else ''} that "
                       f"{corpus.title} never uses ({shown}): the model has one token for each of the "
                       f"{corpus.vocab_size} characters of its text and no other")


def probe_prompt(corpus: Corpus) -> str:
    """Where the samples written during training start: a new line (nanoGPT's default), or the
    text's first character when it has no new line."""
    return "\n" if "\n" in corpus.chars else corpus.text[0]


def probe_start_words(corpus: Corpus) -> str:
    """Where the training samples start, in words."""
    start = probe_prompt(corpus)
    return "a new line" if start == "\n" else f"the text's first character ({start!r})"


@torch.no_grad()
def measure(model: GPT, corpus: Corpus, settings: TextSettings) -> dict:
    """The held-out loss (nats per character, fixed windows) and a short sample of the model now."""
    loss = corpus.held_out_loss(model, settings.context, settings.eval_batches, settings.batch_size)
    text = sample(model, corpus, probe_prompt(corpus), settings.sample_chars, settings.sample_temperature,
                  seed=settings.seed).text
    return {"held_out_loss": loss, "sample": text}


# ---------------------------------------------------------------------------------------------- training
def build_trainer(settings: TextSettings, corpus: Corpus) -> Trainer:
    model = build_model(settings.model_config(corpus.vocab_size), settings.seed).to(run_device())
    return Trainer(model, corpus, settings.context, settings.train_config())


def training_job(settings: TextSettings, corpus: Corpus) -> TrainJob:
    """The scheduler job that trains the character model on ``corpus`` (shared by key: the full
    settings, the corpus's digest included). Its ``TrainedRun.probes`` hold ``(step, measure(...))``
    every ``settings.every`` steps and at the last."""
    check_corpus(settings, corpus)
    config = settings.model_config(corpus.vocab_size)
    return TrainJob(("textlm", settings), f"training a character-level model on {corpus.title}",
                    lambda: build_trainer(settings, corpus),
                    training_peak_bytes(config, settings.batch_size, settings.context),
                    probe=Probe(lambda model: measure(model, corpus, settings), settings.every),
                    max_checkpoints=0)  # its page never rewinds: no checkpoints to keep


def untrained_run(settings: TextSettings, corpus: Corpus) -> TrainedRun:
    """The model before training as a run of 0 steps, measured once (its held-out loss is close to
    ln(vocabulary): it knows nothing yet), so the page draws the same views from the start."""
    check_corpus(settings, corpus)
    model = build_model(settings.model_config(corpus.vocab_size), settings.seed).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    probes = [(0, dict(measure(model, corpus, settings), train_seconds=0.0))]
    return TrainedRun(model, 0, settings.steps, [], [], probes=probes)


# ---------------------------------------------------------------------------------------------- the page's views
TRAIN_LOSS = "train loss (each batch)"
HELD_OUT = "held-out loss"
UNIFORM = "knowing nothing: ln(vocabulary)"


def loss_series(run: TrainedRun, corpus: Corpus) -> dict:
    """Train loss of every batch (thinned for drawing), the held-out loss of every measurement, and
    the loss of a uniform guess, against the training step."""
    from .figures import thin

    history = thin(run.history)
    steps = [s for s, _ in run.probes]
    last = max([run.total] + steps)
    return {TRAIN_LOSS: ([h[0] for h in history], [h[1] for h in history]),
            HELD_OUT: (steps, [m["held_out_loss"] for _, m in run.probes]),
            UNIFORM: ([0, last], [corpus.uniform_loss()] * 2)}


def schedule_series(settings: TextSettings) -> dict:
    """The learning rate of every step (``TrainConfig.lr_at``), to draw the schedule."""
    config = settings.train_config()
    steps = list(range(config.steps))
    return {"learning rate": (steps, [config.lr_at(s) for s in steps])}


def samples(run: TrainedRun, most: int = 4) -> list[tuple[int, str]]:
    """``(step, sample)`` of the last ``most`` measurements, newest first."""
    return [(s, m["sample"]) for s, m in reversed(run.probes[-most:])]


@torch.no_grad()
def sample_attention(model: GPT, corpus: Corpus, ids: list[int]) -> dict:
    """Every head's attention over the last ``context`` characters of a sample (prompt and
    writing): ``{"tokens": [...], "patterns": (n_layer, nh, T, T) numpy}`` from the hook points
    ``blocks.*.attn.pattern``."""
    window = ids[-model.config.block_size:]
    out = model.eval()(torch.tensor([window]), need_weights=True)
    return {"tokens": list(corpus.tokenizer.decode(window)),
            "patterns": torch.stack([w[0] for w in out.attentions]).numpy()}


def findings(run: TrainedRun, corpus: Corpus) -> list[str]:
    """What a run shows, in sentences, from its measurements."""
    if not run.probes:
        return []
    losses = [(s, m["held_out_loss"]) for s, m in run.probes]
    (s0, first), (s1, last) = losses[0], losses[-1]
    uniform = corpus.uniform_loss()
    out = [f"Held-out loss: {first:.2f} nats per character at step {s0} (a uniform guess over the "
           f"{corpus.vocab_size} characters scores ln {corpus.vocab_size} = {uniform:.2f})"
           + (f", {last:.2f} at step {s1} after {run.probes[-1][1]['train_seconds']:.0f} s of training "
              f"({last / math.log(2):.2f} bits per character)." if s1 > s0 else ".")]
    best_step, best = min(losses, key=lambda t: t[1])
    if best_step < s1 and last > best + 0.02:
        out.append(f"The held-out loss was lowest at step {best_step} ({best:.2f}) and has risen since: the model "
                   "does worse on text it never trained on. If the train loss below kept falling, it is starting to "
                   "memorise the training text (overfitting); if both rose, the steps are too large (lower the "
                   "learning rate).")
    if run.history and s1 > s0:
        recent = [h[1] for h in run.history if h[0] > s1 - min(s1, 100)]
        train = float(np.mean(recent))
        out.append(f"Train loss over the last {len(recent)} steps: {train:.2f}; held-out: {last:.2f} "
                   f"({'a gap of ' + format(last - train, '.2f') if last > train else 'no gap yet'}).")
    return out


# ---------------------------------------------------------------------------------------------- checkpoints
SOURCE = "training"  # a checkpoint's meta["source"] when this page saved it


def save_bundle(run: TrainedRun, settings: TextSettings, corpus: Corpus) -> bytes:
    """The text model as trained so far as a checkpoint bundle (safetensors + JSON config), with
    what it was trained on: the corpus's name and digest, the settings and the steps."""
    from dataclasses import asdict

    from .checkpoint import bundle

    if run is None or not run.step:
        raise ValueError("nothing trained yet: train a model on the first tab")
    losses = [m["held_out_loss"] for _, m in run.probes]
    meta = {"source": SOURCE, "corpus": corpus.name, "title": corpus.title, "digest": corpus.digest,
            "settings": asdict(settings), "steps": run.step, "total": run.total,
            "held_out_loss": losses[-1] if losses else None}
    return bundle(run.model, corpus.chars, meta)


def bundle_name(settings: TextSettings, steps: int) -> str:
    """The file name a text model is downloaded as."""
    name = "".join(c if c.isalnum() else "-" for c in settings.corpus.rsplit(".", 1)[0])[:40]
    return (f"textlm-{name}-L{settings.n_layer}-H{settings.n_head}-C{settings.n_embd}-ctx{settings.context}-"
            f"{settings.attention}-{settings.encoding}-step{steps}.zip")


@dataclass
class OpenedModel:
    model: GPT  # the saved model, eval mode
    corpus: Corpus  # its characters alone (name as saved): the tokenizer it writes with
    settings: TextSettings  # its architecture (what ``write_with`` reads: layers, heads, context)
    meta: dict  # what it was trained on, as saved
    step: int  # steps it was trained
    name: str  # the file it came from


def open_bundle(data: bytes, name: str) -> OpenedModel:
    """A text model saved by ``save_bundle``; ``CheckpointError`` says why a file cannot be opened
    here (a damaged file, or a model saved by another page)."""
    from .checkpoint import CheckpointError, load_bundle

    ck = load_bundle(data)
    meta = ck.meta
    if meta.get("source") != SOURCE:
        where = {"attention_lab": "the Attention Lab"}.get(meta.get("source"), "another page")
        task = meta.get("task")
        raise CheckpointError(f"This file holds a model saved by {where}"
                              + (f" (trained on the task {task!r})" if isinstance(task, str) else "")
                              + ", not a text model: its tokens are not the characters of a text. Open it on the "
                                "page that saved it.")
    if not isinstance(meta.get("corpus"), str) or not isinstance(meta.get("digest"), str):
        raise CheckpointError("This file's meta does not say which text the model was trained on.")
    steps = meta.get("steps")
    c = ck.config
    settings = TextSettings(corpus=meta["corpus"], digest=meta["digest"], n_layer=c.n_layer, n_head=c.n_head,
                            n_embd=c.n_embd, context=c.block_size, attention=c.attention, encoding=c.encoding)
    return OpenedModel(ck.model, Corpus(meta["corpus"], ck.chars), settings, meta,
                       steps if isinstance(steps, int) and not isinstance(steps, bool) else 0, name)


def opened_notes(opened: OpenedModel, corpus: Corpus) -> tuple[str, list[str]]:
    """How an opened model relates to the text chosen on the page: ``(level, sentences)``, level
    "same" (this text), "other_text" (another text, the same characters) or "other_chars"."""
    title = opened.meta.get("title") if isinstance(opened.meta.get("title"), str) else opened.meta["corpus"]
    head = (f"{opened.name}: a model of {opened.settings.n_layer} layer(s), {opened.settings.n_head} head(s), width "
            f"{opened.settings.n_embd}, context {opened.settings.context}, trained {opened.step} steps on {title}.")
    if opened.meta["digest"] == corpus.digest:
        return "same", [head, f"It was trained on the text chosen above ({corpus.title}): it writes with its "
                              f"{corpus.vocab_size} characters."]
    if opened.corpus.chars == corpus.chars:
        return "other_text", [head, f"It was trained on a different text than the one chosen above ({corpus.title}), "
                                    f"with the same {corpus.vocab_size} characters: it writes in the style of the text "
                                    "it learned, not of this one."]
    only_model = len(set(opened.corpus.chars) - set(corpus.chars))
    only_text = len(set(corpus.chars) - set(opened.corpus.chars))
    return "other_chars", [head, f"It was trained on a different text than the one chosen above ({corpus.title}), "
                                 f"with different characters: {opened.corpus.vocab_size} against {corpus.vocab_size} "
                                 f"({only_model} only in the model's, {only_text} only in this text's). It writes "
                                 "with its own characters; a prompt may use only those."]
