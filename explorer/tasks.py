"""Built-in tasks, generated in code (no downloads), and a character-level tokenizer.

Symbolic tasks write an example as ``prompt + answer``; the model is trained to predict the
answer (the loss is masked over the prompt):
- ``copy``:      ``"qwerty="  -> "qwerty"``
- ``reverse``:   ``"qwerty="  -> "ytrewq"``
- ``sort``:      ``"qwerty="  -> "eqrtwy"``
- ``induction``: ``"qwerty"   -> "qwerty"`` (a random sequence, then its repetition: the pattern
  induction heads learn, Olsson et al. 2022)
- ``grammar``:   sentences of a small generated toy language (a probabilistic grammar); the model
  learns the language as a whole and continues a sentence you start.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .registry import Registry

LETTERS = "abcdefghijklmnopqrstuvwxyz"
SEP = "="
IGNORE = -100  # target value that the loss skips


class UnknownCharacters(ValueError):
    """Input holds characters the tokenizer has no token for."""

    def __init__(self, chars: list[str], vocab: str):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"unknown characters {shown}: this task's vocabulary is {vocab!r}")


class CharTokenizer:
    def __init__(self, chars: str):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary, each once, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.stoi))

    def encode(self, text: str) -> list[int]:
        bad = self.unknown(text)
        if bad:
            raise UnknownCharacters(bad, self.chars)
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    description: str  # one paragraph for the page
    chars: str  # the vocabulary
    input_chars: str  # what a user may type
    separator: str  # appended to a user's input before the answer ("" for none)
    make: Callable[[Tensor], Tensor] | None  # symbolic: (B, L) ids -> (B, L) answer ids

    @property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(self.chars)

    @property
    def symbolic(self) -> bool:
        return self.make is not None

    def context(self, length: int) -> int:
        """Context (block_size) a model needs for inputs of ``length`` characters."""
        return 2 * length + len(self.separator) if self.symbolic else 4 * length

    def answer_length(self, prompt: str) -> int:
        return len(prompt) if self.symbolic else 4 * len(prompt)

    def batch(self, gen: torch.Generator, batch_size: int, length: int) -> tuple[Tensor, Tensor]:
        """Inputs and next-token targets ``(B, T)``, targets masked to ``IGNORE`` over the prompt."""
        if not self.symbolic:
            return _grammar_batch(self, gen, batch_size, self.context(length))
        tok = self.tokenizer
        src = torch.randint(0, len(LETTERS), (batch_size, length), generator=gen)
        parts = [src]
        if self.separator:
            parts.append(torch.full((batch_size, 1), tok.stoi[self.separator]))
        parts.append(self.make(src))
        seq = torch.cat(parts, dim=1)  # (B, 2L + sep)
        x, y = seq[:, :-1], seq[:, 1:].clone()
        y[:, : length + len(self.separator) - 1] = IGNORE
        return x, y

    def sample(self, gen: torch.Generator, length: int) -> tuple[str, str]:
        """One example as text: (user input, expected answer)."""
        if not self.symbolic:
            words = sentence(random.Random(int(torch.randint(0, 2**31, (1,), generator=gen))))
            cut = words.index(" ", words.index(" ") + 1) + 1
            return words[:cut], words[cut:]
        src = torch.randint(0, len(LETTERS), (1, length), generator=gen)
        tok = self.tokenizer
        return tok.decode(src[0]), tok.decode(self.make(src)[0])

    def sources(self, ids: list[int]) -> list[tuple[int, int]]:
        """For an input of token ids: ``(position that predicts an answer token, position of the
        input token it comes from)`` for every answer token, from the task's own rule. Each token is
        tagged with its place (``id * n + place``) before the rule runs, so repeated letters and sorting
        keep their sources apart."""
        if not self.symbolic:
            return []
        n = len(ids)
        tagged = torch.tensor([[tok * n + i for i, tok in enumerate(ids)]])
        first = n + len(self.separator) - 1  # the position that predicts the first answer token
        return [(first + t, int(x) % n) for t, x in enumerate(self.make(tagged)[0])]

    def lookback(self, length: int, samples: int = 8) -> tuple[int, int] | None:
        """How far back each answer token's source lies from the position that predicts it, as
        ``(fewest, most)`` tokens back, computed from the task's own rule on random inputs (``None``
        for the toy language). Copy at length n needs exactly n back: a window of n + 1 keys (the
        position itself and the n before it)."""
        if not self.symbolic:
            return None
        gen = torch.Generator().manual_seed(0)
        found = set()
        for _ in range(samples):
            ids = torch.randint(0, len(LETTERS), (length,), generator=gen).tolist()
            found |= {q - k for q, k in self.sources(ids)}
        return min(found), max(found)

    def expected(self, text: str) -> str | None:
        """The right answer for a user's input, where the task defines one."""
        if not self.symbolic:
            return None
        ids = torch.tensor([self.tokenizer.encode(text)])
        return self.tokenizer.decode(self.make(ids)[0])


TASKS: Registry[Task] = Registry("task")


def _letters(name, title, description, make, separator=SEP):
    TASKS.register(name)(Task(name, title, description, LETTERS + separator, LETTERS, separator, make))


_letters("copy", "Copy", "Repeat the input after '='. Each output token looks back a fixed distance: a diagonal stripe.",
         lambda s: s.clone())
_letters("reverse", "Reverse", "Write the input backwards after '='. The answer's first letter is the input's last: an anti-diagonal.",
         lambda s: s.flip(1))
_letters("sort", "Sort", "Write the input's letters in alphabetical order after '='. Attention must find the next-smallest letter.",
         lambda s: s.sort(dim=1).values)
_letters("induction", "Induction", "A random sequence, then the same again: after the repeat begins, each token attends to the one "
         "that followed its earlier copy (an induction head).", lambda s: s.clone(), separator="")


# ----------------------------------------------------------------------------------------------
# The toy language: a small probabilistic grammar

GRAMMAR = {
    "S": [["NP", "VP", "."]],
    "NP": [["DET", "N"], ["DET", "ADJ", "N"]],
    "VP": [["V", "NP"], ["V", "NP", "P", "NP"], ["IV"]],
    "DET": [["the"], ["a"], ["every"]],
    "ADJ": [["small"], ["red"], ["happy"], ["old"]],
    "N": [["cat"], ["dog"], ["bird"], ["fox"], ["child"]],
    "V": [["sees"], ["likes"], ["chases"], ["finds"]],
    "IV": [["sleeps"], ["runs"], ["sings"]],
    "P": [["near"], ["with"], ["under"]],
}
_WORDS = {cat: [alt[0] for alt in alts] for cat, alts in GRAMMAR.items() if all(len(a) == 1 for a in alts)}
_NP = rf"(?:{'|'.join(_WORDS['DET'])}) (?:(?:{'|'.join(_WORDS['ADJ'])}) )?(?:{'|'.join(_WORDS['N'])})"
SENTENCE_RE = re.compile(
    rf"{_NP} (?:(?:{'|'.join(_WORDS['V'])}) {_NP}(?: (?:{'|'.join(_WORDS['P'])}) {_NP})?|(?:{'|'.join(_WORDS['IV'])}))\."
)


def sentence(rng: random.Random, symbol: str = "S") -> str:
    """One sentence of the toy language, e.g. ``"the small cat chases a dog."``."""
    words = []
    for part in rng.choice(GRAMMAR[symbol]):
        words.append(sentence(rng, part) if part in GRAMMAR else part)
    return " ".join(words).replace(" .", ".")


def grammatical(text: str) -> bool:
    """Whether ``text`` is one sentence of the toy language."""
    return SENTENCE_RE.fullmatch(text) is not None


def _grammar_batch(task: Task, gen: torch.Generator, batch_size: int, T: int):
    rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
    tok = task.tokenizer
    rows = []
    for _ in range(batch_size):
        text = ""
        while len(text) < T + 1:
            text += sentence(rng) + " "
        rows.append(tok.encode(text[: T + 1]))
    seq = torch.tensor(rows)
    return seq[:, :-1], seq[:, 1:]


TASKS.register("grammar")(Task(
    "grammar", "Toy language",
    "Sentences from a small grammar ('the red fox chases a bird.'). Start a sentence; the model finishes it.",
    chars=" ." + LETTERS, input_chars=" ." + LETTERS, separator="", make=None,
))
