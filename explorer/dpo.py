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
from dataclasses import dataclass
from typing import Callable, Hashable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .jobs import Job
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


class DPOJob(Job):
    """DPO in slices on the scheduler; publishes a ``DPORun`` after each slice."""

    def __init__(self, key: Hashable, title: str, build: Callable[[], DPOTrainer], peak_bytes: float):
        self.key, self.title, self.peak_bytes = key, title, peak_bytes
        self._build = build
        self.trainer: Optional[DPOTrainer] = None
        self._live: Optional[DPORun] = None
        self._lock = threading.Lock()

    def step(self, slice_s: float) -> bool:
        if self.trainer is None:
            self.trainer = self._build()
            self.trainer.measure()
        self.trainer.advance(seconds=slice_s)
        tr = self.trainer
        policy = copy.deepcopy(tr.policy).eval()
        for p in policy.parameters():
            p.requires_grad_(False)
        run = DPORun(policy, tr.step_count, tr.settings.steps, list(tr.history), list(tr.measurements),
                     findings(tr), tr.seconds, tr.done)
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


# ---------------------------------------------------------------------------------------------- the page
def url_defaults() -> dict:
    """The Safeguards page's controls of this tab (keys ``sg_fb_*``) at their defaults."""
    return {}
