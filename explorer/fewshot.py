"""A few-shot task: a letter mapping defined only by the examples in the prompt.

Each sequence has its own mapping of a small alphabet (a random substitution: every letter is sent
to a letter drawn at random, independently), written as examples of three tokens each, a source
letter, its image and a comma: ``"ax,by,cz,"``; the model must answer a query letter ``"b"`` (the
next token is its image) from the examples alone, since the mapping changes from one sequence to
the next: in-context learning in the sense of Brown et al. 2020 (GPT-3's few-shot prompts). The
format is the canonical one of induction heads (Olsson et al. 2022): a layer-0 previous-token head
writes "the token before me was b" into the position of ``y``, and a layer-1 head at the query
``b`` attends there and copies ``y``. (An earlier format, ``"a>x,"`` with the query ``"b>"``,
needed a head looking two tokens back instead; the model trained on it copied the last answer.)

Training sequences are streams of ``pairs`` examples whose letters repeat (drawn with
replacement), and every answer letter is a target: the j-th example is a query after j examples,
so one sequence trains every number of examples at once (``pairs`` supervised lookups). The
measurement writes ``k`` examples of distinct letters, then a query letter drawn from the whole
alphabet, on *held-out* mappings: a seeded hash of each mapping splits all ``n ** n`` mappings once
into training and held-out, and training never draws a held-out one.

With ``n`` letters and k examples of distinct letters, the query is among the examples with
probability k/n; otherwise nothing in the prompt tells its answer (the letters are independent).
The best possible accuracy is therefore ``k/n + (1 - k/n)/n`` (``ideal``), and ``1/n`` (chance) with
no examples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .config import ModelConfig
from .jobs import run_to_end
from .model import GPT, build_model
from .runs import Probe, TrainJob, training_peak_bytes
from .tasks import IGNORE, LETTERS, CharTokenizer
from .train import TrainConfig, Trainer

COMMA = ","
SPLITS = ("train", "held_out")
HASH_MULT, HASH_MOD = 0x9E3779B1, 2**32  # Knuth's multiplicative hash, splitting mappings by their code


@dataclass(frozen=True)
class FewShotSettings:
    n_letters: int = 8  # alphabet size n: the letters a.. that are mapped, and what they map to
    pairs: int = 12  # examples per training sequence (letters repeat)
    held_out_fraction: float = 0.2  # share of all n ** n mappings kept for measurement only
    split_seed: int = 0  # seeds which mappings are held out
    shots: tuple = (0, 1, 2, 4, 8)  # numbers of examples the accuracy is measured at (each <= n_letters)
    n_layer: int = 2  # transformer blocks
    n_embd: int = 64  # width
    n_head: int = 4  # heads per layer
    ffn: str = "none"  # feed-forward layer, a name in explorer.blocks.FEEDFORWARD (attention only: formed the lookup
    # far more reliably than "dense" did, 1500 steps: 95% against 57% at 8 examples)
    encoding: str = "rope"  # positional encoding
    steps: int = 1500  # training steps (the lookup forms at 500 to 1300 of them, depending on the seed)
    batch_size: int = 64  # sequences per step
    lr: float = 3e-3  # peak learning rate (AdamW)
    seed: int = 0  # seeds the weights and the training sequences
    check_every: int = 50  # steps between accuracy measurements while training
    eval_prompts: int = 512  # held-out prompts per number of examples
    eval_seed: int = 4321  # seeds those prompts

    @property
    def alphabet(self) -> str:
        return LETTERS[: self.n_letters]

    @property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(self.alphabet + COMMA)

    def model_config(self) -> ModelConfig:
        return ModelConfig(vocab_size=self.tokenizer.vocab_size, block_size=3 * max(self.pairs, max(self.shots) + 1),
                           n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd, encoding=self.encoding,
                           ffn=self.ffn)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed)


# ---------------------------------------------------------------------------------------------- mappings
def mapping_code(mapping: Tensor) -> Tensor:
    """``(B, n)`` mappings (``mapping[b, s]`` = the letter that letter s goes to) -> ``(B,)`` their
    numbers in base n (each of the ``n ** n`` mappings has one)."""
    n = mapping.shape[-1]
    return (mapping * n ** torch.arange(n)).sum(-1)


def held_out(mapping: Tensor, settings: FewShotSettings) -> Tensor:
    """``(B, n)`` -> ``(B,)`` bool: whether each mapping belongs to the held-out split (a seeded hash
    of its code below ``held_out_fraction``; fixed for all time by ``split_seed``)."""
    h = ((mapping_code(mapping) + settings.split_seed * 7919) * HASH_MULT) % HASH_MOD
    return h < int(settings.held_out_fraction * HASH_MOD)


def draw_mappings(gen: torch.Generator, batch_size: int, settings: FewShotSettings, split: str) -> Tensor:
    """``(B, n)`` random substitutions from one split (redrawn until each row is in it)."""
    if split not in SPLITS:
        raise ValueError(f"split = {split!r}: choose one of {', '.join(SPLITS)}")
    n = settings.n_letters
    out = torch.randint(0, n, (batch_size, n), generator=gen)
    wrong = held_out(out, settings) != (split == "held_out")
    while wrong.any():
        out[wrong] = torch.randint(0, n, (int(wrong.sum()), n), generator=gen)
        wrong = held_out(out, settings) != (split == "held_out")
    return out


def write(sources: Tensor, mapping: Tensor, settings: FewShotSettings, query: bool = False) -> Tensor:
    """Token ids of examples ``st,`` for each row's ``(B, k)`` source letters under its mapping:
    ``(B, 3k - 1)``; with ``query`` the last source is a query ``s`` alone (``(B, 3k - 2)``, no answer)."""
    tok = settings.tokenizer
    B, k = sources.shape
    targets = mapping.gather(1, sources)  # (B, k)
    comma = torch.full((B, k), tok.stoi[COMMA])
    seq = torch.stack([sources, targets, comma], dim=2).view(B, 3 * k)  # letters are ids 0..n-1
    return seq[:, :-2] if query else seq[:, :-1]


class FewShotTask:
    """The trainer's task (``batch(gen, B, pairs) -> (x, y)``): streams of ``pairs`` examples of
    one training mapping per sequence, letters drawn with replacement, every answer letter a
    target (``IGNORE`` elsewhere); ``x``, ``y`` are ``(B, 3 * pairs - 2)``."""

    def __init__(self, settings: FewShotSettings, split: str = "train"):
        self.settings, self.split = settings, split

    def batch(self, gen: torch.Generator, batch_size: int, length: int) -> tuple[Tensor, Tensor]:
        s = self.settings
        mapping = draw_mappings(gen, batch_size, s, self.split)
        sources = torch.randint(0, s.n_letters, (batch_size, length), generator=gen)
        seq = write(sources, mapping, s)  # (B, 3L - 1)
        x, y = seq[:, :-1], seq[:, 1:].clone()
        answer = torch.zeros_like(y, dtype=torch.bool)
        answer[:, 0::3] = True  # y[:, 3j] is the answer of example j (x there is its source letter)
        y[~answer] = IGNORE
        return x, y


def prompts(gen: torch.Generator, n: int, shots: int, settings: FewShotSettings, split: str = "held_out"):
    """``n`` prompts of ``shots`` examples of distinct letters and a query letter drawn from the
    whole alphabet: ``(ids (n, 3 * shots + 1), answers (n,), seen (n,) bool, mappings (n, n_letters))``."""
    if not 0 <= shots <= settings.n_letters:
        raise ValueError(f"shots = {shots}: from 0 to n_letters = {settings.n_letters} (examples of distinct letters)")
    mapping = draw_mappings(gen, n, settings, split)
    order = torch.rand(n, settings.n_letters, generator=gen).argsort(dim=1)[:, :shots]  # (n, k) distinct
    query = torch.randint(0, settings.n_letters, (n, 1), generator=gen)
    ids = write(torch.cat([order, query], dim=1), mapping, settings, query=True)
    seen = (order == query).any(dim=1)
    return ids, mapping.gather(1, query).squeeze(1), seen, mapping


def prompt_text(settings: FewShotSettings, shots: int, seed: int = 0, split: str = "held_out") -> dict:
    """One human-readable prompt for the page: ``{"prompt": "ax,by,cz,b", "answer": "y", "seen":
    bool, "mapping": "abc... -> xyz..."}`` (``shots`` examples of distinct letters, then the query)."""
    ids, answer, seen, mapping = prompts(torch.Generator().manual_seed(seed), 1, shots, settings, split)
    tok = settings.tokenizer
    return {"prompt": tok.decode(ids[0]), "answer": tok.decode(answer), "seen": bool(seen[0]),
            "mapping": f"{settings.alphabet} -> {tok.decode(mapping[0])}"}


def ideal(shots: int, settings: FewShotSettings) -> float:
    """The best possible accuracy with ``shots`` examples of distinct letters: the query was shown
    with probability k/n, else a guess right 1/n of the time."""
    p = shots / settings.n_letters
    return p + (1 - p) / settings.n_letters


@torch.no_grad()
def accuracy_by_shots(model: GPT, settings: FewShotSettings, split: str = "held_out",
                      seed: Optional[int] = None) -> list[dict]:
    """For each number of examples in ``settings.shots``: the model's accuracy on the query over
    ``eval_prompts`` prompts of ``split`` mappings, split by whether the query letter was among the
    examples (``seen``), beside ``ideal`` and ``chance``. Returns ``[{"shots", "accuracy",
    "accuracy_seen", "accuracy_unseen", "ideal", "chance"}]`` (None where no prompt fell in a part)."""
    model.eval()
    gen = torch.Generator().manual_seed(settings.eval_seed if seed is None else seed)
    out = []
    for k in settings.shots:
        ids, answer, seen, _ = prompts(gen, settings.eval_prompts, k, settings, split)
        right = model(ids).logits[:, -1].argmax(-1) == answer  # (n,)
        part = lambda m: round(right[m].float().mean().item(), 4) if m.any() else None  # noqa: E731
        out.append({"shots": k, "accuracy": round(right.float().mean().item(), 4), "accuracy_seen": part(seen),
                    "accuracy_unseen": part(~seen), "ideal": round(ideal(k, settings), 4),
                    "chance": round(1 / settings.n_letters, 4)})
    return out


# ---------------------------------------------------------------------------------------------- training
def build_trainer(settings: FewShotSettings) -> Trainer:
    return Trainer(build_model(settings.model_config(), settings.seed), FewShotTask(settings), settings.pairs,
                   settings.train_config())


def training_job(settings: FewShotSettings) -> TrainJob:
    """The scheduler job (shared by key: the full settings). Its published ``TrainedRun.probes`` hold
    ``(step, {"by_shots": accuracy_by_shots(...)})`` every ``check_every`` steps."""
    return TrainJob(("fewshot", settings), "training on few-shot letter mappings", lambda: build_trainer(settings),
                    training_peak_bytes(settings.model_config(), settings.batch_size, 3 * settings.pairs - 2),
                    probe=Probe(lambda model: {"by_shots": accuracy_by_shots(model, settings)}, settings.check_every),
                    max_checkpoints=0)  # its page never rewinds: no checkpoints to keep


def train(settings: FewShotSettings) -> tuple[GPT, list, float]:
    """Train in this thread (bench, tests): the model, its probes, the training seconds."""
    job = training_job(settings)
    run_to_end(job)
    run = job.live()
    return run.model, run.probes, run.seconds
