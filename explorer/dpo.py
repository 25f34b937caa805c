"""Learning from feedback: direct preference optimisation against a frozen reference copy.

Papers:
- Rafailov, Sharma, Mitchell, Ermon, Manning, Finn 2023, "Direct Preference Optimization: Your
  Language Model is Secretly a Reward Model": the loss ``-log σ(β[(log π(y_w|x) - log π_ref(y_w|x))
  - (log π(y_l|x) - log π_ref(y_l|x))])``, with no reward model and no reinforcement learning.
- Christiano et al. 2017, "Deep reinforcement learning from human preferences", and Ouyang et al.
  2022 (InstructGPT): learning from pairwise choices, kept near the starting model by a KL penalty.
- Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences"
  (IPO): DPO can drive the policy far from the reference when preferences are deterministic;
  the collapse measured here (entropy toward 0, KL exploding) is that failure at small scale.

How a run goes: the policy is a deep copy of the model it is given; the reference is another copy,
frozen (eval mode, no gradients) and never changed. Each step draws prompts, samples two
completions per prompt from the current policy, lets a preference pick the better one (a scripted
rule from ``PREFERENCES``, or a person's recorded choices through ``HumanPairs``), and takes one
optimiser step on the DPO loss. Every ``eval_every`` steps fresh samples measure what changed:
KL(policy || reference) per token, the policy's entropy, and the policy's win rate against the
reference under the scripted preference. ``findings`` turns those numbers into sentences.
"""
from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .jobs import Job, run_to_end
from .model import GPT
from .registry import Registry
from .tasks import CharTokenizer, Task


class PreferenceError(ValueError):
    """Preference data or settings that DPO cannot use; the message says why."""


# ------------------------------------------------------------------------------------------ the loss
def dpo_loss(policy_chosen_logp: Tensor, policy_rejected_logp: Tensor, ref_chosen_logp: Tensor,
             ref_rejected_logp: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """The DPO loss of Rafailov et al. 2023 (their eq. 7), mean over the pairs, and the implicit
    rewards ``β (log π - log π_ref)`` of the chosen and rejected completions (detached, ``(B,)``).
    All four log-probs are ``(B,)`` sums over each completion's tokens."""
    chosen_ratio = policy_chosen_logp - ref_chosen_logp  # (B,)
    rejected_ratio = policy_rejected_logp - ref_rejected_logp  # (B,)
    loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio)).mean()
    return loss, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach()


def sequence_logp(model: GPT, prompt_ids: Tensor, completion_ids: Tensor) -> Tensor:
    """``(B,)``: log-probability the model gives each completion after its prompt, summed over the
    completion's tokens only. ``prompt_ids`` ``(B, P)`` (or ``(P,)``), ``completion_ids`` ``(B, N)``
    (or ``(N,)``); gradients flow when the caller allows them."""
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids[None]
    if completion_ids.dim() == 1:
        completion_ids = completion_ids[None]
    P, N = prompt_ids.shape[1], completion_ids.shape[1]
    if P < 1 or N < 1:
        raise PreferenceError("a prompt and its completion each need at least one token")
    if P + N - 1 > model.config.block_size:
        raise PreferenceError(f"a prompt of {P} and a completion of {N} tokens need {P + N - 1} positions; "
                              f"this model's context is {model.config.block_size}")
    seq = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]  # (B, P + N - 1): the last token is never read
    logp = F.log_softmax(model(seq).logits[:, P - 1:].float(), dim=-1)  # (B, N, V): predicts each completion token
    return logp.gather(-1, completion_ids[..., None]).squeeze(-1).sum(-1)  # (B,)


@torch.no_grad()
def sample(model: GPT, prompt_ids: Tensor, n: int, temperature: float, gen: torch.Generator) -> Tensor:
    """``(B, n)`` completions drawn from the model after each prompt of ``prompt_ids`` ``(B, P)``,
    at ``temperature`` (> 0), on the CPU generator ``gen``."""
    if prompt_ids.shape[1] + n - 1 > model.config.block_size:
        raise PreferenceError(f"prompts of {prompt_ids.shape[1]} tokens and samples of {n} do not fit "
                              f"this model's context of {model.config.block_size}")
    was = model.training
    model.eval()
    idx = prompt_ids
    for _ in range(n):
        p = torch.softmax(model(idx).logits[:, -1].float() / temperature, dim=-1)  # (B, V)
        idx = torch.cat([idx, torch.multinomial(p, 1, generator=gen)], dim=1)
    model.train(was)
    return idx[:, prompt_ids.shape[1]:]


@torch.no_grad()
def divergence(policy: GPT, reference: GPT, prompt_ids: Tensor, completion_ids: Tensor) -> tuple[float, float]:
    """``(KL, entropy)`` in nats per token along the policy's own samples: at each completion
    position the exact KL(policy || reference) and the policy's entropy over the whole vocabulary,
    given the sampled prefix, averaged over positions and samples (by the chain rule, the mean
    per-token share of the sequences' KL)."""
    P = prompt_ids.shape[1]
    seq = torch.cat([prompt_ids, completion_ids], dim=1)[:, :-1]
    lp = F.log_softmax(policy(seq).logits[:, P - 1:].float(), dim=-1)  # (B, N, V)
    lq = F.log_softmax(reference(seq).logits[:, P - 1:].float(), dim=-1)
    p = lp.exp()
    kl = (p * (lp - lq)).sum(-1).mean()
    entropy = -(p * lp).sum(-1).mean()
    return float(kl), float(entropy)


# ----------------------------------------------------------------------------------------- preferences
@dataclass(frozen=True)
class Preference:
    """A scripted preference: a score for a completion after its prompt; the higher wins, equal
    scores are a tie (no preference: such a pair teaches nothing and is left out)."""
    name: str
    title: str
    description: str  # one sentence for the page
    score: Callable[[str, str], float]  # (prompt text, completion text) -> score, higher is better
    unit: str  # what the mean score means, for sentences ("letters e", "answer letters right")
    best: float = 0.0  # the highest score any completion can have
    one_answer: bool = False  # one right completion per prompt: entropy falling toward 0 is the aim, not collapse


PREFERENCES: Registry[Preference] = Registry("preference")


def _fewer_e(prompt: str, completion: str) -> float:
    return -float(completion.count("e"))


def _reversal(prompt: str, completion: str) -> float:
    """Token accuracy of the completion against the reverse task's rule (the prompt ends in '=')."""
    source = prompt[:-1] if prompt.endswith("=") else prompt
    want = source[::-1]
    return sum(a == b for a, b in zip(completion, want)) / max(1, len(want))


PREFERENCES.add("fewer_e", Preference(
    "fewer_e", "Fewer letter e", "Of two continuations of the text, the one with fewer letters 'e' wins.",
    _fewer_e, "minus the letters e per sample", best=0.0))
PREFERENCES.add("reversal", Preference(
    "reversal", "Correct reversal", "Of two answers of the reverse task, the one with more letters in the "
    "right place (the input written backwards) wins.", _reversal, "share of answer letters right", best=1.0,
    one_answer=True))


def task_prompts(task: Task, length: int) -> Callable[[torch.Generator, int], Tensor]:
    """Prompts of a symbolic task: ``length`` random letters and the separator, ``(n, length + 1)``."""
    if not task.symbolic:
        raise PreferenceError(f"the {task.title} task has no answer rule to prefer answers by")

    def draw(gen: torch.Generator, n: int) -> Tensor:
        x, _ = task.batch(gen, n, length)
        return x[:, : length + len(task.separator)]

    return draw


def corpus_prompts(corpus, length: int) -> Callable[[torch.Generator, int], Tensor]:
    """Prompts from a text: random windows of ``length`` characters of its training part, ``(n, length)``."""

    def draw(gen: torch.Generator, n: int) -> Tensor:
        return corpus.batch(gen, n, length)[0]

    return draw


@dataclass(frozen=True)
class HumanPairs:
    """A person's choices, as the page collects them: ``(prompt, a, b, choice)`` with ``choice``
    ``"a"`` or ``"b"`` (the better completion). ``pairs`` encodes them as (prompt, chosen, rejected)
    id tensors, one triple per choice (prompts and completions may differ in length)."""
    choices: tuple  # ((prompt, a, b, "a" | "b"), ...)

    def pairs(self, tokenizer: CharTokenizer) -> list[tuple[Tensor, Tensor, Tensor]]:
        if not self.choices:
            raise PreferenceError("no choices yet: compare at least one pair of completions first")
        out = []
        for i, row in enumerate(self.choices):
            if len(row) != 4:
                raise PreferenceError(f"choice {i + 1} has {len(row)} parts; each needs (prompt, a, b, choice)")
            prompt, a, b, choice = row
            if choice not in ("a", "b"):
                raise PreferenceError(f"choice {i + 1} is {choice!r}: say 'a' or 'b', whichever completion is better")
            if not prompt or not a or not b:
                raise PreferenceError(f"choice {i + 1} has an empty prompt or completion")
            if a == b:
                raise PreferenceError(f"choice {i + 1} compares a completion with itself: nothing to learn")
            chosen, rejected = (a, b) if choice == "a" else (b, a)
            out.append(tuple(torch.tensor(tokenizer.encode(t)) for t in (prompt, chosen, rejected)))
        return out


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class DPOSettings:
    beta: float = 0.1  # β: strength of the pull back to the reference (the KL penalty's inverse temperature)
    lr: float = 1e-3  # Adam's learning rate, constant (no warm-up, no decay, no weight decay)
    steps: int = 60  # DPO steps in all
    pairs: int = 16  # scripted pairs per step (tied pairs redrawn up to 3 times, then left out); human choices: all, each step
    sample_length: int = 12  # tokens of each sampled completion
    temperature: float = 1.0  # sampling temperature of the pairs and of the evaluation samples
    seed: int = 0  # seeds the prompts, the samples and the evaluation draws
    eval_every: int = 5  # steps between measurements of KL, entropy and win rate (and at step 0 and the end)
    eval_samples: int = 64  # prompts (one policy and one reference sample each) per measurement

    def __post_init__(self) -> None:
        checks = [("beta", self.beta > 0), ("lr", self.lr > 0), ("steps", self.steps >= 1),
                  ("pairs", self.pairs >= 1), ("sample_length", self.sample_length >= 1),
                  ("temperature", self.temperature > 0), ("eval_every", self.eval_every >= 1),
                  ("eval_samples", self.eval_samples >= 1)]
        for name, ok in checks:
            if not ok:
                raise PreferenceError(f"{name} = {getattr(self, name)!r}: must be positive")


@dataclass(frozen=True)
class Measurement:
    step: int
    kl: float  # KL(policy || reference), nats per token, on fresh policy samples
    entropy: float  # the policy's next-token entropy, nats, along its samples
    win_rate: float  # policy sample beats reference sample on the same prompt (a tie counts one half)
    policy_score: float  # mean preference score of the policy's samples
    reference_score: float  # mean preference score of the reference's samples
    distinct: float  # share of distinct completions among the policy's samples
    reference_best: float  # share of the reference's samples already at the best score (the policy can only tie those)
    example: str  # the policy's first sample


class DPOTrainer:
    """DPO on a copy of ``model``; ``step()`` does one optimisation step (call it in slices)."""

    def __init__(self, model: GPT, tokenizer: CharTokenizer, prompts: Callable[[torch.Generator, int], Tensor],
                 preference: Preference | str, settings: DPOSettings = DPOSettings(),
                 human: Optional[HumanPairs] = None):
        self.settings = settings
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.preference = PREFERENCES[preference] if isinstance(preference, str) else preference
        self.reference = copy.deepcopy(model).eval()
        for p in self.reference.parameters():
            p.requires_grad_(False)
        self.policy = copy.deepcopy(model).train()
        for p in self.policy.parameters():
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=settings.lr)
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.human = human.pairs(tokenizer) if human is not None else None
        self.step_count = 0
        self.history: list[dict] = []  # per step: step, loss, margin, reward_accuracy, pairs
        self.measurements: list[Measurement] = []
        self.seconds = 0.0

    @property
    def done(self) -> bool:
        return self.step_count >= self.settings.steps

    def _texts(self, ids: Tensor) -> list[str]:
        return [self.tokenizer.decode(r) for r in ids]

    def scripted_pairs(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(prompts, chosen, rejected)``, each ``(K, ·)``, K ≤ pairs: two policy samples per prompt,
        ordered by the preference; ties redrawn up to 3 times, then left out."""
        s = self.settings
        keep: list[tuple[Tensor, Tensor, Tensor]] = []
        for _ in range(4):
            need = s.pairs - sum(len(k[0]) for k in keep)
            if need <= 0:
                break
            prompts = self.prompts(self.gen, need)  # (need, P)
            a = sample(self.policy, prompts, s.sample_length, s.temperature, self.gen)  # (need, N)
            b = sample(self.policy, prompts, s.sample_length, s.temperature, self.gen)
            pt = self._texts(prompts)
            sa = torch.tensor([self.preference.score(p, t) for p, t in zip(pt, self._texts(a))])
            sb = torch.tensor([self.preference.score(p, t) for p, t in zip(pt, self._texts(b))])
            a_wins = (sa > sb)[:, None]
            decided = sa != sb
            chosen, rejected = torch.where(a_wins, a, b), torch.where(a_wins, b, a)
            keep.append((prompts[decided], chosen[decided], rejected[decided]))
        return tuple(torch.cat(parts) for parts in zip(*keep))

    def _logps(self, prompts, chosen, rejected) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        pc, pr = sequence_logp(self.policy, prompts, chosen), sequence_logp(self.policy, prompts, rejected)
        with torch.no_grad():
            rc, rr = sequence_logp(self.reference, prompts, chosen), sequence_logp(self.reference, prompts, rejected)
        return pc, pr, rc, rr

    def step(self) -> dict:
        """One DPO step (and a measurement when due); returns the step's record."""
        t0 = time.perf_counter()
        if not self.measurements:
            self.measure()
        s = self.settings
        self.policy.train()
        if self.human is not None:
            logps = [torch.cat(parts) for parts in zip(*[self._logps(p[None], c[None], r[None])
                                                          for p, c, r in self.human])]
        else:
            prompts, chosen, rejected = self.scripted_pairs()
            logps = self._logps(prompts, chosen, rejected) if len(prompts) else None
        self.step_count += 1
        if logps is None:  # every pair tied: nothing to learn from this step
            record = dict(step=self.step_count, loss=float("nan"), margin=float("nan"),
                          reward_accuracy=float("nan"), pairs=0)
        else:
            loss, chosen_r, rejected_r = dpo_loss(*logps, s.beta)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            record = dict(step=self.step_count, loss=float(loss.detach()), margin=float((chosen_r - rejected_r).mean()),
                          reward_accuracy=float((chosen_r > rejected_r).float().mean()), pairs=len(chosen_r))
        self.history.append(record)
        if self.step_count % s.eval_every == 0 or self.done:
            self.measure()
        self.seconds += time.perf_counter() - t0
        return record

    def advance(self, steps: Optional[int] = None, seconds: Optional[float] = None) -> None:
        """Up to ``steps`` steps (all that are left when None), stopping after ``seconds`` if given."""
        t0 = time.perf_counter()
        n = 0
        while not self.done and (steps is None or n < steps):
            self.step()
            n += 1
            if seconds is not None and time.perf_counter() - t0 >= seconds:
                break

    @torch.no_grad()
    def measure(self) -> Measurement:
        """KL, entropy, win rate on fresh samples: the same prompts and draws at every measurement
        (a generator seeded from the settings), so measurements differ only by the policy. Policy and
        reference sample with the same random draws (common random numbers): at step 0 they write
        the same text, so the win rate starts at exactly one half and KL at exactly 0."""
        s = self.settings
        self.policy.eval()
        gen = torch.Generator().manual_seed(s.seed + 7919)
        prompts = self.prompts(gen, s.eval_samples)
        noise = gen.get_state()
        mine = sample(self.policy, prompts, s.sample_length, s.temperature, gen)
        gen.set_state(noise)  # the same draws for both: equal models write equal samples
        theirs = sample(self.reference, prompts, s.sample_length, s.temperature, gen)
        kl, entropy = divergence(self.policy, self.reference, prompts, mine)
        pt, mt, tt = self._texts(prompts), self._texts(mine), self._texts(theirs)
        ms = [self.preference.score(p, t) for p, t in zip(pt, mt)]
        ts = [self.preference.score(p, t) for p, t in zip(pt, tt)]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(ms, ts)) / len(ms)
        m = Measurement(self.step_count, kl, entropy, wins, sum(ms) / len(ms), sum(ts) / len(ts),
                        len(set(mt)) / len(mt), sum(t >= self.preference.best for t in ts) / len(ts), mt[0])
        if self.measurements and self.measurements[-1].step == m.step:
            self.measurements[-1] = m
        else:
            self.measurements.append(m)
        self.policy.train()
        return m

    @torch.no_grad()
    def side_by_side(self, n: int = 6) -> list[tuple[str, str, str]]:
        """``(prompt, reference sample, policy sample)`` texts of the first ``n`` prompts of every
        measurement, drawn the way ``measure`` draws them (the same prompts and random draws for both)."""
        s = self.settings
        gen = torch.Generator().manual_seed(s.seed + 7919)
        prompts = self.prompts(gen, s.eval_samples)[:n]
        noise = gen.get_state()
        was = self.policy.training
        mine = sample(self.policy, prompts, s.sample_length, s.temperature, gen)
        gen.set_state(noise)
        theirs = sample(self.reference, prompts, s.sample_length, s.temperature, gen)
        self.policy.train(was)
        return list(zip(self._texts(prompts), self._texts(theirs), self._texts(mine)))


# ------------------------------------------------------------------------------------------ findings
COLLAPSE_ENTROPY = 0.25  # entropy below this share of the reference's: the policy has (nearly) stopped sampling
COLLAPSE_KL = 1.0  # nats per token: far beyond what the preference needs (one token's worth of certainty)


def collapsed(measurements: Sequence[Measurement], one_answer: bool = False) -> bool:
    """Whether the last measurement shows collapse: entropy under a quarter of the start's (unless the
    preference has one right answer per prompt, where certainty is the aim), or KL over 1 nat per token."""
    first, last = measurements[0], measurements[-1]
    return (not one_answer and last.entropy < COLLAPSE_ENTROPY * first.entropy) or last.kl > COLLAPSE_KL


def findings(trainer: DPOTrainer) -> list[str]:
    """Sentences for the page, each computed from the run's measurements."""
    ms = trainer.measurements
    if not ms:
        return ["Nothing measured yet."]
    first, last = ms[0], ms[-1]
    s, pref = trainer.settings, trainer.preference
    out = []
    change = "rose" if last.win_rate > first.win_rate else "fell" if last.win_rate < first.win_rate else "stayed"
    out.append(f"Under '{pref.title}', the policy's samples beat the reference's on {first.win_rate:.0%} of "
               f"{s.eval_samples} prompts at step {first.step} (ties count half) and on {last.win_rate:.0%} at "
               f"step {last.step}: the win rate {change}. Mean score ({pref.unit}): {first.policy_score:.2f} → "
               f"{last.policy_score:.2f}, reference {last.reference_score:.2f}.")
    ceiling = 1 - last.reference_best / 2
    out.append(f"The highest win rate possible here is {ceiling:.0%}: {last.reference_best:.0%} of the reference's "
               f"samples already have the best score ({pref.best:g}), and a tie counts half.")
    if last.win_rate <= first.win_rate:
        out.append(f"DPO did not make the samples better under this preference here, against what the method "
                   f"promises. These measurements do not say which cause it is: too few steps or too small a "
                   f"learning rate, or sampling noise (one of the {s.eval_samples} comparisons moves the rate by "
                   f"{1 / s.eval_samples:.1%}).")
    out.append(f"KL(policy || reference) grew from {first.kl:.3f} to {last.kl:.3f} nats per token "
               f"(β = {s.beta:g}, learning rate {s.lr:g}); the policy's entropy went from "
               f"{first.entropy:.2f} to {last.entropy:.2f} nats per token.")
    done = [h for h in trainer.history[-10:] if h["pairs"]]
    if done:
        acc = sum(h["reward_accuracy"] for h in done) / len(done)
        margin = sum(h["margin"] for h in done) / len(done)
        out.append(f"Over the last {len(done)} steps the implicit reward ranked the chosen completion above "
                   f"the rejected one in {acc:.0%} of the pairs it trained on (mean margin {margin:.2f}).")
    idle = sum(1 for h in trainer.history if not h["pairs"])
    if idle:
        out.append(f"{idle} of {len(trainer.history)} steps had no pair to learn from: both samples of every prompt "
                   f"scored the same under the preference (it was saturated), so those steps changed nothing.")
    ratio = last.entropy / max(first.entropy, 1e-12)
    if pref.one_answer and last.entropy < first.entropy:
        out.append(f"The entropy fell ({first.entropy:.2f} → {last.entropy:.2f} nats): with one right answer per "
                   f"prompt that is what learning looks like, so it does not count as collapse here.")
    if collapsed(ms, pref.one_answer):
        why = []
        if not pref.one_answer and last.entropy < COLLAPSE_ENTROPY * first.entropy:
            why.append(f"its entropy fell to {ratio:.0%} of the start ({first.entropy:.2f} → {last.entropy:.2f} nats)")
        if last.kl > COLLAPSE_KL:
            why.append(f"KL reached {last.kl:.2f} nats per token, over the {COLLAPSE_KL:g} nat we count as collapse")
        out.append(f"The policy collapsed: {' and '.join(why)}; {last.distinct:.0%} of its {s.eval_samples} samples "
                   f"are distinct (one: {last.example!r}). "
                   + ("It wins the preference while moving far from what the model had learned (over-optimisation: "
                      "the rule is satisfied, the rest of the text is not protected)." if last.win_rate > first.win_rate
                      else "It did not even win the preference it was trained on."))
    else:
        limit = "" if pref.one_answer else f"under {COLLAPSE_ENTROPY:.0%} of the entropy or "
        out.append(f"No collapse: entropy at {ratio:.0%} of the start, KL {last.kl:.2f} nats per token (collapse: "
                   f"{limit}over {COLLAPSE_KL:g} nat), {last.distinct:.0%} of the samples distinct "
                   f"(one: {last.example!r}).")
    return out


# ------------------------------------------------------------------------------------------ the job
@dataclass
class DPORun:
    """A DPO run as far as it got (copies: never trained further)."""
    policy: GPT
    step: int
    total: int
    history: list
    measurements: list
    findings: list
    seconds: float = 0.0
    finished: bool = False
    samples: list = field(default_factory=list)  # (prompt, reference, policy) texts at the last measurement


class DPOJob(Job):
    """DPO in slices on the scheduler; publishes a ``DPORun`` after each slice."""

    shippable = True  # seeded samples and steps (explorer.shelf); a person's choices are in the key

    def __init__(self, key: Hashable, title: str, build: Callable[[], DPOTrainer], peak_bytes: float):
        self.key, self.title, self.peak_bytes = key, title, peak_bytes
        self._build = build
        self.trainer: Optional[DPOTrainer] = None
        self._live: Optional[DPORun] = None
        self._lock = threading.Lock()
        self._samples: Optional[tuple[int, list]] = None  # (measurements when drawn, side_by_side())

    def findings(self, trainer: DPOTrainer) -> list[str]:
        return findings(trainer)

    def step(self, slice_s: float) -> bool:
        if self.trainer is None:
            self.trainer = self._build()
            self.trainer.measure()
        self.trainer.advance(seconds=slice_s)
        tr = self.trainer
        policy = copy.deepcopy(tr.policy).eval()
        for p in policy.parameters():
            p.requires_grad_(False)
        if self._samples is None or self._samples[0] != len(tr.measurements):  # new weights measured: new samples
            self._samples = (len(tr.measurements), tr.side_by_side())
        run = DPORun(policy, tr.step_count, tr.settings.steps, list(tr.history), list(tr.measurements),
                     self.findings(tr), tr.seconds, tr.done, self._samples[1])
        with self._lock:
            self._live = run
        return tr.done

    def live(self) -> Optional[DPORun]:
        with self._lock:
            return self._live

    def result(self) -> Optional[DPORun]:
        return self.live()

    def progress(self) -> tuple[float, str]:
        run = self.live()
        return (0.0, "starting") if run is None else (run.step / max(1, run.total), f"step {run.step}/{run.total}")

    def close(self) -> None:
        self.trainer = None


# ---------------------------------------------------------------------------------------------- the page's runs
MODES = {"fewer_e": "Fewer letter e (Emma)", "reversal": "Correct reversal (reverse task)",
         "human": "Your own choices"}  # the tab's mode control: name -> label
BETA_CHOICES = (0.001, 0.01, 0.1, 0.5, 2.0)  # the β control; 0.001 over 100 steps collapses (KL 1.4 nat, measured)
LR_CHOICES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the learning-rate control; 1e-1 collapses (measured)
STEP_CHOICES = (2, 5, 10, 20, 30, 50, 100)  # the DPO steps control
MIN_CHOICES = 4  # a person's choices needed before DPO runs on them
TEXT_PROMPT = 16  # characters of Emma before each sampled continuation
TEXT_SAMPLE = 12  # characters of each continuation
TEXT_BASE_STEPS = 150  # training steps of the Emma base model (seeded, shared by every run on it)
REVERSE_LENGTH = 6  # letters of each reverse-task input
REVERSE_BASE_STEPS = 100  # training steps of the reverse base model: stopped early, so about half its answer letters are right
BASE_SEED = 0  # seeds both base models: one base per mode, whatever the DPO seed


@dataclass(frozen=True)
class FeedbackSettings:
    """One run of the Feedback tab: which base model and preference, and the DPO settings."""
    mode: str = "fewer_e"  # a name in MODES: scripted fewer-e on Emma, scripted reversal, or a person's choices
    beta: float = 0.1  # β of the DPO loss
    lr: float = 1e-3  # Adam's learning rate of the DPO steps
    steps: int = 30  # DPO steps
    seed: int = 0  # seeds the DPO run's prompts, samples and measurements (never the base model)
    base_steps: int = 0  # training steps of the base model; 0: the mode's own (TEXT_/REVERSE_BASE_STEPS)
    eval_samples: int = 64  # prompts per measurement
    eval_every: int = 5  # DPO steps between measurements

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PreferenceError(f"mode = {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.base_steps < 0:
            raise PreferenceError(f"base_steps = {self.base_steps}: must be 0 (the mode's own) or more")
        self.dpo()  # its own checks

    @property
    def task_mode(self) -> bool:
        return self.mode == "reversal"

    @property
    def preference(self) -> str:
        """The scripted preference: the mode's own, or fewer-e to measure a person's choices by."""
        return "reversal" if self.task_mode else "fewer_e"

    def dpo(self) -> DPOSettings:
        return DPOSettings(beta=self.beta, lr=self.lr, steps=self.steps, seed=self.seed,
                           sample_length=REVERSE_LENGTH if self.task_mode else TEXT_SAMPLE,
                           eval_every=self.eval_every, eval_samples=self.eval_samples)


def text_base_settings(corpus, steps: int = 0):
    """The Emma base model: 1 block, width 64, context 32, seeded (``explorer.textlm``'s training)."""
    from . import textlm

    return textlm.settings_for(corpus, n_layer=1, n_head=4, n_embd=64, context=32, batch_size=16, lr=1e-2,
                               warmup=20, steps=steps or TEXT_BASE_STEPS, every=steps or TEXT_BASE_STEPS,
                               seed=BASE_SEED)


def reverse_base_settings(steps: int = 0):
    """The half-trained reverse model: the Attention Lab's training, stopped after a few steps."""
    from .lab import LabSettings

    return LabSettings(task="reverse", length=REVERSE_LENGTH, n_layer=1, n_head=2, n_embd=32,
                       steps=steps or REVERSE_BASE_STEPS, seed=BASE_SEED, until_learned=False)


_BASES: "OrderedDict[Hashable, object]" = OrderedDict()  # finished base runs (TrainedRun) of this process, by key
_BASES_LOCK = threading.Lock()
KEEP_BASES = 6  # finished base models kept per process


class BaseJob(Job):
    """A base model's training (the Training page's or the Attention Lab's own ``TrainJob``), kept
    once finished in this process's store of bases, so every DPO run on it starts from the same
    weights without training them again."""

    shippable = True  # seeded (explorer.shelf)

    def __init__(self, settings: FeedbackSettings):
        from . import lab, textlm
        from .corpus import builtin

        if settings.task_mode:
            self.inner = lab.training_job(reverse_base_settings(settings.base_steps))
            self.what = f"the reverse task ({REVERSE_LENGTH} letters), stopped early"
        else:
            self.inner = textlm.training_job(text_base_settings(builtin(), settings.base_steps), builtin())
            self.what = "Emma, character by character"
        self.key = ("dpo-base",) + tuple(self.inner.key)  # == base_key(settings)
        self.title, self.peak_bytes = f"training the base model on {self.what}", self.inner.peak_bytes

    def known(self):
        with _BASES_LOCK:
            return _BASES.get(self.key)

    def step(self, slice_s: float) -> bool:
        if self.known() is not None:
            return True
        if not self.inner.step(slice_s):
            return False
        self.restore(self.inner.result())
        return True

    def live(self):
        return self.known() or self.inner.live()

    def restore(self, result) -> None:
        """Keep a finished base (trained here, or from the shelf) in this process's store of bases."""
        with _BASES_LOCK:
            _BASES[self.key] = result
            while len(_BASES) > KEEP_BASES:
                _BASES.popitem(last=False)

    def result(self):
        return self.known()

    def progress(self) -> tuple[float, str]:
        if self.known() is not None:
            return 1.0, "base model trained"
        fraction, what = self.inner.progress()
        return fraction, f"base model: {what}"

    def close(self) -> None:
        self.inner.close()


def base_key(settings: FeedbackSettings) -> tuple:
    """The key of ``BaseJob(settings)`` (the base model's full settings), without making the job."""
    from .corpus import builtin

    if settings.task_mode:
        return ("dpo-base", "lab", reverse_base_settings(settings.base_steps))
    return ("dpo-base", "textlm", text_base_settings(builtin(), settings.base_steps))


def feedback_key(settings: FeedbackSettings, choices: tuple = ()) -> tuple:
    """The key of ``FeedbackJob(settings, choices)``: the full settings, the base's and the choices."""
    return ("feedback", settings, base_key(settings), tuple(choices) if settings.mode == "human" else ())


def choices_needed(count: int) -> Optional[str]:
    """Why a person's choices cannot train yet (too few), or None."""
    if count >= MIN_CHOICES:
        return None
    more = MIN_CHOICES - count
    return (f"{count} choice{'' if count == 1 else 's'} so far: {more} more {'is' if more == 1 else 'are'} needed "
            f"before DPO can run (at least {MIN_CHOICES})")


def draw_pair(model: GPT, seed: int, index: int) -> tuple[str, str, str]:
    """Pair ``index`` of a person's comparisons: an Emma prompt of ``TEXT_PROMPT`` characters and two
    different continuations of ``TEXT_SAMPLE`` sampled from ``model`` (temperature 1), seeded by
    ``(seed, index)``; equal continuations are drawn again."""
    from .corpus import builtin

    corpus = builtin()
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    prompt = corpus_prompts(corpus, TEXT_PROMPT)(gen, 1)
    a = sample(model, prompt, TEXT_SAMPLE, 1.0, gen)
    for _ in range(20):
        b = sample(model, prompt, TEXT_SAMPLE, 1.0, gen)
        if not torch.equal(a, b):
            break
    tok = corpus.tokenizer
    return tok.decode(prompt[0]), tok.decode(a[0]), tok.decode(b[0])


def shown(text: str) -> str:
    """Sample text for a table cell: new lines and tabs made visible (the text is data, never markup)."""
    return text.replace("\n", "⏎").replace("\t", "⇥")


def mode_findings(settings: FeedbackSettings, choices: tuple = ()) -> list[str]:
    """What is measured in this mode, said before the run's findings."""
    if settings.mode != "human":
        return []
    return [f"DPO trained on your {len(choices)} choices, every step on all of them. There is no rule behind your "
            "choices the page can score, so the win rate is measured under the scripted 'Fewer letter e' rule: "
            "it rises only as far as your choices happened to prefer fewer e's."]


class FeedbackJob(DPOJob):
    """The Feedback tab's run: the base model (``BaseJob``, trained once per process and shared),
    then DPO on a copy of it against a frozen copy. Its key is the full settings (with a person's
    choices in human mode), so the same run is computed once per server."""

    def __init__(self, settings: FeedbackSettings, choices: tuple = ()):
        if settings.mode == "human":
            need = choices_needed(len(choices))
            if need:
                raise PreferenceError(need)
        self.settings, self.choices = settings, tuple(choices)
        self.base = BaseJob(settings)
        super().__init__(feedback_key(settings, self.choices),
                         f"DPO on the base model ({MODES[settings.mode]})", self._make,
                         self.base.peak_bytes + 64e6)

    def _make(self) -> DPOTrainer:
        from .corpus import builtin
        from .tasks import TASKS

        model = self.base.result().model
        s = self.settings
        if s.task_mode:
            task = TASKS["reverse"]
            return DPOTrainer(model, task.tokenizer, task_prompts(task, REVERSE_LENGTH), "reversal", s.dpo())
        corpus = builtin()
        human = HumanPairs(self.choices) if s.mode == "human" else None
        return DPOTrainer(model, corpus.tokenizer, corpus_prompts(corpus, TEXT_PROMPT), "fewer_e", s.dpo(), human)

    def findings(self, trainer: DPOTrainer) -> list[str]:
        return mode_findings(self.settings, self.choices) + findings(trainer)

    def step(self, slice_s: float) -> bool:
        if self.trainer is None and self.base.result() is None:
            self.base.step(slice_s)
            return False  # the next slice builds the DPO run
        return super().step(slice_s)

    def progress(self) -> tuple[float, str]:
        if self.live() is None:
            return self.base.progress()
        return super().progress()

    def close(self) -> None:
        super().close()
        self.base.close()


# ---------------------------------------------------------------------------------------------- the page's views
NO_PAIRS = "no pair"


def _gaps(values):
    return [None if v != v else v for v in values]  # NaN (a step with no pair) leaves a gap


def margin_series(run: DPORun) -> dict:
    """The mean implicit-reward margin and the reward accuracy of every step's pairs."""
    steps = [h["step"] for h in run.history]
    return {"preference margin": (steps, _gaps([h["margin"] for h in run.history])),
            "reward accuracy": (steps, _gaps([h["reward_accuracy"] for h in run.history]))}


def divergence_series(run: DPORun) -> dict:
    """KL(policy || reference) and the policy's entropy (nats per token) at every measurement."""
    steps = [m.step for m in run.measurements]
    return {"KL(policy ‖ reference)": (steps, [m.kl for m in run.measurements]),
            "policy entropy": (steps, [m.entropy for m in run.measurements])}


def win_series(run: DPORun) -> dict:
    """The policy's win rate against the reference at every measurement, and one half (no change)."""
    steps = [m.step for m in run.measurements]
    return {"win rate against the reference": (steps, [m.win_rate for m in run.measurements]),
            "distinct samples": (steps, [m.distinct for m in run.measurements]),
            "one half (no change)": ([0, max(steps[-1], run.total)], [0.5, 0.5])}


def definitions(settings: FeedbackSettings) -> list[str]:
    """The tab's definitions, one sentence (or two) each."""
    s = settings.dpo()
    return [
        "**DPO loss** (Rafailov et al. 2023): for each pair, take how much more likely the policy makes the "
        "chosen completion than the reference does (the log-ratio), subtract the same for the rejected one, "
        "multiply by β, and take minus the log of the sigmoid of that; the loss is the mean over the pairs. "
        "No reward model is trained and no reinforcement learning is run.",
        "**The reference** is a frozen copy of the base model (no gradients, never updated); the **policy** "
        "starts as another copy and is the only one trained.",
        "**β** sets how far each log-ratio counts: the implicit reward of a completion is β times its "
        "log-ratio. The loss stops pushing a pair once its margin is large, and a larger β gets there with "
        "less movement away from the reference; a small β keeps pushing (the KL penalty of RLHF that DPO "
        "solves for is weighted by β).",
        "**Preference margin**: the chosen completion's implicit reward minus the rejected one's, averaged over "
        "a step's pairs; **reward accuracy**: the share of those pairs where the chosen one's reward is higher.",
        f"**KL(policy ‖ reference)**: on {s.eval_samples} fresh policy samples, at each position the exact KL "
        "divergence of the policy's next-token distribution from the reference's, averaged over positions, in "
        "nats per token; 0 means the same model. **Entropy**: the policy's own uncertainty there, in nats.",
        f"**Win rate**: on the same {s.eval_samples} prompts, the policy and the reference each write a sample "
        "with the same random draws; the scripted preference scores both; a win counts 1, a tie one half. At "
        "step 0 the two models are equal, so it starts at exactly one half.",
        f"**Collapse** (what this page counts as such): the policy's entropy under {COLLAPSE_ENTROPY:.0%} of the "
        f"start's (not for reversal, which has one right answer), or KL over {COLLAPSE_KL:g} nat per token.",
    ]


def url_defaults() -> dict:
    """The Safeguards page's controls of this tab (keys ``sg_fb_*``) at their defaults."""
    d = FeedbackSettings()
    return {"sg_fb_mode": MODES[d.mode], "sg_fb_beta": d.beta, "sg_fb_lr": d.lr, "sg_fb_steps": d.steps,
            "sg_fb_seed": d.seed}


def settings_from(values: dict) -> FeedbackSettings:
    """Settings from the tab's control values (``url_defaults``'s keys); ``PreferenceError`` says what is wrong."""
    label_to_mode = {label: name for name, label in MODES.items()}
    mode = label_to_mode.get(values["sg_fb_mode"])
    if mode is None:
        raise PreferenceError(f"mode {values['sg_fb_mode']!r}: choose one of {', '.join(MODES.values())}")
    return FeedbackSettings(mode=mode, beta=float(values["sg_fb_beta"]), lr=float(values["sg_fb_lr"]),
                            steps=int(values["sg_fb_steps"]), seed=int(values["sg_fb_seed"]))


# ---------------------------------------------------------------------------------------------- the bench
COLLAPSE_LR = 1e-1  # the too-large step of the bench's collapse run (the learning-rate control's largest)
SMALL_BETA = 0.001  # the bench's small-β run (the β control's smallest): over 100 steps it collapses (KL > 1 nat; measured)


def bench_figures(quick: bool = False) -> dict:
    """The issue's figures, measured: the scripted fewer-e preference's win rate against the reference
    before and after DPO and the KL at the end, the same for the reversal preference on the half-trained
    reverse model, a run with too large a step (its entropy, KL and distinct samples at the end), and
    runs of the most steps with the smallest and the default β. ``quick``: tiny base models and runs (seconds), for a test."""
    t0 = time.perf_counter()
    small = dict(base_steps=30, steps=3, eval_samples=16, eval_every=3) if quick else {}
    out: dict = {"quick": quick}

    def run(name: str, **fields) -> DPORun:
        r = run_to_end(FeedbackJob(FeedbackSettings(**(small | fields))))
        first, last = r.measurements[0], r.measurements[-1]
        out.update({f"{name}_win_before": first.win_rate, f"{name}_win_after": last.win_rate,
                    f"{name}_score_before": first.policy_score, f"{name}_score_after": last.policy_score,
                    f"{name}_kl_end": last.kl, f"{name}_entropy_start": first.entropy,
                    f"{name}_entropy_end": last.entropy, f"{name}_distinct_end": last.distinct,
                    f"{name}_steps": last.step})
        return r

    d = FeedbackSettings()
    out.update(beta=d.beta, lr=d.lr)
    run("fewer_e", mode="fewer_e")
    run("reversal", mode="reversal")
    r = run("collapse", mode="fewer_e", lr=COLLAPSE_LR)
    out.update(collapse_lr=COLLAPSE_LR, collapse_collapsed=collapsed(r.measurements))
    long = {} if quick else dict(steps=max(STEP_CHOICES), eval_every=20)  # β's pull shows over many steps
    r = run("small_beta", mode="fewer_e", beta=SMALL_BETA, **long)
    out.update(small_beta=SMALL_BETA, small_beta_collapsed=collapsed(r.measurements))
    r = run("default_beta_long", mode="fewer_e", **long)  # the same steps at the default β, to compare
    out.update(default_beta_long_collapsed=collapsed(r.measurements))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
