"""Text corpora for character-level language models: the built-in novel, or the user's own text.

A ``Corpus`` is a text, its character vocabulary and a train / held-out split (the last 10 % of
the text is held out, as in the well-known minimal GPT trainers). It offers the same ``batch``
as a symbolic ``Task`` (``explorer.tasks``), so one ``Trainer`` trains both: each row of a batch
is a random window of the training text and its next characters (no position is masked).

The built-in corpus is Jane Austen's *Emma* (1815; public domain), shipped in
``explorer/data/emma.txt``: 883,027 characters, 76 distinct. Nothing is downloaded. Uploaded
files are decoded as UTF-8 text and checked (``from_bytes``); a bad file raises ``CorpusError``
with a message for the page, never anything else.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .tasks import CharTokenizer

DATA = Path(__file__).parent / "data"
BUILTIN = "emma"  # the built-in corpus: DATA / "emma.txt"
BUILTIN_TITLE = "Jane Austen, Emma (1815)"
MAX_BYTES = 5_000_000  # largest upload, in bytes
MIN_CHARS = 2_000  # shortest text worth training on: the held-out tenth must hold a few windows
MAX_VOCAB = 256  # most distinct characters a text may use (the model has one token per character)
HELD_OUT = 0.1  # share of the text, at its end, held out for the held-out loss


class CorpusError(ValueError):
    """A text that cannot be trained on; the message says why and what to do."""


@dataclass(frozen=True, eq=False)
class Corpus:
    name: str  # "emma" for the built-in corpus, else the uploaded file's name
    text: str
    chars: str = field(init=False)  # the vocabulary: every distinct character, sorted
    train: Tensor = field(init=False, repr=False)  # (N_train,) token ids, the first 90 %
    held_out: Tensor = field(init=False, repr=False)  # (N_held,) token ids, the last 10 %

    def __post_init__(self) -> None:
        chars = "".join(sorted(set(self.text)))
        stoi = {c: i for i, c in enumerate(chars)}  # built once (per character it took 11 s for Emma)
        ids = torch.tensor([stoi[c] for c in self.text], dtype=torch.long)
        n = int(len(ids) * (1 - HELD_OUT))
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "train", ids[:n])
        object.__setattr__(self, "held_out", ids[n:])

    @functools.cached_property
    def digest(self) -> str:
        """The sha256 of the text (UTF-8): the corpus's identity in a run's settings and a job's key,
        never the text itself."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def tokenizer(self) -> CharTokenizer:
        return CharTokenizer(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def symbolic(self) -> bool:  # a Task's flag: a corpus has no answer rule
        return False

    @property
    def title(self) -> str:
        return BUILTIN_TITLE if self.name == BUILTIN else self.name

    def batch(self, gen: torch.Generator, batch_size: int, length: int, split: str = "train") -> tuple[Tensor, Tensor]:
        """``batch_size`` random windows of ``length`` characters and their next characters:
        ``(x, y)``, both ``(B, length)``, ``y`` shifted one to the left (the ``Task.batch`` call)."""
        data = self.train if split == "train" else self.held_out
        if len(data) <= length:
            raise CorpusError(f"the {split} text has {len(data)} characters: too short for windows of {length}")
        start = torch.randint(0, len(data) - length, (batch_size,), generator=gen)
        offsets = torch.arange(length + 1)
        rows = data[start[:, None] + offsets]  # (B, length + 1)
        return rows[:, :-1], rows[:, 1:]

    @torch.no_grad()
    def held_out_loss(self, model, length: int, batches: int = 8, batch_size: int = 32, seed: int = 1234) -> float:
        """Mean next-character loss (nats per character) on fixed windows of the held-out text."""
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        total = 0.0
        for _ in range(batches):
            x, y = self.batch(gen, batch_size, length, split="held_out")
            total += float(model(x.to(device), y.to(device)).loss)
        return total / batches

    def uniform_loss(self) -> float:
        """The loss of a model that knows nothing: ln(vocabulary size)."""
        return math.log(self.vocab_size)


def check_text(text: str, name: str) -> None:
    """Raise ``CorpusError`` if ``text`` cannot be trained on."""
    if not text.strip():
        raise CorpusError(f"{name} is empty: upload a text file with some writing in it")
    if len(text) < MIN_CHARS:
        raise CorpusError(f"{name} has {len(text):,} characters; a language model needs at least {MIN_CHARS:,} "
                          "(the last tenth is held out to measure it)")
    controls = sorted({c for c in text if (ord(c) < 32 and c not in "\n\t\r") or c == "\x7f"})
    if controls:
        raise CorpusError(f"{name} holds control characters ({', '.join(repr(c) for c in controls[:5])}): "
                          "it looks like a binary file, not text")
    distinct = len(set(text))
    if distinct > MAX_VOCAB:
        raise CorpusError(f"{name} uses {distinct:,} distinct characters; the model has one token per character "
                          f"and takes at most {MAX_VOCAB}")


def from_bytes(data: bytes, name: str = "upload.txt") -> Corpus:
    """A corpus from an uploaded file's bytes: UTF-8 text, at most ``MAX_BYTES``."""
    if len(data) > MAX_BYTES:
        raise CorpusError(f"{name} is {len(data) / 1e6:.1f} MB; the largest text this page takes is "
                          f"{MAX_BYTES / 1e6:.0f} MB")
    if b"\x00" in data[:MAX_BYTES]:
        raise CorpusError(f"{name} holds NUL bytes: it is a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{name} is not UTF-8 text (byte {e.start:,} cannot be decoded): save it as UTF-8 "
                          "and upload it again") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    check_text(text, name)
    return Corpus(name, text)


def from_path(path: str | Path) -> Corpus:
    """A corpus from a text file on this machine (benchmarks and scripts)."""
    path = Path(path)
    return from_bytes(path.read_bytes(), path.name)


@functools.lru_cache(maxsize=1)
def builtin() -> Corpus:
    """The built-in corpus (read once per process, shared read-only)."""
    return Corpus(BUILTIN, (DATA / f"{BUILTIN}.txt").read_text(encoding="utf-8"))
