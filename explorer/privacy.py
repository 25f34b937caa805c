"""Privacy made measurable: DP-SGD, a canary's exposure, and an output filter — and what each misses.

* **DP-SGD** (Abadi et al. 2016, "Deep Learning with Differential Privacy"). Each training example
  is one fixed, non-overlapping window of the training text. A step draws a batch by **Poisson
  sampling** (each window joins independently with probability q = batch_size / N, so the batch
  size varies), takes every example's own gradient, clips each to L2 norm ≤ C, sums them, adds
  Gaussian noise N(0, σ²C²) to every coordinate and divides by the *expected* batch size (as Opacus
  does: dividing by the drawn size would leak it). AdamW or SGD then steps on that gradient.
  Per-example gradients come from ``torch.func`` (``functional_call`` + ``vmap(grad(...))``), not
  Opacus: no extra dependency (Opacus is not installed), and it works on our own ``GPT`` as it is,
  weight tying included (``functional_call`` ties ``lm_head.weight`` to ``wte.weight``, so an
  example's gradient sums both uses before it is clipped, and clipping sees the true norm).
* **The accountant** (``explorer.accountant``): RDP of the sampled Gaussian mechanism (Mironov,
  Talwar & Zhang 2019), composed over steps, converted to (ε, δ) by Balle et al. 2020. ε bounds
  what one *window* can change; a secret repeated k times sits in up to 2k windows and is covered
  only by the far weaker group-privacy bound.
* **Canary exposure** (Carlini et al. 2019, "The Secret Sharer"). A secret of a known format
  ("my PIN is 4 8 1 5 2") is inserted a few times into the training text; afterwards its
  log-perplexity is ranked among every candidate of the same format (or a sample of them):
  exposure = log2|R| - log2(rank). ``exposure`` ranks exactly among the candidates it is given;
  given a uniform sample of m candidates, R is that sample plus the secret, so the largest
  measurable exposure is log2(m + 1) (a sampled estimate, not the paper's distribution fit).
* **An output filter**: regexes for e-mail-like and number-like spans (``redact``), the cases it
  misses and the harmless numbers it hides anyway, both found by running it (``known_misses``,
  ``over_redactions``).

``compare`` trains one small character model with and without DP on the same canaried text and
``findings`` turns its numbers into sentences.
"""
from __future__ import annotations

import dataclasses
import functools
import html
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from . import accountant
from .config import ModelConfig
from .corpus import HELD_OUT, Corpus
from .jobs import Job, run_to_end as run_job
from .model import GPT, build_model


class PrivacyError(ValueError):
    """Settings or inputs the privacy tools cannot use; the message says why."""


@dataclass(frozen=True)
class DPSettings:
    noise_multiplier: float = 1.0  # σ: the noise's standard deviation in units of the clip norm C
    clip: float = 1.0  # C: each example's gradient is scaled down to L2 norm at most C
    batch_size: int = 32  # expected examples per step (Poisson sampling rate q = batch_size / examples)
    lr: float = 3e-3  # learning rate of the optimizer
    steps: int = 400  # optimisation steps (each one is accounted for)
    delta: float = 1e-5  # δ of the (ε, δ) guarantee; should be well below 1 / examples
    seed: int = 0  # seeds the weights, the sampling and the noise
    optimizer: str = "adamw"  # "adamw" (Loshchilov & Hutter 2019) or "sgd"
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (data-independent: costs no privacy)
    private: bool = True  # False: the same loop without clipping or noise (the baseline arm)

    def validate(self) -> None:
        if self.private and not self.noise_multiplier > 0:
            raise PrivacyError(f"noise_multiplier = {self.noise_multiplier}: DP-SGD needs noise above 0")
        if not self.clip > 0:
            raise PrivacyError(f"clip = {self.clip}: the clip norm must be above 0")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise PrivacyError(f"batch_size = {self.batch_size!r}: a whole number, 1 or more")
        if not (isinstance(self.steps, int) and self.steps >= 1):
            raise PrivacyError(f"steps = {self.steps!r}: a whole number, 1 or more")
        if not 0 < self.lr <= 1:
            raise PrivacyError(f"lr = {self.lr}: allowed range is above 0 to 1")
        if not 0 < self.delta < 1:
            raise PrivacyError(f"delta = {self.delta}: must lie strictly between 0 and 1")
        if self.optimizer not in ("adamw", "sgd"):
            raise PrivacyError(f"optimizer = {self.optimizer!r}: choose 'adamw' or 'sgd'")


# ------------------------------------------------------------------------------------------- DP-SGD
def windows(ids: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """The training examples: non-overlapping windows of ``length`` + 1 tokens, as ``(x, y)``,
    both ``(N, length)``; each token of ``ids`` (but a tail shorter than a window) is in exactly one."""
    n = (len(ids) - 1) // length
    if n < 2:
        raise PrivacyError(f"a text of {len(ids)} tokens holds fewer than 2 windows of {length}")
    rows = ids[: n * length + 1]
    x = rows[:-1].view(n, length)
    y = rows[1:].view(n, length)
    return x, y


def per_example_grads(model: GPT, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Every example's gradient of its own mean next-token loss: name -> ``(B, *param.shape)``.
    Tied weights appear once (``lm_head.weight`` is ``wte.weight``), holding both uses."""
    return per_example_grads_and_losses(model, x, y)[0]


def per_example_grads_and_losses(model: GPT, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """``per_example_grads`` and each example's loss ``(B,)``, from one ``vmap(grad_and_value(...))``."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, b, xi, yi):  # xi, yi: (T,) one example
        return functional_call(model, (p, b), (xi[None], yi[None])).loss

    return vmap(grad_and_value(loss_one), in_dims=(None, None, 0, 0))(params, buffers, x, y)


def clip_per_example(grads: dict[str, Tensor], clip: float) -> tuple[dict[str, Tensor], Tensor]:
    """Scale each example's whole gradient (all parameters together) to L2 norm ≤ ``clip``:
    ``g · min(1, C / (‖g‖ + 1e-6))``. Returns the clipped ``(B, ...)`` gradients and the norms
    before clipping ``(B,)``."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))  # (B,)
    scale = (clip / (norms + 1e-6)).clamp(max=1.0)  # (B,)
    return {k: g * scale.view(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}, norms


def clip_and_sum(grads: dict[str, Tensor], clip: float) -> tuple[dict[str, Tensor], Tensor]:
    """The clipped per-example gradients summed over the batch, and the norms before clipping."""
    clipped, norms = clip_per_example(grads, clip)
    return {k: g.sum(0) for k, g in clipped.items()}, norms


def noisy_gradient(summed: dict[str, Tensor], settings: DPSettings, expected_batch: float,
                   gen: torch.Generator) -> dict[str, Tensor]:
    """(sum of clipped gradients + N(0, σ²C²)) / expected batch size, per parameter."""
    std = settings.noise_multiplier * settings.clip
    return {k: (s + std * torch.randn(s.shape, generator=gen, dtype=s.dtype)) / expected_batch
            for k, s in summed.items()}


def poisson_batch(n: int, q: float, gen: torch.Generator) -> Tensor:
    """Indices of the examples drawn this step: each of ``n`` independently with probability ``q``."""
    return torch.nonzero(torch.rand(n, generator=gen) < q).flatten()


@dataclass
class DPRun:
    model: GPT
    settings: DPSettings
    examples: int  # N: training windows
    q: float  # Poisson sampling rate
    epsilon: float  # ε after all steps at settings.delta (inf for the non-private arm)
    losses: list  # training loss per step (mean over the drawn batch, before any noise)
    clipped_share: float  # share of per-example gradients whose norm exceeded C (private arm)
    seconds: float


class DPTrainer:
    """One arm of the comparison trained step by step (``advance``), so a scheduler job can train it
    in slices: DP-SGD, or with ``private=False`` the same loop with neither clipping nor noise.
    Its own generators draw the batches and the noise, so the steps taken in slices are the steps
    ``train_dp`` takes in one go."""

    def __init__(self, corpus: Corpus, config: ModelConfig, settings: DPSettings):
        settings.validate()
        self.settings = settings
        self.x_all, self.y_all = windows(corpus.train, config.block_size)  # (N, T) each
        self.n = len(self.x_all)
        self.q = settings.batch_size / self.n
        if self.q >= 1:
            raise PrivacyError(f"batch_size = {settings.batch_size} but the text holds only {self.n} windows: "
                               "the sampling rate would be 1 or more")
        self.model = build_model(config, settings.seed).train()
        self.params = [p for p in self.model.parameters()]
        self.names = [k for k, _ in self.model.named_parameters()]
        self.opt = (torch.optim.AdamW(self.params, lr=settings.lr, weight_decay=settings.weight_decay)
                    if settings.optimizer == "adamw" else torch.optim.SGD(self.params, lr=settings.lr))
        self.gen_sample = torch.Generator().manual_seed(settings.seed + 1)
        self.gen_noise = torch.Generator().manual_seed(settings.seed + 2)
        self.losses: list = []  # training loss per step with a non-empty draw (mean over the batch, before noise)
        self.clipped, self.seen = 0, 0  # per-example gradients clipped, and seen
        self.step = 0  # steps taken
        self.seconds = 0.0  # time spent in steps

    @property
    def done(self) -> bool:
        return self.step >= self.settings.steps

    def advance(self, steps: int = 1) -> None:
        """Take up to ``steps`` more steps (never past ``settings.steps``)."""
        t0 = time.perf_counter()
        self.model.train()
        for _ in range(min(steps, self.settings.steps - self.step)):
            self._one_step()
            self.step += 1
        self.seconds += time.perf_counter() - t0

    def _one_step(self) -> None:
        settings, model = self.settings, self.model
        idx = poisson_batch(self.n, self.q, self.gen_sample)
        x, y = self.x_all[idx], self.y_all[idx]  # (b, T), b varies
        if settings.private:
            if len(idx):
                grads, per = per_example_grads_and_losses(model, x, y)  # (b, ...) each, (b,)
                summed, norms = clip_and_sum(grads, settings.clip)
                self.clipped += int((norms > settings.clip).sum())
                self.seen += len(idx)
                self.losses.append(float(per.mean()))
            else:  # an empty draw still releases noise: the step is accounted for
                summed = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
            noisy = noisy_gradient(summed, settings, settings.batch_size, self.gen_noise)
            for name, p in zip(self.names, self.params):
                p.grad = noisy[name]
        else:
            self.opt.zero_grad(set_to_none=True)
            if len(idx) == 0:
                return
            logits = model(x).logits  # (b, T, V)
            per = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)  # (b,)
            (per.sum() / settings.batch_size).backward()
            self.losses.append(float(per.detach().mean()))
        self.opt.step()

    @property
    def clipped_share(self) -> float:
        return self.clipped / self.seen if self.seen else 0.0

    def run(self) -> DPRun:
        """The arm as trained so far (ε for the steps asked for: they are what the run releases)."""
        s = self.settings
        self.model.eval()
        eps = accountant.epsilon(self.q, s.noise_multiplier, s.steps, s.delta) if s.private else math.inf
        return DPRun(self.model, s, self.n, self.q, eps, list(self.losses), self.clipped_share, self.seconds)


def train_dp(corpus: Corpus, config: ModelConfig, settings: DPSettings) -> DPRun:
    """Train a fresh model on ``corpus``'s training text by DP-SGD (or, ``private=False``, by the
    same loop with neither clipping nor noise: the baseline)."""
    trainer = DPTrainer(corpus, config, settings)
    trainer.advance(settings.steps)
    return trainer.run()


# ------------------------------------------------------------------------------------------- canaries
def insert_canary(text: str, canary: str, times: int, seed: int = 0, train_share: float = 1 - HELD_OUT) -> str:
    """``text`` with ``canary`` inserted ``times`` times, each as its own line after a random line
    break in the part of the text a ``Corpus`` trains on (its first ``train_share``, less a margin
    for the insertions), so the held-out tenth stays clean."""
    if times < 0:
        raise PrivacyError(f"times = {times}: insert the canary 0 or more times")
    if "\n" in canary or not canary:
        raise PrivacyError("the canary must be one non-empty line")
    limit = int(len(text) * train_share) - times * (len(canary) + 1) - 1
    breaks = [i for i, c in enumerate(text[:max(limit, 0)]) if c == "\n"]
    if len(breaks) < times:
        raise PrivacyError(f"the text has {len(breaks)} line breaks in its training part; {times} are needed")
    spots = sorted(random.Random(seed).sample(breaks, times))
    out, last = [], 0
    for s in spots:
        out += [text[last:s + 1], canary + "\n"]
        last = s + 1
    out.append(text[last:])
    return "".join(out)


def digit_secrets(digits: int, sample: Optional[int] = None, seed: int = 0, alphabet: str = "0123456789") -> list[str]:
    """Secrets of the format "d d d d d" (``digits`` characters of ``alphabet``, space separated): all
    len(alphabet)**digits of them in order, or a uniform sample of ``sample`` distinct ones."""
    if not alphabet or len(set(alphabet)) != len(alphabet):
        raise PrivacyError(f"alphabet {alphabet!r}: give each character once")
    base, total = len(alphabet), len(alphabet) ** digits
    nums = range(total) if sample is None else random.Random(seed).sample(range(total), min(sample, total))

    def spell(k: int) -> str:
        out = []
        for _ in range(digits):
            k, r = divmod(k, base)
            out.append(alphabet[r])
        return " ".join(reversed(out))

    return [spell(k) for k in nums]


@torch.no_grad()
def log_perplexities(model: GPT, tokenizer, prefix: str, secrets: Sequence[str], batch: int = 2048) -> Tensor:
    """−Σ log p(each character of the secret | prefix, the secret's earlier characters) in nats, one per
    secret ``(S,)`` (the prefix's own log-probability is common to all and left out). All secrets have
    one length k; one holding a character outside the vocabulary scores inf. Secrets sharing their first k−1 characters share one forward pass, whose last
    position gives every possible last character at once (exact; 10× fewer passes for digits)."""
    lengths = {len(s) for s in secrets}
    if len(lengths) != 1:
        raise PrivacyError("candidates must all have the secret's length (the same format)")
    if not prefix:
        raise PrivacyError("the template needs some text before {} for the model to read first")
    k = lengths.pop()
    block = model.config.block_size
    if k > block:
        raise PrivacyError(f"a secret of {k} characters does not fit the model's context of {block}")
    secret_list = list(secrets)
    known = [not tokenizer.unknown(s) for s in secret_list]  # a character outside the vocabulary: never written
    secrets = [s for s, ok in zip(secret_list, known) if ok]
    if not secrets:
        return torch.full((len(secret_list),), math.inf)
    heads = sorted({s[:-1] for s in secrets})  # the distinct first k−1 characters
    row = {h: i for i, h in enumerate(heads)}
    pre = tokenizer.encode(prefix)
    P, L = len(pre), len(pre) + k - 1  # input length: the prefix and the secret but its last character
    offset = max(0, L - block)  # characters cut from the left to fit the context
    where = torch.arange(k) + P - 1 - offset  # (k,) the position predicting each secret character
    logps = []
    for i in range(0, len(heads), batch):
        ids = torch.tensor([pre + tokenizer.encode(h) for h in heads[i:i + batch]])[:, offset:]  # (b, L - offset)
        logps.append(torch.log_softmax(model(ids).logits[:, where], dim=-1))  # (b, k, V)
    logp = torch.cat(logps)  # (U, k, V)
    rows = torch.tensor([row[s[:-1]] for s in secrets])  # (S,)
    toks = torch.tensor([tokenizer.encode(s) for s in secrets])  # (S, k)
    scores = torch.full((len(secret_list),), math.inf)  # (S,) inf: impossible for this model
    scores[torch.tensor(known)] = -logp[rows[:, None], torch.arange(k)[None, :], toks].sum(1)
    return scores


@dataclass(frozen=True)
class Exposure:
    exposure: float  # log2|R| − log2(rank), in bits
    rank: int  # 1 = the secret is the most likely candidate
    candidates: int  # |R|: the candidates ranked, the secret included
    log_perplexity: float  # the secret's, in nats
    median_log_perplexity: float  # the candidates', in nats

    @property
    def max_exposure(self) -> float:
        return math.log2(self.candidates)


def rank_exposure(secret_score: float, other_scores: Sequence[float]) -> tuple[int, int, float]:
    """(rank, |R|, exposure) of a secret with log-perplexity ``secret_score`` among ``other_scores``
    (the other candidates'). Rank counts the candidates strictly more likely, plus one; ties count
    against the secret only half (the expected rank under random tie-breaking, rounded up)."""
    better = sum(1 for s in other_scores if s < secret_score)
    ties = sum(1 for s in other_scores if s == secret_score)
    rank = 1 + better + (ties + 1) // 2
    size = len(other_scores) + 1
    return rank, size, math.log2(size) - math.log2(rank)


def exposure(model: GPT, tokenizer, template: str, secret: str, candidates: Sequence[str]) -> Exposure:
    """The secret's exposure among ``candidates`` (the secret is added if absent): ``template``
    holds "{}" where the secret goes ("my PIN is {}"); only the text before it conditions."""
    return exposure_and_scores(model, tokenizer, template, secret, candidates)[0]


def exposure_and_scores(model: GPT, tokenizer, template: str, secret: str,
                        candidates: Sequence[str]) -> tuple[Exposure, Tensor]:
    """``exposure`` and every ranked candidate's log-perplexity ``(|R|,)``, the secret's first."""
    if template.count("{}") != 1:
        raise PrivacyError(f"template {template!r}: it needs exactly one {{}} where the secret goes")
    prefix = template.split("{}")[0]
    others = [c for c in candidates if c != secret]
    scores = log_perplexities(model, tokenizer, prefix, [secret] + others)
    rank, size, exp = rank_exposure(float(scores[0]), scores[1:].tolist())
    return Exposure(exp, rank, size, float(scores[0]), float(scores.median())), scores


# ------------------------------------------------------------------------------------------- output filter
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
NUMBER = re.compile(r"\+?\d+(?:[ .,\-/()]{1,2}\d+)*")  # digits, and runs of digits joined by . , - / ( ) or a space


def redact(text: str, mark: str = "[REDACTED]") -> tuple[str, list[tuple[int, int, str]]]:
    """``text`` with every e-mail-like, then every number-like span replaced by ``mark``; and the
    spans found, ``(start, end, kind)`` in the original text."""
    spans = [(m.start(), m.end(), "email") for m in EMAIL.finditer(text)]
    taken = [(a, b) for a, b, _ in spans]
    for m in NUMBER.finditer(text):
        if not any(a < m.end() and m.start() < b for a, b in taken):
            spans.append((m.start(), m.end(), "number"))
    spans.sort()
    out, last = [], 0
    for a, b, _ in spans:
        out += [text[last:a], mark]
        last = b
    out.append(text[last:])
    return "".join(out), spans


MISS_EXAMPLES = (  # (text, the private part a filter should hide)
    ("my PIN is 4 8 1 5 2", "4 8 1 5 2"),
    ("write to jane.fairfax@example.com today", "jane.fairfax@example.com"),
    ("call 020-7946-0958 after six", "020-7946-0958"),
    ("my PIN is four eight one five two", "four eight one five two"),
    ("write to jane dot fairfax at example dot com", "jane dot fairfax at example dot com"),
    ("my PIN is 4 8 l 5 2", "4 8 l 5 2"),
    ("my PIN is 4-8-one-5-2", "4-8-one-5-2"),
    ("the door code is IV VIII I V II", "IV VIII I V II"),
    ("Miss Bates lives on Church Street, Highbury", "Miss Bates lives on Church Street, Highbury"),
)


@dataclass(frozen=True)
class FilterCase:
    text: str
    private: str  # the part that should be hidden
    output: str  # what redact() returned
    leaked: str  # the characters of the private part left visible ("" = fully hidden)

    @property
    def missed(self) -> bool:
        return bool(self.leaked.strip())


def check_filter(text: str, private: str) -> FilterCase:
    """Run ``redact`` on ``text`` and say which characters of ``private`` survive it."""
    start = text.find(private)
    if start < 0:
        raise PrivacyError(f"{private!r} is not in {text!r}")
    out, spans = redact(text)
    hidden = [any(a <= i < b for a, b, _ in spans) for i in range(start, start + len(private))]
    leaked = "".join(c if not h else " " for c, h in zip(private, hidden))
    return FilterCase(text, private, out, re.sub(r"\s+", " ", leaked).strip())


def known_misses() -> list[FilterCase]:
    """The examples the filter lets through, found by running it on ``MISS_EXAMPLES``."""
    return [c for c in (check_filter(t, p) for t, p in MISS_EXAMPLES) if c.missed]


HARMLESS_EXAMPLES = (  # text with nothing private in it, which a filter should leave alone
    "Volume 1, Chapter 12",
    "Emma was born in 1796 and married at 21.",
    "she walked 2 miles at 3 o'clock",
    "Miss Bates and Jane Fairfax took tea.",
)


def over_redactions() -> list[tuple[str, str]]:
    """The harmless examples the filter changes anyway, ``(text, output)``: its false positives."""
    return [(t, out) for t in HARMLESS_EXAMPLES if (out := redact(t)[0]) != t]


# ------------------------------------------------------------------------------------------- the comparison
@dataclass(frozen=True)
class CanarySettings:
    template: str = "my PIN is {}"  # the secret's format; "{}" is where the digits go
    secret: str = "4 8 1 5 2"  # the inserted secret: 5 digits, space separated
    times: int = 8  # insertions into the training text
    candidates: Optional[int] = None  # None = rank among every secret of the format (over the text's digits); else a sample
    seed: int = 0  # seeds the insertion spots and the candidate sample
    chars: int = 80_000  # characters of the built-in novel used (before insertion)


@dataclass
class Comparison:
    dp: DPRun
    plain: DPRun
    dp_exposure: Exposure
    plain_exposure: Exposure
    dp_held_out: float  # nats per character
    plain_held_out: float
    uniform_loss: float  # ln(vocabulary): a model that learned nothing
    canary: CanarySettings
    windows_with_canary: int  # training windows that hold a whole or partial copy of the secret
    alphabet: str  # the digits the candidates are made of (those the text holds)


def candidate_alphabet(corpus: Corpus) -> str:
    """The digits the text holds: the model can write only those, so the candidates use only those
    (a candidate with a digit it has never seen would rank last for free and inflate the exposure)."""
    return "".join(c for c in corpus.chars if c.isdigit())


def canaried_corpus(base: str, canary: CanarySettings) -> Corpus:
    text = insert_canary(base[:canary.chars], canary.template.format(canary.secret), canary.times, canary.seed)
    return Corpus("canaried", text)


def compare(base_text: str, config: ModelConfig, dp: DPSettings, canary: CanarySettings = CanarySettings()) -> Comparison:
    """Train the same model with and without DP on ``base_text`` (cut to ``canary.chars``) with the
    canary inserted; measure ε, held-out loss and the canary's exposure of each."""
    corpus = canaried_corpus(base_text, canary)
    if config.vocab_size != corpus.vocab_size:
        raise PrivacyError(f"vocab_size = {config.vocab_size}: this text has {corpus.vocab_size} characters")
    digits = len(canary.secret.split())
    alphabet = candidate_alphabet(corpus)
    cands = digit_secrets(digits, canary.candidates, canary.seed, alphabet)
    runs, exps, held = [], [], []
    for private in (True, False):
        s = dataclasses.replace(dp, private=private)
        run = train_dp(corpus, config, s)
        runs.append(run)
        exps.append(exposure(run.model, corpus.tokenizer, canary.template, canary.secret, cands))
        held.append(held_out(corpus, run.model))
    hits = len(secret_windows(corpus, canary.secret, config.block_size))
    return Comparison(runs[0], runs[1], exps[0], exps[1], held[0], held[1], corpus.uniform_loss(), canary, hits,
                      alphabet)


def held_out(corpus: Corpus, model: GPT) -> float:
    """The held-out loss every arm is measured by (nats per character; the same fixed windows)."""
    return corpus.held_out_loss(model, model.config.block_size)


def secret_windows(corpus: Corpus, secret: str, length: int) -> list[int]:
    """Indices of the training windows (``windows(corpus.train, length)``) that hold any character of
    an occurrence of ``secret`` (inputs or targets)."""
    text = corpus.tokenizer.decode(corpus.train)
    n = (len(corpus.train) - 1) // length
    hit = set()
    for m in re.finditer(re.escape(secret), text):
        for j in range(n):
            if m.start() <= j * length + length and j * length < m.end():
                hit.add(j)
    return sorted(hit)


def default_config(vocab_size: int) -> ModelConfig:
    """The small model of the default comparison."""
    return ModelConfig(vocab_size=vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64)


def findings(c: Comparison) -> list[str]:
    """Sentences for the page, each computed from the comparison's numbers."""
    d, p = c.dp_exposure, c.plain_exposure
    s = c.dp.settings
    out = [
        f"DP-SGD with σ = {s.noise_multiplier:g}, clip C = {s.clip:g}, Poisson sampling rate q = {c.dp.q:.4f} "
        f"({s.batch_size} of {c.dp.examples:,} windows per step on average) for {s.steps:,} steps gives "
        f"ε = {c.dp.epsilon:.2f} at δ = {s.delta:g} (RDP accountant, Balle et al. 2020 conversion).",
        f"Utility cost: held-out loss {c.dp_held_out:.3f} nats/char with DP against {c.plain_held_out:.3f} without "
        f"({c.dp_held_out - c.plain_held_out:+.3f}); a model that learned nothing scores {c.uniform_loss:.3f}.",
        f"Canary exposure without DP: {p.exposure:.2f} bits (rank {p.rank:,} of {p.candidates:,} candidates; the "
        f"most a secret can have here is {p.max_exposure:.2f}); with DP: {d.exposure:.2f} bits (rank {d.rank:,}). "
        f"Candidates: {'every' if c.canary.candidates is None else 'a sample of'} secret of "
        f"{len(c.canary.secret.split())} digits from the {len(c.alphabet)} digits the text holds ({c.alphabet}).",
    ]
    if d.exposure < p.exposure - 1:
        out.append(f"DP lowered the canary's exposure by {p.exposure - d.exposure:.2f} bits: the private model "
                   f"ranks the inserted secret much nearer a random one.")
    elif p.exposure < 3:
        out.append(f"At this scale even the model trained without DP barely memorised the canary "
                   f"({p.exposure:.2f} bits, {c.canary.times} insertions), so DP had little to remove: the "
                   f"measurement cannot show DP's protection here.")
    else:
        out.append(f"DP did not lower the canary's exposure here ({d.exposure:.2f} vs {p.exposure:.2f} bits); "
                   f"at this scale the measurement does not show the textbook effect.")
    gap = c.dp_held_out - c.plain_held_out
    if gap > 0.1 and d.exposure < p.exposure:
        out.append(f"Caveat: the private model is also a weaker model overall (held-out loss {gap:+.3f} nats/char), "
                   f"so part of the drop in exposure is that it learned less of everything, not only less of the "
                   f"secret; a fair test would compare models of equal held-out loss.")
    k = c.windows_with_canary
    if c.dp.epsilon < math.inf and k > 0:
        eps_k = k * c.dp.epsilon
        log_delta_k = math.log(k) + (k - 1) * c.dp.epsilon + math.log(s.delta)  # group privacy: k·e^((k-1)ε)·δ
        tail = (f"δ = {math.exp(log_delta_k):.2g}" if log_delta_k < 0
                else "a δ above 1, i.e. no guarantee at all")
        out.append(f"ε covers one training window; the secret sits in {k} windows, so for the secret itself the "
                   f"standard group-privacy bound gives only: ε = {k} × {c.dp.epsilon:.2f} = {eps_k:.1f} with {tail}.")
    out.append(f"{c.dp.clipped_share:.0%} of the per-example gradients were longer than C = {s.clip:g} and were "
               f"clipped.")
    return out


def default_comparison(seed: int = 0) -> Comparison:
    """The default run: the built-in novel's first ``CanarySettings.chars`` characters, the canary
    inserted, the small model trained with and without DP (``python -m explorer.privacy``)."""
    from .corpus import builtin
    canary = CanarySettings(seed=seed)
    base = builtin().text
    vocab = canaried_corpus(base, canary).vocab_size
    return compare(base, default_config(vocab), DPSettings(seed=seed), canary)


# ---------------------------------------------------------------------------------------------- the page's run
ARMS = ("with DP", "without DP")  # the two arms, in the order they are trained and drawn


@dataclass(frozen=True)
class PrivacySettings:
    """The Safeguards page's privacy run: both arms, the canary, and how often the curve is measured.
    The model is ``default_config``'s, the text the built-in novel's first ``canary.chars`` characters."""
    dp: DPSettings = DPSettings()  # how both arms train (``private`` is set per arm)
    canary: CanarySettings = CanarySettings()  # the inserted secret
    measurements: int = 8  # held-out loss measurements of each arm over its steps (one more before training)

    @property
    def every(self) -> int:
        """Steps between held-out loss measurements."""
        return max(1, math.ceil(self.dp.steps / self.measurements))


@dataclass(frozen=True, eq=False)
class Setup:
    """What a run reads, made from the canary settings alone (shared read-only)."""
    corpus: Corpus  # the built-in novel, cut, with the canary inserted
    config: ModelConfig  # the model of both arms
    alphabet: str  # the digits the candidates are made of
    candidates: tuple  # every candidate secret ranked (or the sample)
    windows_with_canary: int  # training windows holding a character of a copy of the secret

    @property
    def examples(self) -> int:
        return (len(self.corpus.train) - 1) // self.config.block_size


@functools.lru_cache(maxsize=8)
def setup(canary: CanarySettings) -> Setup:
    """The canaried text, the model, the candidates (built once per canary settings)."""
    from .corpus import builtin

    corpus = canaried_corpus(builtin().text, canary)
    config = default_config(corpus.vocab_size)
    alphabet = candidate_alphabet(corpus)
    cands = tuple(digit_secrets(len(canary.secret.split()), canary.candidates, canary.seed, alphabet))
    hits = len(secret_windows(corpus, canary.secret, config.block_size))
    return Setup(corpus, config, alphabet, cands, hits)


def problem(settings: PrivacySettings) -> Optional[str]:
    """Why these settings cannot run, in a sentence, or None."""
    try:
        settings.dp.validate()
        if not (isinstance(settings.canary.times, int) and settings.canary.times >= 0):
            raise PrivacyError(f"canary insertions = {settings.canary.times!r}: a whole number, 0 or more")
        n = setup(settings.canary).examples
    except (PrivacyError, accountant.AccountantError) as e:
        return str(e)
    if settings.dp.batch_size >= n:
        return (f"expected batch = {settings.dp.batch_size} but the text holds only {n:,} windows: the sampling "
                f"rate q = batch / windows would be 1 or more (choose a batch below {n:,})")
    return None


def delta_warning(settings: PrivacySettings) -> Optional[str]:
    """A sentence when δ is too large to mean anything for this text, else None."""
    n = setup(settings.canary).examples
    if settings.dp.delta >= 1 / n:
        return (f"δ = {settings.dp.delta:g} is not below 1 / {n:,} windows = {1 / n:.2g}: a mechanism that publishes "
                f"one whole training window chosen at random already meets ε = 0 with δ = 1/{n:,}, so a δ this "
                "large allows leaking a window outright. Choose a δ well below 1 / windows.")
    return None


def sampling_rate(settings: PrivacySettings) -> float:
    """q = expected batch / training windows."""
    return settings.dp.batch_size / setup(settings.canary).examples


def epsilon_now(settings: PrivacySettings) -> float:
    """ε of the DP arm for these settings: computed before any training (it depends on σ, q, steps and δ
    alone, never on the data)."""
    s = settings.dp
    return accountant.epsilon(sampling_rate(settings), s.noise_multiplier, s.steps, s.delta)


EPS_STEPS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200)  # the ε chart's step counts


@functools.lru_cache(maxsize=64)
def epsilon_series(q: float, sigma: float, delta: float, steps: int) -> dict:
    """ε against steps for σ/2, σ and 2σ at sampling rate ``q`` (RDP scales with steps: one RDP per
    order, then a conversion per step count), ``{name: (steps, ε)}``; the chosen steps included."""
    xs = sorted(set(EPS_STEPS) | {steps})
    out = {}
    for name, sig in ((f"σ = {sigma / 2:g}", sigma / 2), (f"σ = {sigma:g} (chosen)", sigma), (f"σ = {2 * sigma:g}", 2 * sigma)):
        one = accountant.compute_rdp(q, sig, 1)
        out[name] = (xs, [round(accountant.rdp_to_epsilon(accountant.ORDERS, [r * t for r in one], delta)[0], 4)
                          for t in xs])
    return out


@dataclass
class PrivacyRun:
    """The run as far as it got (published after every slice; read-only)."""
    settings: PrivacySettings
    step: int  # steps both arms have taken (the slower's)
    curves: dict  # arm -> [(step, held-out loss)], step 0 included
    seconds: dict  # arm -> its own training seconds
    clipped_share: float  # of the DP arm's per-example gradients so far
    examples: int  # N: training windows
    epsilon: float  # of the DP arm, for all its steps
    finished: bool = False  # trained and measured
    comparison: Optional[Comparison] = None  # when finished: the numbers ``compare`` gives
    scores: dict = field(default_factory=dict)  # when finished: arm -> every candidate's log-perplexity, the secret's first

    def series(self) -> dict:
        """Held-out loss against steps, ``{arm: (steps, losses)}``."""
        return {arm: ([s for s, _ in c], [round(v, 4) for _, v in c]) for arm, c in self.curves.items()}

    def findings(self) -> list[str]:
        return findings(self.comparison) if self.comparison is not None else []


class PrivacyJob(Job):
    """Train the DP arm and the plain arm in turns, one step at a time (the arm behind goes next), the
    held-out loss measured every ``settings.every`` steps; then measure each arm's exposure and held-out
    loss, one arm a slice. The finished run holds the ``Comparison`` that ``compare`` gives for the same
    settings on the same text."""

    shippable = True  # seeded noise and data (explorer.shelf)

    title = "training with and without DP"

    def __init__(self, settings: PrivacySettings):
        why = problem(settings)
        if why:
            raise PrivacyError(why)
        self.settings = settings
        self.key = ("privacy", settings)
        self.setup = setup(settings.canary)
        self.peak_bytes = peak_bytes(self.setup.config, settings.dp.batch_size)
        self.trainers: dict[str, DPTrainer] = {}
        self.curves: dict[str, list] = {arm: [] for arm in ARMS}
        self._measured: dict[str, tuple] = {}  # arm -> (Exposure, held-out loss, scores)
        self._live: Optional[PrivacyRun] = None

    def step(self, slice_s: float) -> bool:
        t0 = time.perf_counter()
        st, corpus = self.settings, self.setup.corpus
        if not self.trainers:
            for arm in ARMS:
                tr = DPTrainer(corpus, self.setup.config, dataclasses.replace(st.dp, private=arm == ARMS[0]))
                self.trainers[arm] = tr
                self.curves[arm].append((0, held_out(corpus, tr.model)))
        trained = lambda: all(tr.done for tr in self.trainers.values())  # noqa: E731
        while not trained() and time.perf_counter() - t0 < slice_s:
            arm = min(ARMS, key=lambda a: self.trainers[a].step)  # the arm behind (DP first on a tie)
            tr = self.trainers[arm]
            tr.advance(1)
            if tr.step % st.every == 0 or tr.done:
                self.curves[arm].append((tr.step, held_out(corpus, tr.model)))
        if trained():
            arm = next((a for a in ARMS if a not in self._measured), None)
            if arm is not None:  # one arm's exposure a slice
                model = self.trainers[arm].model.eval()
                e, scores = exposure_and_scores(model, corpus.tokenizer, st.canary.template, st.canary.secret,
                                                self.setup.candidates)
                self._measured[arm] = (e, self.curves[arm][-1][1], scores)  # the curve ends at the last step
        finished = len(self._measured) == len(ARMS)
        self._live = self._publish(finished)
        return finished

    def _publish(self, finished: bool) -> PrivacyRun:
        dp = self.trainers[ARMS[0]]
        run = PrivacyRun(self.settings, min(tr.step for tr in self.trainers.values()),
                         {a: list(c) for a, c in self.curves.items()},
                         {a: tr.seconds for a, tr in self.trainers.items()}, dp.clipped_share, dp.n,
                         accountant.epsilon(dp.q, self.settings.dp.noise_multiplier, self.settings.dp.steps,
                                            self.settings.dp.delta), finished)
        if finished:
            (de, dh, ds), (pe, ph, ps) = self._measured[ARMS[0]], self._measured[ARMS[1]]
            run.comparison = Comparison(self.trainers[ARMS[0]].run(), self.trainers[ARMS[1]].run(), de, pe, dh, ph,
                                        self.setup.corpus.uniform_loss(), self.settings.canary,
                                        self.setup.windows_with_canary, self.setup.alphabet)
            run.scores = {ARMS[0]: ds.tolist(), ARMS[1]: ps.tolist()}
        return run

    def live(self) -> Optional[PrivacyRun]:
        return self._live

    def result(self) -> Optional[PrivacyRun]:
        return self._live

    def progress(self) -> tuple[float, str]:
        run = self._live
        if run is None:
            return 0.0, "starting"
        if run.step >= self.settings.dp.steps and not run.finished:
            return 1.0, "measuring the canary's exposure"
        return run.step / self.settings.dp.steps, f"step {run.step} of {self.settings.dp.steps} (each arm)"

    def close(self) -> None:
        for tr in self.trainers.values():
            tr.opt = None  # the optimiser state goes; the published run keeps the models


def peak_bytes(config: ModelConfig, batch_size: int) -> float:
    """Predicted peak memory of a run: both arms' training (``training_peak_bytes``), and the DP arm's
    per-example gradients (a Poisson draw of up to twice the expected batch, each gradient held three
    times: as computed, clipped, and summed over)."""
    from .runs import training_peak_bytes

    params = sum(p.numel() for p in build_model(config, 0).parameters())
    b = 2 * batch_size
    return 2 * training_peak_bytes(config, b, config.block_size) + 3 * 4 * params * b


def run_to_end(settings: PrivacySettings) -> PrivacyRun:
    """The job run here, to the end (for scripts, tests and the bench)."""
    return run_job(PrivacyJob(settings))


# ---------------------------------------------------------------------------------------------- figures
def exposure_figure(scores: Sequence[float], title: str, exp: Exposure, height: int = 320) -> dict:
    """A histogram of the candidates' log-perplexities (nats) with the inserted secret's marked: the
    further left of the pile it stands, the more the model has memorised it."""
    finite = [round(float(v), 3) for v in scores if math.isfinite(v)]
    secret = finite[0] if finite and math.isfinite(scores[0]) else None
    shapes, notes = [], []
    if secret is not None:
        shapes.append({"type": "line", "x0": secret, "x1": secret, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#D55E00", "width": 3}})
        notes.append({"x": secret, "y": 1, "yref": "paper", "yanchor": "bottom", "showarrow": False,
                      "text": f"the secret: rank {exp.rank:,} of {exp.candidates:,}", "font": {"color": "#D55E00"}})
    return {"data": [{"type": "histogram", "x": finite, "nbinsx": 60, "marker": {"color": "#0072B2"},
                      "name": "candidates", "hovertemplate": "%{x}: %{y} candidates<extra></extra>"}],
            "layout": {"title": {"text": html.escape(title)}, "height": height, "showlegend": False,
                       "margin": {"l": 60, "r": 10, "t": 60, "b": 45}, "shapes": shapes, "annotations": notes,
                       "xaxis": {"title": {"text": "log-perplexity of a candidate (nats; left = likelier)"}},
                       "yaxis": {"title": {"text": "candidates"}}}}


# ---------------------------------------------------------------------------------------------- the filter on the page
FILTER_MAX_CHARS = 4000  # the longest text the page's filter box takes
FILTER_EXAMPLE = "Write to jane.fairfax@example.com or call 020 7946 0958. My PIN is four eight one five two."


def filter_problem(text: str) -> Optional[str]:
    """Why the filter box's text is not filtered, or None."""
    if not text.strip():
        return "the box is empty: type or paste some text to filter"
    if len(text) > FILTER_MAX_CHARS:
        return f"the text has {len(text):,} characters; the filter here reads at most {FILTER_MAX_CHARS:,}"
    return None


def span_rows(text: str, spans) -> dict:
    """The spans ``redact`` found, as table columns."""
    return {"kind": [k for _, _, k in spans], "characters": [f"{a}–{b}" for a, b, _ in spans],
            "text hidden": [text[a:b] for a, b, _ in spans]}


def miss_rows() -> dict:
    """``known_misses()`` as table columns."""
    cases = known_misses()
    return {"text": [c.text for c in cases], "should hide": [c.private for c in cases],
            "filter output": [c.output for c in cases], "left visible": [c.leaked for c in cases]}


def over_rows() -> dict:
    """``over_redactions()`` as table columns."""
    cases = over_redactions()
    return {"harmless text": [t for t, _ in cases], "filter output": [o for _, o in cases]}


# ---------------------------------------------------------------------------------------------- URL controls
STEP_CHOICES = (10, 25, 50, 100, 200, 400, 800)  # steps of each arm
BATCH_CHOICES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)  # expected examples per step (some above the windows)
DELTA_CHOICES = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)  # δ of the guarantee
TIMES_CHOICES = (0, 1, 2, 4, 8, 16, 32)  # canary insertions
SIGMA_RANGE = (0.0, 20.0)  # noise multiplier (0 is offered: it gets a message)
CLIP_RANGE = (0.0, 10.0)  # clip norm (0 is offered: it gets a message)


def settings_from(values: dict) -> PrivacySettings:
    """The run of the page's control ``values`` (URL key -> value)."""
    d, c = DPSettings(), CanarySettings()
    dp = dataclasses.replace(d, noise_multiplier=float(values["sg_dp_sigma"]), clip=float(values["sg_dp_clip"]),
                             steps=int(values["sg_dp_steps"]), batch_size=int(values["sg_dp_batch"]),
                             delta=float(values["sg_dp_delta"]), seed=int(values["sg_dp_seed"]))
    canary = dataclasses.replace(c, times=int(values["sg_dp_times"]), seed=int(values["sg_dp_seed"]))
    return PrivacySettings(dp, canary)


def url_defaults() -> dict:
    """The Safeguards page's controls of this tab (keys ``sg_dp_*``) at their defaults."""
    d, c = DPSettings(), CanarySettings()
    return {"sg_dp_sigma": d.noise_multiplier, "sg_dp_clip": d.clip, "sg_dp_steps": d.steps,
            "sg_dp_batch": d.batch_size, "sg_dp_delta": d.delta, "sg_dp_times": c.times, "sg_dp_seed": d.seed,
            "sg_dp_text": FILTER_EXAMPLE}


# ---------------------------------------------------------------------------------------------- the bench
def bench_figures(quick: bool = False) -> dict:
    """The issue's privacy figures from a real run: ε, δ, σ, steps, the canary's exposure and the
    held-out loss with and without DP (``quick``: 20 steps, a few seconds)."""
    settings = (PrivacySettings(dataclasses.replace(DPSettings(), steps=20, batch_size=16), measurements=4) if quick
                else PrivacySettings())
    run = run_to_end(settings)
    c = run.comparison
    return {"epsilon": round(c.dp.epsilon, 4), "delta": c.dp.settings.delta, "sigma": c.dp.settings.noise_multiplier,
            "clip": c.dp.settings.clip, "steps": c.dp.settings.steps, "batch_size": c.dp.settings.batch_size,
            "sampling_rate": round(c.dp.q, 6), "canary_insertions": c.canary.times,
            "exposure_dp_bits": round(c.dp_exposure.exposure, 4),
            "exposure_plain_bits": round(c.plain_exposure.exposure, 4),
            "exposure_max_bits": round(c.plain_exposure.max_exposure, 4),
            "held_out_loss_dp": round(c.dp_held_out, 4), "held_out_loss_plain": round(c.plain_held_out, 4),
            "clipped_share": round(c.dp.clipped_share, 4), "dp_seconds": round(c.dp.seconds, 2),
            "plain_seconds": round(c.plain.seconds, 2)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = default_comparison()
    print(f"DP arm {result.dp.seconds:.0f} s, plain arm {result.plain.seconds:.0f} s (one thread)")
    for line in findings(result):
        print("-", line)
