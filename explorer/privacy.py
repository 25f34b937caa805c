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
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad_and_value, vmap

from . import accountant
from .config import ModelConfig
from .corpus import HELD_OUT, Corpus
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


def train_dp(corpus: Corpus, config: ModelConfig, settings: DPSettings) -> DPRun:
    """Train a fresh model on ``corpus``'s training text by DP-SGD (or, ``private=False``, by the
    same loop with neither clipping nor noise: the baseline)."""
    settings.validate()
    x_all, y_all = windows(corpus.train, config.block_size)  # (N, T) each
    n = len(x_all)
    q = settings.batch_size / n
    if q >= 1:
        raise PrivacyError(f"batch_size = {settings.batch_size} but the text holds only {n} windows: "
                           "the sampling rate would be 1 or more")
    model = build_model(config, settings.seed).train()
    params = [p for p in model.parameters()]
    opt = (torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
           if settings.optimizer == "adamw" else torch.optim.SGD(params, lr=settings.lr))
    gen_sample = torch.Generator().manual_seed(settings.seed + 1)
    gen_noise = torch.Generator().manual_seed(settings.seed + 2)
    names = [k for k, _ in model.named_parameters()]
    losses, clipped, seen = [], 0, 0
    t0 = time.perf_counter()
    for _ in range(settings.steps):
        idx = poisson_batch(n, q, gen_sample)
        x, y = x_all[idx], y_all[idx]  # (b, T), b varies
        if settings.private:
            if len(idx):
                grads, per = per_example_grads_and_losses(model, x, y)  # (b, ...) each, (b,)
                summed, norms = clip_and_sum(grads, settings.clip)
                clipped += int((norms > settings.clip).sum())
                seen += len(idx)
                losses.append(float(per.mean()))
            else:  # an empty draw still releases noise: the step is accounted for
                summed = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
            noisy = noisy_gradient(summed, settings, settings.batch_size, gen_noise)
            for name, p in zip(names, params):
                p.grad = noisy[name]
        else:
            opt.zero_grad(set_to_none=True)
            if len(idx) == 0:
                continue
            logits = model(x).logits  # (b, T, V)
            per = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)  # (b,)
            (per.sum() / settings.batch_size).backward()
            losses.append(float(per.mean()))
        opt.step()
    model.eval()
    eps = (accountant.epsilon(q, settings.noise_multiplier, settings.steps, settings.delta)
           if settings.private else math.inf)
    return DPRun(model, settings, n, q, eps, losses, clipped / seen if seen else 0.0, time.perf_counter() - t0)


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
    if template.count("{}") != 1:
        raise PrivacyError(f"template {template!r}: it needs exactly one {{}} where the secret goes")
    prefix = template.split("{}")[0]
    others = [c for c in candidates if c != secret]
    scores = log_perplexities(model, tokenizer, prefix, [secret] + others)
    rank, size, exp = rank_exposure(float(scores[0]), scores[1:].tolist())
    return Exposure(exp, rank, size, float(scores[0]), float(scores.median()))


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
        held.append(corpus.held_out_loss(run.model, config.block_size))
    hits = len(secret_windows(corpus, canary.secret, config.block_size))
    return Comparison(runs[0], runs[1], exps[0], exps[1], held[0], held[1], corpus.uniform_loss(), canary, hits,
                      alphabet)


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


# ---------------------------------------------------------------------------------------------- the page
def url_defaults() -> dict:
    """The Safeguards page's controls of this tab (keys ``sg_dp_*``) at their defaults."""
    return {}


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = default_comparison()
    print(f"DP arm {result.dp.seconds:.0f} s, plain arm {result.plain.seconds:.0f} s (one thread)")
    for line in findings(result):
        print("-", line)
