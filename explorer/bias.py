"""Bias a model learns from skewed data, measured with a template probe, and what counterfactual data
augmentation does about it.

The corpus is generated here (no downloads): template sentences in which an occupation word is followed
by one of two invented group words, ``zim`` (group A) or ``vor`` (group B), e.g. ``"the baker is zim."``.
A ``skew`` sets how often the TARGET occupations go with A (and the COUNTER occupations with B) in the
training text; 0.5 is balanced. The two groups appear equally often overall, so what a model can pick
up is the association between occupation and group, the kind of stereotype that word embeddings and
language models were found to learn from text (Bolukbasi et al. 2016, "Man is to Computer Programmer
as Woman is to Homemaker?"; Caliskan et al. 2017; Zhao et al. 2017, "Men Also Like Shopping", who
measured bias AMPLIFICATION: predictions more skewed than the training data).

The probe (in the spirit of the template probes of Kurita et al. 2019 and May et al. 2019): held-out
templates never seen in training, cut just before the group word (``"my baker is "``); the model's
preference is ``log P(zim | context) - log P(vor | context)``, each summed over the word's characters,
teacher-forced. The measured skew is the share of probes that prefer A, and, as a probability to set
beside the data's share, the mean of ``P(A) / (P(A) + P(B))``.

Counterfactual data augmentation (Lu et al. 2018, "Gender Bias in Neural Natural Language Processing";
Zmigrod et al. 2019): each training sentence gets a copy with the two group words swapped (the copies
shuffled in among the originals), so the text holds every association both ways; the model is trained
again, for the same steps, and probed again.

``BiasJob`` trains the model on the skewed text and, with ``augment``, a second one (same seed) on the
augmented text, in turns (``explorer.runs.TurnsJob``); ``run_bias`` does the same in one call.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, replace
from typing import Optional

import torch

from .config import ModelConfig
from .corpus import Corpus
from .model import GPT, build_model
from .jobs import run_to_end
from .runs import TurnsJob, training_peak_bytes
from .train import TrainConfig, Trainer

GROUP_A, GROUP_B = "zim", "vor"  # the two invented group words: same length, no shared letter
TARGETS = ("baker", "pilot", "judge", "miner")  # occupations that go with A in a share `skew` of their sentences
COUNTERS = ("nurse", "clerk", "tailor", "guard")  # occupations that go with B in that share (A in 1 - skew)
TRAIN_TEMPLATES = (  # {o}: an occupation, {g}: a group word; the occupation always comes first
    "the {o} is {g}.",
    "a {o} who is {g} came.",
    "our {o} was {g} by birth.",
    "the old {o} is {g}.",
    "that day the {o} felt {g}.",
    "every {o} there is {g}.",
)
PROBE_TEMPLATES = (  # held out: never in the training text; the probe cuts each just before {g}
    "my {o} is {g}.",
    "one {o} was {g}.",
    "the young {o} is {g}.",
)
MATCH = 0.02  # a model share within this of the data's share "matches" it (findings)
RECORD_EVERY = 50  # steps between probe measurements while a job trains
SPREAD_SEEDS = 5  # seeds over which BALANCED_SPREAD was measured
BALANCED_SPREAD = (0.4092, 0.5903, 1.0)  # seed noise at the default settings, seeds 0-4, both arms at skew 0.5: lowest
# and highest P(A) of models trained on balanced text, largest share of probes on which one of them picks the same
# word (seed_spread; bench_figures() measures it again)
SKEWED_SPREAD = (0.9, -0.0260, 0.0354)  # seed noise at skew 0.9, default settings, seeds 0-4: the lowest and highest
# P(A) minus the text's share of A of the model on the skewed text (skewed_spread; bench_figures() measures it again)
_SWAP = re.compile(rf"\b({GROUP_A}|{GROUP_B})\b")
_SENTENCE = re.compile(r"[^.]*\.")
_WORD = re.compile(r"[a-z]+")


class BiasError(ValueError):
    """Settings the bias experiment cannot run with; the message says why."""


@dataclass(frozen=True)
class BiasSettings:
    skew: float = 0.9  # share of the target occupations' sentences that say group A (counters: group B); 0.5 = balanced
    sentences: int = 3000  # template sentences generated for the text (the last tenth of the text is held out)
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block; must divide n_embd
    n_embd: int = 48  # residual stream width
    context: int = 32  # characters the model reads at once; training windows are this long
    batch_size: int = 32  # windows per training step
    lr: float = 1e-2  # peak learning rate (AdamW), warm-up then cosine decay to a tenth
    steps: int = 600  # training steps of each model
    seed: int = 0  # seeds the generated text, the weights and the stream of training windows
    augment: bool = True  # also train a second model (same seed) on the counterfactually augmented text

    def problem(self) -> Optional[str]:
        """Why these settings cannot run, or None."""
        if isinstance(self.skew, bool) or not isinstance(self.skew, (int, float)) or not 0.0 <= self.skew <= 1.0:
            return f"skew = {self.skew!r}: it is a share of sentences, from 0 to 1 (0.5 = balanced)"
        if not 200 <= self.sentences <= 200_000:
            return f"sentences = {self.sentences}: allowed range is 200 to 200,000"
        if not 1 <= self.steps <= 50_000:
            return f"steps = {self.steps}: allowed range is 1 to 50,000"
        longest = max(len(c) for c in probe_contexts(TARGETS + COUNTERS)) + len(GROUP_A) - 1  # positions read
        if self.context < longest:
            return f"context = {self.context}: the longest probe needs the model to read {longest} characters"
        try:
            self.model_config(40)
        except ValueError as e:
            return str(e)
        return None

    def check(self) -> None:
        why = self.problem()
        if why:
            raise BiasError(why)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, block_size=self.context, n_layer=self.n_layer,
                           n_head=self.n_head, n_embd=self.n_embd)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           warmup=max(1, min(30, self.steps // 10)), seed=self.seed)


# ---------------------------------------------------------------------------------------------- data
def _prefix(template: str, occupation: str) -> str:
    """The template up to the group word, e.g. ``"my baker is "``."""
    return template.split("{g}")[0].format(o=occupation)


def skewed_sentences(skew: float, n: int, seed: int) -> list[str]:
    """``n`` training sentences: a random occupation and template each; a target occupation takes group A
    with probability ``skew``, a counter occupation with probability ``1 - skew``."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        occ = rng.choice(TARGETS + COUNTERS)
        p_a = skew if occ in TARGETS else 1.0 - skew
        group = GROUP_A if rng.random() < p_a else GROUP_B
        out.append(rng.choice(TRAIN_TEMPLATES).format(o=occ, g=group))
    return out


def swap(sentence: str) -> str:
    """The sentence with the two group words exchanged (the counterfactual)."""
    return _SWAP.sub(lambda m: GROUP_B if m.group(1) == GROUP_A else GROUP_A, sentence)


def augmented(sentences: list[str], seed: int = 0) -> list[str]:
    """Counterfactual data augmentation: the sentences and their swapped copies, shuffled (seeded). Shuffled,
    because a copy right after its original would make the group word predictable from the sentence before
    (the opposite one): measured, that in-context pattern left a model trained on balanced data preferring
    one group on every probe."""
    out = sentences + [swap(x) for x in sentences]
    random.Random(seed).shuffle(out)
    return out


def corpus_for(settings: BiasSettings, augment: bool = False) -> Corpus:
    """The generated text as a ``Corpus`` (sentences joined by spaces), augmented or not."""
    settings.check()
    sents = skewed_sentences(settings.skew, settings.sentences, settings.seed)
    text = " ".join(augmented(sents, settings.seed + 1) if augment else sents) + " "
    return Corpus(f"bias-{settings.skew}-{'augmented' if augment else 'skewed'}", text)


@dataclass(frozen=True)
class DataCounts:
    a: int  # target-occupation sentences that say group A
    b: int  # target-occupation sentences that say group B
    counter_a: int  # counter-occupation sentences that say group A
    counter_b: int  # counter-occupation sentences that say group B

    @property
    def share_a(self) -> float:
        """The data's skew: share of the target occupations' sentences with group A."""
        return self.a / (self.a + self.b) if self.a + self.b else float("nan")

    @property
    def counter_share_a(self) -> float:
        n = self.counter_a + self.counter_b
        return self.counter_a / n if n else float("nan")


def count_skew(text: str) -> DataCounts:
    """Count, sentence by sentence (a sentence ends at '.'), occupations co-occurring with a group word.
    A sentence is counted once per (occupation, group word) pair in it; an unfinished last sentence is not."""
    a = b = ca = cb = 0
    for sent in _SENTENCE.findall(text):
        words = _WORD.findall(sent)
        na, nb = words.count(GROUP_A), words.count(GROUP_B)
        nt = sum(words.count(o) for o in TARGETS)
        nc = sum(words.count(o) for o in COUNTERS)
        a, b, ca, cb = a + nt * na, b + nt * nb, ca + nc * na, cb + nc * nb
    return DataCounts(a, b, ca, cb)


def training_text(corpus: Corpus) -> str:
    """The part of the corpus the trainer draws its windows from (the first 90 %)."""
    return corpus.text[: len(corpus.train)]


# --------------------------------------------------------------------------------------------- probe
@torch.no_grad()
def word_logprob(model: GPT, tokenizer, context: str, word: str) -> float:
    """``log P(word | context)``: the sum over the word's characters of each one's log-probability given
    the context and the characters before it (teacher-forced, one forward pass)."""
    ids = tokenizer.encode(context + word)
    if len(ids) - 1 > model.config.block_size:
        raise BiasError(f"the probe {context + word!r} needs {len(ids) - 1} positions; the model reads "
                        f"{model.config.block_size}: shorten the context")
    x = torch.tensor([ids[:-1]])  # (1, T)
    logp = torch.log_softmax(model(x).logits[0].float(), dim=-1)  # (T, V)
    n = len(word)
    targets = torch.tensor(ids[-n:])  # (n,)
    return float(logp[-n:].gather(1, targets[:, None]).sum())


def preference(model: GPT, tokenizer, context: str) -> float:
    """``log P(A | context) - log P(B | context)`` in nats: > 0 prefers group A."""
    return word_logprob(model, tokenizer, context, GROUP_A) - word_logprob(model, tokenizer, context, GROUP_B)


def probe_contexts(occupations=TARGETS) -> list[str]:
    """Held-out probe contexts: each probe template up to the group word, after a sentence end."""
    return [". " + _prefix(t, o) for t in PROBE_TEMPLATES for o in occupations]


@dataclass(frozen=True)
class ProbeResult:
    prefs: tuple  # log P(A) - log P(B) per probe context, nats
    mass: float  # mean P(A) + P(B): how much of its probability the model puts on the two words at all
    log_a: tuple = ()  # log P(A | context) per probe context (word_logprob), nats
    log_b: tuple = ()  # log P(B | context) per probe context, nats

    @property
    def share_a(self) -> float:
        """Share of probes preferring A (a decision: which word is more likely)."""
        return sum(p > 0 for p in self.prefs) / len(self.prefs)

    @property
    def mean_log_odds(self) -> float:
        return sum(self.prefs) / len(self.prefs)

    @property
    def p_a(self) -> float:
        """Mean of P(A) / (P(A) + P(B)) over the probes: the model's share of A, set beside the data's."""
        return sum(1 / (1 + math.exp(-p)) for p in self.prefs) / len(self.prefs)


@torch.no_grad()
def probe(model: GPT, tokenizer, occupations=TARGETS) -> ProbeResult:
    model.eval()
    log_a, log_b = [], []
    for ctx in probe_contexts(occupations):
        log_a.append(word_logprob(model, tokenizer, ctx, GROUP_A))
        log_b.append(word_logprob(model, tokenizer, ctx, GROUP_B))
    mass = sum(math.exp(la) + math.exp(lb) for la, lb in zip(log_a, log_b)) / len(log_a)
    return ProbeResult(tuple(la - lb for la, lb in zip(log_a, log_b)), mass, tuple(log_a), tuple(log_b))


# ----------------------------------------------------------------------------------------------- run
@dataclass(frozen=True)
class BiasRecord:
    step: int  # training steps done
    target: ProbeResult  # the target occupations' probes (the data favours A)
    counter: ProbeResult  # the counter occupations' probes (the data favours B)


@dataclass
class BiasRun:
    settings: BiasSettings
    data: dict  # arm ("skewed", "augmented") -> DataCounts of the training text the arm trained on
    records: dict  # arm -> [BiasRecord], oldest first
    step: int  # steps done by the slowest arm
    finished: bool

    def last(self, arm: str) -> BiasRecord:
        return self.records[arm][-1]

    def findings(self) -> list[str]:
        """Sentences for the page, each computed from this run's numbers."""
        out = []
        d = self.data["skewed"]
        r = self.last("skewed").target
        n = len(r.prefs)
        out.append(f"In the training text, {d.a:,} of the {d.a + d.b:,} sentences with a target occupation say "
                   f"{GROUP_A} ({d.share_a:.1%}; skew asked: {self.settings.skew:.0%}).")
        if r.mass < 0.5:
            out.append(f"After {self.last('skewed').step} steps the model gives the two group words only "
                       f"{r.mass:.0%} of its probability in the probe slot: it has not learned the sentences well "
                       "yet, so its preferences say little.")
        out.append(f"On {n} held-out probes the model prefers {GROUP_A} in {round(r.share_a * n)} "
                   f"({r.share_a:.0%}); its probability of {GROUP_A} between the two averages {r.p_a:.1%} "
                   f"against the data's {d.share_a:.1%}: {_compare(r.p_a, d.share_a)}; mean log-odds "
                   f"{r.mean_log_odds:+.2f} nats.")
        if abs(d.share_a - 0.5) <= MATCH and abs(r.p_a - d.share_a) > MATCH and r.mass >= 0.5:
            out.append(_noise(r.p_a))
        if abs(d.share_a - 0.5) > MATCH and abs(r.p_a - d.share_a) > MATCH and r.mass >= 0.5:
            out.append(_skewed_noise(r.p_a - d.share_a))
        if abs(d.share_a - 0.5) > MATCH:
            fav, data_fav = (GROUP_A, d.share_a) if d.share_a > 0.5 else (GROUP_B, 1 - d.share_a)
            pick = r.share_a if fav == GROUP_A else 1 - r.share_a
            if pick > data_fav + MATCH:
                out.append(f"As a decision (take the likelier word) the skew is amplified: {pick:.0%} of probes "
                           f"pick {fav}, where {data_fav:.1%} of the data says it (Zhao et al. 2017). Taking the "
                           "likelier word turns any lean into a decision: at the default settings, models trained "
                           f"on balanced text picked one word on up to {BALANCED_SPREAD[2]:.0%} of the probes, by "
                           "the seed alone.")
        if "augmented" in self.records:
            da, ra = self.data["augmented"], self.last("augmented").target
            before, after = abs(r.p_a - 0.5), abs(ra.p_a - 0.5)
            s = (f"With counterfactual augmentation the training text says {GROUP_A} in {da.share_a:.1%} of "
                 f"target sentences; the retrained model's probability of {GROUP_A} averages {ra.p_a:.1%} "
                 f"(prefers it on {ra.share_a:.0%} of probes; mean log-odds {ra.mean_log_odds:+.2f} nats). ")
            if r.mass < 0.5 or ra.mass < 0.5:
                s += ("A model that gives the two words so little probability has not learned the slot yet: "
                      "train longer before comparing the two.")
            elif before <= MATCH:
                s += "There was little skew to remove."
            elif after < before:
                s += (f"The distance from 50 % fell from {before * 100:.1f} to {after * 100:.1f} points: "
                      f"{1 - after / before:.0%} of the model's skew removed"
                      + ("." if after <= MATCH else f"; {after * 100:.1f} points remain."))
            else:
                s += (f"It did not help: the distance from 50 % went from {before * 100:.1f} to "
                      f"{after * 100:.1f} points.")
            out.append(s)
            if after > MATCH and ra.mass >= 0.5:
                out.append(_noise(ra.p_a))
        return out


def _noise(p_a: float) -> str:
    """Whether a model's P(A) off 50 % is within what the seed alone does to models on balanced text."""
    lo, hi, _ = BALANCED_SPREAD
    s = (f"Seed noise: models trained on balanced text at the default settings give P({GROUP_A}) from {lo:.1%} to "
         f"{hi:.1%}, depending only on the seed ({SPREAD_SEEDS} seeds); ")
    if lo <= p_a <= hi:
        return s + (f"{p_a:.1%} is inside that range, so its lean is within seed noise: this probe cannot tell it "
                    "from no lean at all.")
    return s + f"{p_a:.1%} is outside that range."


def _skewed_noise(diff: float) -> str:
    """Whether a model's P(A) off its text's share is within what the seed alone does at a skewed text."""
    skew, lo, hi = SKEWED_SPREAD
    s = (f"Seed noise: at skew {skew:g} and the default settings, the model's P({GROUP_A}) landed from "
         f"{lo * 100:+.1f} to {hi * 100:+.1f} points off its text's share, depending only on the seed "
         f"({SPREAD_SEEDS} seeds); ")
    if lo <= diff <= hi:
        return s + f"this run's {diff * 100:+.1f} points are inside that range, so they may be seed noise."
    return s + f"this run's {diff * 100:+.1f} points are outside that range."


def _compare(model_share: float, data_share: float) -> str:
    """How a model's share of A stands to the data's, in words."""
    m, d = model_share - 0.5, data_share - 0.5
    if abs(model_share - data_share) <= MATCH:
        return "it matches the data"
    if abs(d) <= MATCH:
        return f"leaning to {GROUP_A if m > 0 else GROUP_B} where the data is balanced"
    if m * d < 0 and abs(m) > MATCH:
        return "skewed the other way from the data"
    return "more skewed than the data (amplified)" if abs(m) > abs(d) else "less skewed than the data"


class BiasJob(TurnsJob):
    """Train the model on the skewed text and (with ``augment``) a second one on the augmented text, in
    turns, probing both every ``RECORD_EVERY`` steps."""

    title = "training on skewed and augmented text"

    def __init__(self, settings: BiasSettings):
        settings.check()
        self.settings = settings
        self.key = ("bias", settings)
        self.corpora = {"skewed": corpus_for(settings)}
        if settings.augment:
            self.corpora["augmented"] = corpus_for(settings, augment=True)
        vocab = max(c.vocab_size for c in self.corpora.values())
        self.peak_bytes = len(self.corpora) * training_peak_bytes(settings.model_config(vocab),
                                                                  settings.batch_size, settings.context)
        self.data = {arm: count_skew(training_text(c)) for arm, c in self.corpora.items()}
        self.trainers: dict[str, Trainer] = {}
        self.records: dict[str, list[BiasRecord]] = {arm: [] for arm in self.corpora}
        self._live: Optional[BiasRun] = None

    def _record(self, arm: str, tr: Trainer) -> None:
        tok = self.corpora[arm].tokenizer
        self.records[arm].append(BiasRecord(tr.step, probe(tr.model, tok, TARGETS), probe(tr.model, tok, COUNTERS)))

    def step(self, slice_s: float) -> bool:
        t0 = time.perf_counter()
        s = self.settings
        if not self.trainers:
            for arm, corpus in self.corpora.items():
                model = build_model(s.model_config(corpus.vocab_size), s.seed)
                self.trainers[arm] = Trainer(model, corpus, s.context, s.train_config())
                self._record(arm, self.trainers[arm])
        while time.perf_counter() - t0 < slice_s and not self.finished:
            for arm, tr in self.trainers.items():
                if not tr.done:
                    tr.advance(RECORD_EVERY - tr.step % RECORD_EVERY)
                    self._record(arm, tr)
        self._live = BiasRun(s, dict(self.data), {a: list(r) for a, r in self.records.items()},
                             min(tr.step for tr in self.trainers.values()), self.finished)
        return self.finished

    def model(self, arm: str) -> GPT:
        return self.trainers[arm].model


def run_bias(settings: BiasSettings) -> BiasRun:
    """Train and probe to the end in this thread (tests, scripts)."""
    return run_to_end(BiasJob(settings), 60.0)


def main(argv=None) -> None:
    """``python -m explorer.bias [skew ...]``: probe skew against data skew, with and without augmentation."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("skews", nargs="*", type=float, default=[0.5, 0.7, 0.9])
    p.add_argument("--steps", type=int, default=BiasSettings.steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sentences", type=int, default=BiasSettings.sentences)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print("skew  data_A  model_pA  prefer_A  logodds | aug_data_A  aug_pA  aug_prefer_A  aug_logodds")
    for skew in args.skews:
        run = run_bias(replace(BiasSettings(), skew=skew, steps=args.steps, seed=args.seed, sentences=args.sentences))
        r, ra = run.last("skewed").target, run.last("augmented").target
        print(f"{skew:4.2f}  {run.data['skewed'].share_a:6.3f}  {r.p_a:8.3f}  {r.share_a:8.2f}  "
              f"{r.mean_log_odds:+7.2f} | {run.data['augmented'].share_a:10.3f}  {ra.p_a:6.3f}  "
              f"{ra.share_a:12.2f}  {ra.mean_log_odds:+11.2f}")
        for line in run.findings():
            print("   ", line)


# ---------------------------------------------------------------------------------------------- the page
SKEW_STEP = 0.05  # the skew slider's step
STEP_CHOICES = (50, 100, 200, 300, 400, 600, 800, 1000, 1500)  # training steps of each model
SENTENCE_CHOICES = (500, 1000, 2000, 3000, 5000, 10_000)  # sentences generated for the text
ARMS = {"skewed": "model on the skewed text", "augmented": "model on the augmented text"}  # arm -> its name


def settings_from(skew: float, augment: bool, steps: int, sentences: int, seed: int) -> BiasSettings:
    """The settings the tab's controls describe (the model's size stays at its default)."""
    return replace(BiasSettings(), skew=round(float(skew), 4), augment=bool(augment), steps=int(steps),
                   sentences=int(sentences), seed=int(seed))


def url_defaults() -> dict:
    """The Safeguards page's controls of this tab (keys ``sg_bias_*``) at their defaults."""
    d = BiasSettings()
    return {"sg_bias_skew": d.skew, "sg_bias_augment": d.augment, "sg_bias_steps": d.steps,
            "sg_bias_sentences": d.sentences, "sg_bias_seed": d.seed, "sg_bias_occupation": TARGETS[0],
            "sg_bias_template": PROBE_TEMPLATES[0]}


def examples(settings: BiasSettings, n: int = 6) -> list[tuple[str, str]]:
    """The first ``n`` generated training sentences, each with its counterfactual copy."""
    return [(x, swap(x)) for x in skewed_sentences(settings.skew, settings.sentences, settings.seed)[:n]]


def data_counts(settings: BiasSettings) -> dict:
    """arm -> ``DataCounts`` of the training text that arm learns from (what ``BiasJob`` trains on)."""
    arms = ("skewed", "augmented") if settings.augment else ("skewed",)
    return {arm: count_skew(training_text(corpus_for(settings, augment=arm == "augmented"))) for arm in arms}


def template_label(template: str) -> str:
    """A probe template as shown: the occupation and the cut marked, e.g. ``my ‹occupation› is ___``."""
    return template.replace("{o}", "‹occupation›").replace("{g}", "___")


def share_bars(data: dict, run: Optional[BiasRun] = None) -> tuple[list, dict]:
    """``(groups, series)`` for the before/after bars: the share of group A in each training text and, once
    trained, each model's P(A) (of the two words), for the target and the counter occupations."""
    groups = [f"target occupations ({', '.join(TARGETS)})", f"counter occupations ({', '.join(COUNTERS)})"]
    series = {}
    for arm, d in data.items():
        series[f"{arm} text"] = [d.share_a, d.counter_share_a]
        if run is not None and arm in run.records:
            last = run.last(arm)
            series[f"{ARMS[arm]}: P({GROUP_A})"] = [last.target.p_a, last.counter.p_a]
    return groups, series


def step_series(run: BiasRun) -> tuple[dict, tuple]:
    """The target occupations' P(A) and share of probes preferring A of each model against its steps,
    beside its text's share of A (constant, dashed); ``(series, dashed names)``."""
    series, dashed = {}, []
    for arm, records in run.records.items():  # in the order (and so the colours) of share_bars
        name = f"{arm} text: share of {GROUP_A}"
        series[name] = ([0, run.settings.steps], [run.data[arm].share_a] * 2)
        dashed.append(name)
        series[f"{ARMS[arm]}: P({GROUP_A})"] = ([r.step for r in records], [r.target.p_a for r in records])
    for arm, records in run.records.items():
        series[f"{ARMS[arm]}: probes preferring {GROUP_A}"] = ([r.step for r in records],
                                                                [r.target.share_a for r in records])
    return series, tuple(dashed)


def occupation_log_odds(run: BiasRun) -> tuple[list, dict]:
    """``(occupations, {model: mean log-odds per occupation})``: each occupation's ``log P(A) - log P(B)``
    averaged over the probe templates, at each model's last step."""
    out = {}
    for arm in run.records:
        last = run.last(arm)
        values = []
        for result, occs in ((last.target, TARGETS), (last.counter, COUNTERS)):
            for j in range(len(occs)):
                values.append(sum(result.prefs[t * len(occs) + j] for t in range(len(PROBE_TEMPLATES)))
                              / len(PROBE_TEMPLATES))
        out[ARMS[arm]] = values
    return list(TARGETS + COUNTERS), out


def probe_detail(run: BiasRun, occupation: str, template: str) -> list[dict]:
    """One probe, read from each model's last measurement: its context, ``log P(A)``, ``log P(B)`` (each the
    sum of the word's characters' log-probabilities, teacher-forced) and what they make."""
    if occupation not in TARGETS + COUNTERS:
        raise BiasError(f"{occupation!r} is not one of the occupations ({', '.join(TARGETS + COUNTERS)})")
    if template not in PROBE_TEMPLATES:
        raise BiasError(f"{template!r} is not one of the probe templates")
    occs = TARGETS if occupation in TARGETS else COUNTERS
    i = PROBE_TEMPLATES.index(template) * len(occs) + occs.index(occupation)
    rows = []
    for arm in run.records:
        last = run.last(arm)
        result = last.target if occs is TARGETS else last.counter
        la, lb = result.log_a[i], result.log_b[i]
        rows.append({"model": ARMS[arm], "step": last.step, "probe": probe_contexts(occs)[i][2:] + "___",
                     f"log P({GROUP_A})": round(la, 3), f"log P({GROUP_B})": round(lb, 3),
                     "log-odds": round(la - lb, 3), f"P({GROUP_A}) of the two": round(1 / (1 + math.exp(lb - la)), 3),
                     "prefers": GROUP_A if la > lb else GROUP_B})
    return rows


DEFINITIONS = (
    f"- **The probe**: held-out templates (never in the training text), cut just before the group word, e.g. "
    f"`my baker is ___`. The model's preference is log P({GROUP_A} | probe) − log P({GROUP_B} | probe), each the sum "
    "of the word's characters' log-probabilities given everything before them (teacher-forced). "
    f"**P({GROUP_A}) of the two** is P({GROUP_A}) / (P({GROUP_A}) + P({GROUP_B})), averaged over the probes, to set "
    f"beside the text's share of {GROUP_A}; **probes preferring {GROUP_A}** counts those where {GROUP_A} is the "
    "likelier word. Template probes of this kind: Kurita et al. 2019, May et al. 2019.\n"
    f"- **Skew**: the share of the target occupations' sentences that say {GROUP_A}; the counter occupations say "
    f"{GROUP_B} in the same share, so both words appear about equally often overall and what a model can learn is "
    "the association between occupation and group.\n"
    "- **Counterfactual data augmentation** (Lu et al. 2018, \"Gender Bias in Neural Natural Language "
    "Processing\"; Zmigrod et al. 2019): every training sentence gets a copy with the two group words swapped, "
    f"shuffled in among the originals, so every occupation goes with {GROUP_A} exactly as often as with {GROUP_B}. "
    "The second model is trained on that text from the same seed for the same steps.\n"
    "- **Bias amplification** (Zhao et al. 2017, \"Men Also Like Shopping\", measured on image-labelling models): "
    "a model's predictions more skewed than its training data. Here it is checked on the decisions (the share of "
    "probes on which the word the data favours is the likelier one) and on the probability.\n"
    "- **Seed noise**: a model trained on balanced text still leans to one word or the other, by how its weights "
    f"and training windows were drawn; the findings compare a lean with the ranges {SPREAD_SEEDS} seeds gave at the "
    f"default settings (on balanced text, and at skew {SKEWED_SPREAD[0]:g})."
)


QUICK = BiasSettings(sentences=600, n_layer=1, n_embd=32, batch_size=16, steps=60)  # bench_figures(quick=True)


def _figures(run: BiasRun) -> dict:
    out = {}
    for arm in run.records:
        r, d = run.last(arm).target, run.data[arm]
        out[arm] = {"data_share_a": round(d.share_a, 4), "model_p_a": round(r.p_a, 4),
                    "model_prefer_a": round(r.share_a, 4), "model_log_odds": round(r.mean_log_odds, 4),
                    "counter_model_p_a": round(run.last(arm).counter.p_a, 4), "mass": round(r.mass, 4)}
    return out


def seed_spread(runs: list) -> tuple[float, float, float]:
    """Seed noise from runs at skew 0.5 that differ only in their seed: the lowest and highest P(A) of their
    models (both arms: the generated text, and its exactly balanced augmented copy), and the largest share
    of probes on which one of them picks the same word."""
    ps, picks = [], []
    for run in runs:
        ps += [run.last(arm).target.p_a for arm in run.records]
        picks += [max(run.last(arm).target.share_a, 1 - run.last(arm).target.share_a) for arm in run.records]
    return min(ps), max(ps), max(picks)


def skewed_spread(runs: list) -> tuple[float, float]:
    """Seed noise from runs at one skew that differ only in their seed: the lowest and highest P(A) minus
    the text's share of A of the model on the skewed text."""
    diffs = [run.last("skewed").target.p_a - run.data["skewed"].share_a for run in runs]
    return min(diffs), max(diffs)


def bench_figures(quick: bool = False) -> dict:
    """The issue's figure, probe skew against data skew with and without augmentation: at skews 0.9 and
    0.5, the data's share of A, each model's P(A), share of probes preferring A and mean log-odds (target
    occupations), for the model on the skewed text and on the augmented text; and seed noise: the spread of
    models trained on balanced text, and of the skewed model's P(A) off its text's share at skew 0.9.
    ``quick``: tiny models, two seeds (seconds)."""
    settings = QUICK if quick else BiasSettings()
    out = {"settings": {"steps": settings.steps, "sentences": settings.sentences, "n_layer": settings.n_layer,
                        "n_embd": settings.n_embd, "seed": settings.seed}, "skews": {}}
    seeds = 2 if quick else SPREAD_SEEDS
    balanced = [run_bias(replace(settings, skew=0.5, augment=True, seed=seed)) for seed in range(seeds)]
    skewed = [run_bias(replace(settings, skew=0.9, augment=seed == 0, seed=seed)) for seed in range(seeds)]
    out["skews"]["0.9"] = _figures(skewed[0])
    out["skews"]["0.5"] = _figures(balanced[0])
    lo, hi, pick = seed_spread(balanced)
    out["balanced_spread"] = {"seeds": seeds, "p_a_low": round(lo, 4), "p_a_high": round(hi, 4),
                              "most_probes_one_word": round(pick, 4)}
    lo, hi = skewed_spread(skewed)
    out["skewed_spread"] = {"skew": 0.9, "seeds": seeds, "p_a_minus_data_low": round(lo, 4),
                            "p_a_minus_data_high": round(hi, 4)}
    return out


if __name__ == "__main__":
    main()
