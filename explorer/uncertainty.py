"""Uncertainty a model can show about what it writes, and whether its probabilities can be trusted.

Two measurements, both on a model the student trained:

* **Per-token uncertainty** of generated text: the probability the model gave each character it
  wrote, and the entropy (in nats) of the distribution it drew that character from (Shannon 1948).
  A character whose entropy passes a threshold the student sets is *flagged*: the model spread its
  bet there. This is what "the model flags its own uncertain statements" can mean at this scale.
* **Calibration** on held-out data (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern
  Neural Networks"): a reliability diagram of top-1 confidence against accuracy in equal-width bins,
  the expected calibration error (ECE, Naeini, Cooper & Hauskrecht 2015; the bin-count weighting of
  Guo et al.), and *temperature scaling*: one scalar T fitted on a calibration split by minimising the
  negative log-likelihood, judged on a separate test split. Dividing the logits by T never changes
  which character ranks first, so accuracy is unchanged; only the confidence moves.

The held-out data is the last tenth of a ``Corpus`` (``corpus.held_out``), cut in two halves: the
first half calibrates, the second tests (disjoint text). For a symbolic ``Task`` both splits are
fresh examples (answer positions only), drawn from different seeds.

The Safeguards page's Uncertainty tab (the last section) measures the Training page's character model
on the built-in novel: trained by ``textlm.training_job`` (the same job, by key, as that page's run at
the same settings), then measured by ``calibration_job`` (``measure``: the report, the reliability at
any temperature, ECE and NLL over a grid of temperatures), both on the server's scheduler.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .corpus import Corpus
from .figures import tokens_html
from .generate import distribution, generate
from .jobs import FunctionJob, run_to_end
from .model import GPT
from .tasks import IGNORE, CharTokenizer, Task


class UncertaintyError(ValueError):
    """Settings or data that cannot be measured; the message says why."""


# ---------------------------------------------------------------------------------------------- per-token uncertainty
def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last dimension, ``0 ln 0 = 0``: ``(..., V) -> (...)``."""
    return torch.special.entr(probs.double()).sum(-1).to(probs.dtype)


@dataclass(frozen=True)
class TokenInfo:
    char: str  # the character written
    prob: float  # the probability of that character in the distribution it was drawn from
    entropy: float  # entropy of that distribution, nats (0: certain; ln V: uniform over V characters)
    flagged: bool  # entropy > the threshold the user set


@torch.no_grad()
def token_uncertainty(model: GPT, tokenizer: CharTokenizer, prompt: str, n: int, temperature: float = 0.8,
                      top_k: Optional[int] = None, seed: int = 0, threshold: float = 1.5,
                      slide: bool = True) -> list[TokenInfo]:
    """Write ``n`` characters after ``prompt`` (``explorer.generate``, same arguments) and give each
    its probability and the entropy of the distribution it was drawn from (after temperature and
    top-k; the model's own distribution when greedy); ``flagged`` when the entropy exceeds
    ``threshold`` nats. Errors of ``generate`` (unknown characters, too long) pass through."""
    if not math.isfinite(threshold) or threshold < 0:
        raise UncertaintyError(f"threshold = {threshold}: an entropy threshold is a number of nats, 0 or more")
    if n < 1:
        raise UncertaintyError(f"n = {n}: write at least one character")
    gen = generate(model, tokenizer, prompt, n, temperature, top_k or None, seed, slide=slide)
    infos = []
    for i, ch in enumerate(gen.text):
        p = distribution(gen.logits[i], temperature, top_k)  # what generate drew it from
        h = float(entropy(p))
        infos.append(TokenInfo(ch, gen.probs[i], h, h > threshold))
    return infos


def uncertainty_html(infos: Sequence[TokenInfo], by: str = "probability") -> str:
    """The written text shaded by each character's probability or entropy (``figures.tokens_html``,
    the view the Attention Lab's answers use), flagged characters outlined; the text is escaped."""
    return tokens_html([t.char for t in infos], [t.prob for t in infos], entropies=[t.entropy for t in infos],
                       by=by, flagged=[t.flagged for t in infos])


# ---------------------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Reliability:
    edges: tuple[float, ...]  # bins + 1 bin edges on [0, 1]; bin m holds confidences in (edges[m], edges[m+1]]
    confidence: tuple[float, ...]  # mean top-1 probability in each bin (nan where empty)
    accuracy: tuple[float, ...]  # share of those predictions that were right (nan where empty)
    counts: tuple[int, ...]  # predictions in each bin

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of |B_m| / n * |acc_m - conf_m|."""
        n = self.total
        return float(sum(c / n * abs(a - p) for c, a, p in zip(self.counts, self.accuracy, self.confidence) if c))


def _check_pairs(probs_of_top, correct, bins: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs_of_top, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=np.float64).ravel()
    if p.shape != c.shape:
        raise UncertaintyError(f"{p.size} confidences but {c.size} right/wrong marks: give one of each per prediction")
    if p.size == 0:
        raise UncertaintyError("no predictions to measure: the split is empty")
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise UncertaintyError(f"bins = {bins}: use a whole number of bins, 1 or more")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise UncertaintyError("a confidence is not a probability (between 0 and 1)")
    return p, c


def reliability(probs_of_top, correct, bins: int = 10) -> Reliability:
    """Confidence against accuracy in ``bins`` equal-width bins (Guo et al. 2017): bin m holds the
    predictions whose top-1 probability lies in ``((m-1)/M, m/M]`` (0 itself falls in the first)."""
    p, c = _check_pairs(probs_of_top, correct, bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], p, side="left")  # (N,) bin of each prediction, right-closed bins
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=p, minlength=bins)
    acc_sum = np.bincount(which, weights=c, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(counts > 0, conf_sum / np.maximum(counts, 1), np.nan)
        acc = np.where(counts > 0, acc_sum / np.maximum(counts, 1), np.nan)
    return Reliability(tuple(edges.tolist()), tuple(conf.tolist()), tuple(acc.tolist()),
                       tuple(int(k) for k in counts))


def ece(probs_of_top, correct, bins: int = 10) -> float:
    """Expected calibration error (equal-width bins, weighted by their counts; Guo et al. 2017)."""
    return reliability(probs_of_top, correct, bins).ece


def top1(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(N, V)`` logits and ``(N,)`` targets -> the top-1 probability at ``temperature`` and whether
    the top-1 character is the target (both ``(N,)``)."""
    _check_temperature(temperature)
    p = torch.softmax(logits.double() / temperature, -1)
    conf, pred = p.max(-1)
    return conf.numpy(), (pred == targets).numpy()


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats per prediction) of ``logits / temperature``."""
    _check_temperature(temperature)
    return float(F.cross_entropy(logits.double() / temperature, targets))


def _check_temperature(t: float) -> None:
    if not (math.isfinite(t) and t > 0):
        raise UncertaintyError(f"temperature = {t}: calibration needs a temperature above 0")


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, lo: float = 0.05, hi: float = 20.0,
                    iters: int = 60) -> float:
    """Temperature scaling (Guo et al. 2017): the T in ``[lo, hi]`` minimising the mean NLL of
    ``logits / T``, by golden-section search on log T (the NLL is convex in 1/T, so it has one minimum
    along log T). The best point seen is returned, T = 1 among them: the fit never raises the NLL of
    the data it is fitted on."""
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise UncertaintyError("fit_temperature needs (N, V) logits and (N,) targets")
    if len(targets) == 0:
        raise UncertaintyError("no predictions to fit a temperature on: the calibration split is empty")
    z = logits.double()
    seen = {1.0: nll(z, targets, 1.0)}

    def f(u: float) -> float:
        t = math.exp(u)
        if t not in seen:
            seen[t] = nll(z, targets, t)
        return seen[t]

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return min(seen, key=lambda t: (seen[t], t))


@dataclass(frozen=True)
class CalibrationSettings:
    bins: int = 10  # equal-width confidence bins of the reliability diagram and the ECE
    temperatures: tuple[float, ...] = (0.5, 1.0, 2.0)  # fixed temperatures the test split is also measured at
    windows: int = 256  # corpus: at most this many non-overlapping held-out windows per split (all of them if fewer)
    examples: int = 512  # task: fresh examples per split
    length: int = 0  # window length (corpus) or input length (task); 0: the model's context (corpus) / 8 (task)
    threshold: float = 1.5  # entropy (nats) above which a prediction counts as flagged
    seed: int = 0  # task: the calibration split's examples come from this seed, the test split's from seed + 1


@dataclass
class Split:
    logits: torch.Tensor  # (N, V) next-token logits at T = 1, CPU, float32
    targets: torch.Tensor  # (N,) the tokens that came next


@torch.no_grad()
def _forward(model: GPT, x: torch.Tensor, y: torch.Tensor, chunk: int = 64) -> Split:
    """Logits of every position where ``y`` is not ``IGNORE``; ``x, y`` ``(B, T)``."""
    model.eval()
    device = next(model.parameters()).device
    logits, targets = [], []
    for i in range(0, len(x), chunk):
        out = model(x[i:i + chunk].to(device)).logits.float().cpu()  # (b, T, V)
        mask = y[i:i + chunk] != IGNORE
        logits.append(out[mask])
        targets.append(y[i:i + chunk][mask])
    return Split(torch.cat(logits), torch.cat(targets))


def corpus_splits(model: GPT, corpus: Corpus, windows: int = 256, length: int = 0) -> tuple[Split, Split]:
    """``(calibration, test)``: the first and second halves of ``corpus.held_out``, each cut into
    non-overlapping windows of ``length`` characters (0: the model's context), at most ``windows`` of
    them spread evenly; every position of a window predicts its next character."""
    length = length or model.config.block_size
    if length > model.config.block_size:
        raise UncertaintyError(f"windows of {length} characters do not fit this model's context of "
                               f"{model.config.block_size}")
    half = len(corpus.held_out) // 2
    return tuple(_windows(model, part, windows, length)  # type: ignore[return-value]
                 for part in (corpus.held_out[:half], corpus.held_out[half:]))


def _windows(model: GPT, data: torch.Tensor, windows: int, length: int) -> Split:
    starts = torch.arange(0, len(data) - length, length)  # non-overlapping windows (and their next character)
    if len(starts) == 0:
        raise UncertaintyError(f"a held-out half has {len(data)} characters: too short for windows of {length}")
    if len(starts) > windows:
        starts = starts[torch.linspace(0, len(starts) - 1, windows).round().long()]
    rows = data[starts[:, None] + torch.arange(length + 1)]  # (W, length + 1)
    return _forward(model, rows[:, :-1], rows[:, 1:])


def task_splits(model: GPT, task: Task, examples: int = 512, length: int = 8, seed: int = 0) -> tuple[Split, Split]:
    """``(calibration, test)`` for a task: fresh examples from seeds ``seed`` and ``seed + 1``, the
    predictions at its answer positions (every position for the toy language)."""
    out = []
    for s in (seed, seed + 1):
        x, y = task.batch(torch.Generator().manual_seed(s), examples, length)
        if x.shape[1] > model.config.block_size:
            raise UncertaintyError(f"examples of {x.shape[1]} tokens do not fit this model's context of "
                                   f"{model.config.block_size}: use shorter inputs")
        out.append(_forward(model, x, y))
    return out[0], out[1]


@dataclass(frozen=True)
class Row:
    temperature: float  # T the test split was read at
    ece: float  # expected calibration error on the test split
    nll: float  # mean NLL on the test split, nats
    confidence: float  # mean top-1 probability on the test split
    fitted: bool  # this row's T is the one fitted on the calibration split


@dataclass
class CalibrationReport:
    source: str  # what was measured ("Emma (held-out text)", "Copy (answer positions)")
    n_cal: int  # predictions in the calibration split
    n_test: int  # predictions in the test split
    accuracy: float  # top-1 accuracy on the test split (the same at every temperature)
    confidence: float  # mean top-1 probability on the test split at T = 1
    nll: float  # mean NLL on the test split at T = 1, nats
    fitted_t: float  # temperature fitted on the calibration split
    cal_nll: tuple[float, float]  # calibration-split NLL at T = 1 and at the fitted T
    rows: list[Row]  # the fixed temperatures, then the fitted one
    before: Reliability  # test split at T = 1
    after: Reliability  # test split at the fitted T
    threshold: float  # entropy flag threshold, nats
    flagged_share: float  # share of test predictions (T = 1) whose entropy exceeds the threshold
    error_flagged: float  # error rate among those (nan if none)
    error_unflagged: float  # error rate among the rest (nan if none)

    def row(self, temperature: float) -> Row:
        return next(r for r in self.rows if r.temperature == temperature and not r.fitted)

    @property
    def fitted_row(self) -> Row:
        return next(r for r in self.rows if r.fitted)


def calibrate(model: GPT, source: Union[Corpus, Task], settings: CalibrationSettings = CalibrationSettings()
              ) -> CalibrationReport:
    """Measure calibration of ``model`` on ``source``'s held-out data (see the module docstring):
    ECE and NLL on the test split at each fixed temperature and at the T fitted on the calibration split."""
    if isinstance(source, Corpus):
        cal, test = corpus_splits(model, source, settings.windows, settings.length)
        name = f"{source.title} (held-out text)"
    elif isinstance(source, Task):
        cal, test = task_splits(model, source, settings.examples, settings.length or 8, settings.seed)
        name = f"{source.title} ({'answer positions' if source.symbolic else 'every position'})"
    else:
        raise UncertaintyError(f"cannot calibrate on a {type(source).__name__}: give a Corpus or a Task")
    return report(cal, test, settings, name)


def report(cal: Split, test: Split, settings: CalibrationSettings = CalibrationSettings(),
           source: str = "") -> CalibrationReport:
    """The calibration report of two given splits (``calibrate`` without the model)."""
    for t in settings.temperatures:
        _check_temperature(t)
    t_fit = fit_temperature(cal.logits, cal.targets)
    rows = []
    for t, fitted in [(t, False) for t in settings.temperatures] + [(t_fit, True)]:
        conf, right = top1(test.logits, test.targets, t)
        rows.append(Row(t, ece(conf, right, settings.bins), nll(test.logits, test.targets, t), float(conf.mean()),
                        fitted))
    conf1, right1 = top1(test.logits, test.targets, 1.0)
    conf_f, right_f = top1(test.logits, test.targets, t_fit)
    h = entropy(torch.softmax(test.logits.double(), -1)).numpy()  # (N,) nats at T = 1
    flag = h > settings.threshold
    err = 1.0 - right1.astype(np.float64)
    return CalibrationReport(
        source=source, n_cal=len(cal.targets), n_test=len(test.targets), accuracy=float(right1.mean()),
        confidence=float(conf1.mean()), nll=nll(test.logits, test.targets, 1.0),
        fitted_t=t_fit, cal_nll=(nll(cal.logits, cal.targets, 1.0), nll(cal.logits, cal.targets, t_fit)),
        rows=rows, before=reliability(conf1, right1, settings.bins), after=reliability(conf_f, right_f, settings.bins),
        threshold=settings.threshold, flagged_share=float(flag.mean()),
        error_flagged=float(err[flag].mean()) if flag.any() else float("nan"),
        error_unflagged=float(err[~flag].mean()) if (~flag).any() else float("nan"))


BARELY = 0.005  # an ECE change smaller than this (absolute) is reported as barely moving
CLOSE = 0.01  # |mean confidence - accuracy| below this is reported as close to calibrated
NEAR_ONE = 0.05  # a fitted T within 5 % of 1 (|ln T| below this) is reported as about 1
CALIBRATED = 0.02  # an ECE below this at T = 1 is reported as already calibrated


def findings(r: CalibrationReport) -> list[str]:
    """Sentences for the learner, each computed from the report's numbers."""
    out = []
    conf = r.confidence
    gap = conf - r.accuracy
    if abs(gap) < CLOSE:
        state = ("close to calibrated on average (Guo et al. found large networks trained long over-confident; "
                 "this one is not)")
    elif gap > 0:
        state = "over-confident"
    else:
        state = "under-confident"
    out.append(f"At T = 1 the model's mean top-1 probability on the {r.n_test:,} test predictions is {conf:.3f} and "
               f"its top-1 guess is right {r.accuracy:.3f} of the time (ECE {r.before.ece:.3f}): {state}.")
    fixed = [x for x in r.rows if not x.fitted]
    if len(fixed) > 1:
        best = min(fixed, key=lambda x: x.ece)
        out.append("Among the fixed temperatures, ECE is " + ", ".join(
            f"{x.ece:.3f} at T = {x.temperature:g}" for x in fixed) + f"; T = {best.temperature:g} is the best of them.")
    fit = r.fitted_row
    gain = r.cal_nll[0] - r.cal_nll[1]
    if abs(math.log(r.fitted_t)) < NEAR_ONE:
        direction = (f"within {NEAR_ONE:.0%} of 1: the raw probabilities already fit the calibration split "
                     f"(its NLL falls by only {gain:.4f} nats, {r.cal_nll[0]:.4f} → {r.cal_nll[1]:.4f})")
    else:
        side = ("above 1: softening the logits helps, so the model was over-confident" if r.fitted_t > 1 else
                "below 1: sharpening the logits helps, so the model was under-confident")
        direction = f"{side} on that split (its NLL {r.cal_nll[0]:.4f} → {r.cal_nll[1]:.4f} nats)"
    out.append(f"Temperature scaling fitted T = {r.fitted_t:.3f} on {r.n_cal:,} calibration predictions, {direction}.")
    d = fit.ece - r.before.ece
    if abs(d) < BARELY:
        move = f"barely moves ECE on the separate test split ({r.before.ece:.3f} → {fit.ece:.3f})"
        if r.before.ece < CALIBRATED:
            move += (": the model is already calibrated at this scale, so temperature scaling has next to nothing "
                     "to fix")
    elif d < 0:
        move = f"lowers ECE on the separate test split from {r.before.ece:.3f} to {fit.ece:.3f}"
    else:
        move = (f"raises ECE on the separate test split from {r.before.ece:.3f} to {fit.ece:.3f}: it minimises NLL "
                f"on other data, not ECE on this split")
    out.append(f"Fitting {move}; test NLL {r.nll:.4f} → {fit.nll:.4f} nats.")
    out.append(f"Accuracy stays {r.accuracy:.3f} at every temperature: dividing the logits by T never changes which "
               f"character ranks first, so calibration changes how sure the model says it is, not what it predicts.")
    if r.flagged_share > 0 and r.flagged_share < 1:
        out.append(f"{r.flagged_share:.1%} of test predictions have entropy above {r.threshold:g} nats; the model's "
                   f"top guess is wrong {r.error_flagged:.1%} of the time there and {r.error_unflagged:.1%} elsewhere"
                   + (" — a flag marks where errors are likelier, not which guesses are wrong."
                      if r.error_flagged > r.error_unflagged else
                      " — at this threshold the flag does not single out the errors."))
    elif r.flagged_share == 0:
        out.append(f"No test prediction has entropy above {r.threshold:g} nats: at this threshold nothing is flagged.")
    else:
        out.append(f"Every test prediction has entropy above {r.threshold:g} nats: at this threshold everything is "
                   f"flagged, which tells the reader nothing.")
    return out


def _main(seconds: float = 75.0) -> None:
    """Train the Training page's default character model on the built-in corpus for ``seconds`` of
    one thread (or its 700 steps, if sooner) and print its calibration report and findings."""
    import sys
    import time

    from . import corpus as texts, textlm

    torch.set_num_threads(1)
    emma = texts.builtin()
    trainer = textlm.build_trainer(textlm.settings_for(emma), emma)
    t0 = time.perf_counter()
    trainer.advance(seconds=seconds)
    print(f"trained {trainer.step} of {trainer.config.steps} steps in {time.perf_counter() - t0:.1f} s; held-out "
          f"loss {emma.held_out_loss(trainer.model, textlm.TextSettings().context):.3f} nats", file=sys.stderr)
    r = calibrate(trainer.model, emma)
    print(f"{r.source}: {r.n_cal:,} calibration and {r.n_test:,} test predictions, accuracy {r.accuracy:.3f}")
    for row in r.rows:
        print(f"T = {row.temperature:6.3f}{' (fitted)' if row.fitted else '         '}  ECE {row.ece:.4f}  "
              f"NLL {row.nll:.4f}  mean confidence {row.confidence:.3f}")
    for line in findings(r):
        print("-", line)


# ---------------------------------------------------------------------------------------------- the page
# The Safeguards page's Uncertainty tab: the Training page's character model on the built-in novel,
# trained by ``textlm.training_job`` (keyed by its settings: the same run as the Training page's at the
# same settings), then measured by a second scheduler job (``calibration_job``).
STEP_CHOICES = (10, 100, 250, 500, 700, 1500)  # training steps; all but 10 are also the Training page's choices
WINDOW_CHOICES = (32, 64, 128, 256, 512)  # held-out windows per split (each of the model's context, 64 characters)
UNTRAINED_WINDOWS = 64  # windows per split the untrained model is measured on (once per server, on first open)
CHARS_CHOICES = (50, 100, 200, 400)  # characters written after the prompt
RELIABILITY_TEMPERATURES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)  # the reliability diagram's choices
GRID = tuple(float(t) for t in np.round(np.geomspace(0.25, 4.0, 25), 4))  # ECE and NLL against temperature
SHADE_BY = ("entropy", "probability")  # what the written text is shaded by (``figures.SHADES``)
DEFAULTS = {  # every control of the tab at its default (what a lesson starts from)
    "sg_unc_steps": 250, "sg_unc_windows": 256, "sg_unc_prompt": "Emma", "sg_unc_chars": 200,
    "sg_unc_temperature": 1.0, "sg_unc_threshold": 1.5, "sg_unc_by": "entropy", "sg_unc_rel_t": 1.0,
}


def model_settings(corpus: Corpus, steps: int):
    """The tab's model: the Training page's run at every default but ``steps`` (the very same job key,
    ``("textlm", settings)``, so either page's run is the other's)."""
    from . import textlm

    return textlm.settings_for(corpus, steps=steps)


def training_page_query(steps: int) -> Optional[str]:
    """The Training page's link query that trains this same run, or None when that page has no such
    step count (its other controls at their defaults make the same settings)."""
    from . import textlm

    if steps not in textlm.STEP_CHOICES:
        return None
    return "" if steps == textlm.TextSettings().steps else f"?tr_steps={steps}"


@dataclass
class Measured:
    """One model's calibration, measured once and shared: the report (at the default flag threshold)
    and what redraws it at any temperature or threshold without the model."""
    report: CalibrationReport
    test: Split  # the test split's logits (T = 1) and targets
    entropy: np.ndarray  # (N,) entropy of each test prediction at T = 1, nats
    wrong: np.ndarray  # (N,) 1.0 where the top-1 guess at T = 1 was wrong
    grid: tuple[float, ...]  # temperatures of the curves below
    grid_ece: tuple[float, ...]  # ECE on the test split at each
    grid_nll: tuple[float, ...]  # NLL on the test split at each, nats
    steps: int  # training steps of the model measured
    held_out_loss: float  # its held-out loss (nats per character) as the training run measured it
    bins: int  # reliability bins
    model: Optional[GPT] = None  # the model measured (read-only): what the page writes with
    train_seconds: float = 0.0  # the training run's seconds (the same for everyone who shares the run)

    def reliability(self, temperature: float) -> Reliability:
        """The test split's reliability diagram with the logits divided by ``temperature``."""
        return reliability(*top1(self.test.logits, self.test.targets, temperature), self.bins)

    def at_threshold(self, threshold: float) -> CalibrationReport:
        """The report with its flag figures at another entropy threshold (nats)."""
        if not math.isfinite(threshold) or threshold < 0:
            raise UncertaintyError(f"threshold = {threshold}: an entropy threshold is a number of nats, 0 or more")
        flag = self.entropy > threshold
        return replace(self.report, threshold=threshold, flagged_share=float(flag.mean()),
                       error_flagged=float(self.wrong[flag].mean()) if flag.any() else float("nan"),
                       error_unflagged=float(self.wrong[~flag].mean()) if (~flag).any() else float("nan"))

    def table(self) -> dict:
        """Temperature scaling before and after: each row of the report (T = 1 is the model's own)."""
        rows = self.report.rows
        return {"temperature": [f"{r.temperature:.3f} (fitted)" if r.fitted else f"{r.temperature:g}" for r in rows],
                "ECE": [round(r.ece, 4) for r in rows], "NLL (nats)": [round(r.nll, 4) for r in rows],
                "accuracy": [round(self.report.accuracy, 4)] * len(rows),
                "mean confidence": [round(r.confidence, 4) for r in rows]}


def measure(model: GPT, corpus: Corpus, settings: CalibrationSettings, steps: int, held_out_loss: float) -> Measured:
    """Calibrate ``model`` on ``corpus``'s held-out text (``calibrate``) and keep what the page redraws."""
    cal, test = corpus_splits(model, corpus, settings.windows, settings.length)
    r = report(cal, test, settings, f"{corpus.title} (held-out text)")
    _, right = top1(test.logits, test.targets, 1.0)
    eces, nlls = [], []
    for t in GRID:
        c, ok = top1(test.logits, test.targets, t)
        eces.append(ece(c, ok, settings.bins))
        nlls.append(nll(test.logits, test.targets, t))
    h = entropy(torch.softmax(test.logits.double(), -1)).numpy()
    return Measured(r, test, h, 1.0 - right.astype(np.float64), GRID, tuple(eces), tuple(nlls), steps,
                    float(held_out_loss), settings.bins, model)


_UNTRAINED: dict = {}  # corpus digest -> Measured: computed once per process, read-only
_UNTRAINED_LOCK = threading.Lock()


def untrained(corpus: Corpus) -> Measured:
    """The tab's model before any step (seeded weights; they do not depend on the number of steps),
    measured on ``UNTRAINED_WINDOWS`` windows per split: computed once per server process and shared
    read-only (what the tab shows on first open). Its held-out loss is not measured (nan)."""
    with _UNTRAINED_LOCK:
        if corpus.digest not in _UNTRAINED:
            from .model import build_model

            settings = model_settings(corpus, DEFAULTS["sg_unc_steps"])
            model = build_model(settings.model_config(corpus.vocab_size), settings.seed).eval()
            for p in model.parameters():
                p.requires_grad_(False)
            _UNTRAINED[corpus.digest] = measure(model, corpus, CalibrationSettings(windows=UNTRAINED_WINDOWS), 0,
                                                float("nan"))
        return _UNTRAINED[corpus.digest]


class CalibrationJob(FunctionJob):
    """``measure`` of a finished training run as one scheduler job (its result is also its live view)."""
    # not shipped with the app (explorer.shelf): it is the same everywhere, but it holds both halves' logits
    # (about 8 MB) and takes about 2 s

    def live(self):
        return self._result


def calibration_key(text_settings, windows: int) -> tuple:
    return ("uncertainty", text_settings, CalibrationSettings(windows=windows))


def calibration_job(run, text_settings, corpus: Corpus, windows: int) -> CalibrationJob:
    """The job measuring a finished ``textlm.training_job`` run (``run``, a ``TrainedRun``), keyed by
    the run's settings and the windows: computed once per server. Its peak: both splits' logits, and
    the float64 copies the fit and the curves make of one."""
    key = calibration_key(text_settings, windows)
    n = windows * text_settings.context * corpus.vocab_size  # numbers in one split's logits
    loss = run.probes[-1][1]["held_out_loss"] if run.probes else float("nan")
    return CalibrationJob(lambda: replace(measure(run.model, corpus, key[2], run.step, loss),
                                          train_seconds=run.seconds), key=key,
                          peak_bytes=2 * 4 * n + 4 * 8 * n + 64e6,
                          title=f"calibrating the character model on {corpus.title}'s held-out text")


def write(model: GPT, corpus: Corpus, prompt: str, n: int, temperature: float, threshold: float
          ) -> list[TokenInfo]:
    """``token_uncertainty`` after ``prompt`` (empty: from a new line, like the Training page's
    samples), seed 0; a prompt the model cannot read raises ``textlm.PromptError`` saying why."""
    from . import textlm

    try:
        return token_uncertainty(model, corpus.tokenizer, prompt or textlm.probe_prompt(corpus), n, temperature,
                                 None, 0, threshold)
    except UncertaintyError:
        raise
    except ValueError as e:
        raise textlm.prompt_error(e, corpus) from None


def flag_summary(infos: Sequence[TokenInfo], threshold: float, vocab_size: int) -> str:
    """How many written characters the threshold flags, in a sentence."""
    k = sum(t.flagged for t in infos)
    hs = [t.entropy for t in infos]
    return (f"{k} of {len(infos)} characters flagged (entropy above {threshold:g} nats). Their entropies run from "
            f"{min(hs):.2f} to {max(hs):.2f} nats, {float(np.mean(hs)):.2f} on average; a uniform guess over the "
            f"{vocab_size} characters would have ln {vocab_size} = {math.log(vocab_size):.2f}.")


def untrained_note(m: Measured, vocab_size: int) -> str:
    """What the untrained model's calibration means, from its numbers."""
    r = m.report
    return (f"Before training, the model's top character gets {r.confidence:.3f} on average and is right "
            f"{r.accuracy:.3f} of the time; a uniform guess over the {vocab_size} characters would give each "
            f"1/{vocab_size} = {1 / vocab_size:.3f}. A model that knows nothing and says so has a small ECE (here "
            f"{r.before.ece:.3f}): being calibrated is not knowing.")


def flagged_at(infos: Sequence[TokenInfo], threshold: float) -> list[TokenInfo]:
    """The same written characters flagged at another entropy threshold (nats)."""
    if not math.isfinite(threshold) or threshold < 0:
        raise UncertaintyError(f"threshold = {threshold}: an entropy threshold is a number of nats, 0 or more")
    return [replace(t, flagged=t.entropy > threshold) for t in infos]


DEFINITIONS = (
    "- **Entropy** of a distribution p over the characters: H = −Σ p ln p, in **nats** (divide by ln 2 for bits). "
    "0 when one character has all the probability; ln V when all V characters are equally likely (ln 76 = 4.33 for "
    "Emma's 76). The entropy shown for a written character is that of the distribution it was drawn from, after "
    "the sampling temperature.\n"
    "- **Flag**: a character whose entropy is above the threshold. It says the model spread its bet there, not "
    "that the character is wrong.\n"
    "- **Confidence** of a prediction: the probability of the model's top-1 character. **Accuracy**: the share of "
    "predictions whose top-1 character is the one that came next.\n"
    "- **Reliability diagram**: the predictions sorted into equal-width confidence bins; each bar is the accuracy "
    "of one bin. A calibrated model's bars sit on the diagonal: of the predictions it makes with confidence 0.8, "
    "80 % are right.\n"
    "- **ECE** (expected calibration error, Naeini et al. 2015; Guo et al. 2017): Σ over bins of (predictions in "
    "the bin / all predictions) × |accuracy − mean confidence| of the bin. 0 is perfectly calibrated at this "
    "binning.\n"
    "- **NLL**: the mean negative log-probability of the character that came next, in nats (the held-out loss).\n"
    "- **Temperature scaling** (Guo et al. 2017): divide every logit by one number T before the softmax; T > 1 "
    "softens the probabilities, T < 1 sharpens them. T is fitted by minimising the NLL on the calibration half of "
    "the held-out text and judged on the other half. Dividing by T never changes which character ranks first, so "
    "accuracy is the same at every T.")


def trained_and_measured(steps: int, windows: int, corpus: Optional[Corpus] = None) -> Measured:
    """The tab's run without the page: ``textlm.training_job`` stepped to the end in this thread, then
    ``calibration_job`` (the same two jobs the page hands the scheduler)."""
    from . import corpus as texts, textlm

    corpus = corpus or texts.builtin()
    settings = model_settings(corpus, steps)
    run = run_to_end(textlm.training_job(settings, corpus), 5.0)
    job = calibration_job(run, settings, corpus, windows)
    job.step(0.0)
    return job.result()


def bench_figures(quick: bool = False) -> dict:
    """The tab's figures for ``python -m explorer.bench safeguards``: the Training page's default run
    (700 steps; ``quick``: 10 steps, 32 windows) and its calibration on 256 held-out windows per split."""
    steps, windows = (10, 32) if quick else (700, 256)
    m = trained_and_measured(steps, windows)
    r = m.report
    return {"steps": m.steps, "held_out_loss": round(m.held_out_loss, 4), "windows_per_split": windows,
            "test_predictions": r.n_test, "accuracy": round(r.accuracy, 4), "mean_confidence": round(r.confidence, 4),
            "ece_t0.5": round(r.row(0.5).ece, 4), "ece_t1": round(r.row(1.0).ece, 4), "ece_t2": round(r.row(2.0).ece, 4),
            "fitted_t": round(r.fitted_t, 4), "ece_fitted": round(r.fitted_row.ece, 4), "nll_t1": round(r.nll, 4),
            "nll_fitted": round(r.fitted_row.nll, 4), "flagged_share_1.5_nats": round(r.flagged_share, 4)}


def url_defaults() -> dict:
    """The Safeguards page's controls of this tab (keys ``sg_unc_*``) at their defaults."""
    return dict(DEFAULTS)


if __name__ == "__main__":
    import sys

    _main(*(float(a) for a in sys.argv[1:2]))
