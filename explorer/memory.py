"""The Memory page: what a model keeps while it writes, what a window lets it reach, and what it
forgets.

A model writing text keeps, per layer, what later tokens need of the past: its key/value cache
(``explorer.kvcache``; Pope et al. 2022). Its attention kind decides what that is: every key and
value for full softmax attention, the last ``w`` for a sliding window (Mistral's rolling cache,
Jiang et al. 2023), a running state of constant size for linear attention (Katharopoulos et al.
2020). The context window bounds it: full attention reads at most ``block_size`` tokens. Stacked
windows reach further than one window: ``L`` layers of width ``w`` carry a token's information
``L (w - 1)`` positions (Beltagy et al. 2020, Longformer).

"Forgets" is measured, not drawn: a token is forgotten when replacing it leaves the model's next
prediction unchanged (``influence``). The page's model is seeded and untrained (what it writes is
noise; what it keeps, reaches and forgets is the architecture's, and the same for trained weights).
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .attention import ATTENTION
from .config import ModelConfig
from .jobs import Job
from .kvcache import KVCache, cache_problem, check_fits, reachable
from .tasks import CharTokenizer, UnknownCharacters

TOKENIZER = CharTokenizer("\n" + string.ascii_letters + string.digits + string.punctuation + " ")
MAX_TURN = 200  # characters in one turn
MAX_TURNS = 12  # turns kept in a conversation (older ones are dropped, and the page says so)
DEFAULT_TURNS = ("My name is Ada.", "I live in Lyon.", "What is my name?")
TABS = ("Conversation and cache", "Speed and memory")
HELD, FOLDED, GONE = 2, 1, 0  # a position in a layer's cache: token by token, summarised, not there


@dataclass(frozen=True)
class MemorySettings:
    """The Memory page's model and what it writes."""
    attention: str = "sliding_window"  # attention kind, a name in explorer.attention.ATTENTION
    window: int = 8  # keys per query for the window kinds (block size for block_sparse)
    encoding: str = "rope"  # positional encoding, a name in explorer.encodings.ENCODINGS
    n_layer: int = 2  # blocks: stacked windows reach n_layer * (window - 1) positions back
    block_size: int = 64  # the context: the longest text full attention reads
    new_tokens: int = 16  # characters written after the conversation
    seed: int = 0  # the untrained model's weights

    def config(self) -> ModelConfig:
        return ModelConfig(vocab_size=TOKENIZER.vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                           n_embd=64, n_head=4, attention=self.attention, window=self.window, encoding=self.encoding)

    def problem(self) -> Optional[str]:
        """Why these settings cannot be built, in words (None when they can)."""
        try:
            config = self.config()
        except ValueError as e:
            return str(e)
        return cache_problem(config)


def url_defaults() -> dict:
    d = MemorySettings()
    return {"mem_tab": TABS[0], "mem_attention": d.attention, "mem_window": d.window, "mem_encoding": d.encoding, "mem_layers": d.n_layer,
            "mem_context": d.block_size, "mem_new": d.new_tokens, "mem_seed": d.seed, "mem_step": d.new_tokens,
            "mem_next": "", "mem_kinds": ["softmax", "sliding_window", "linear"], "mem_max_n": 1024}


def check_turn(text: str) -> Optional[str]:
    """Why a typed turn cannot be added (None when it can)."""
    if not text.strip():
        return "the turn is empty: type a few words first"
    if len(text) > MAX_TURN:
        return f"the turn has {len(text):,} characters; at most {MAX_TURN} fit one turn"
    bad = TOKENIZER.unknown(text)
    if bad:
        return str(UnknownCharacters(bad, TOKENIZER.chars))
    return None


def clean_turns(values) -> tuple[list[str], list[str]]:
    """The turns a link carries, each checked: (kept, why the others were dropped)."""
    kept, dropped = [], []
    for i, text in enumerate(values):
        why = check_turn(text)
        if why:
            dropped.append(f"turn {i + 1}: {why}")
        else:
            kept.append(text)
    if len(kept) > MAX_TURNS:
        dropped.append(f"{len(kept) - MAX_TURNS} oldest turns: at most {MAX_TURNS} are kept")
        kept = kept[-MAX_TURNS:]
    return kept, dropped


def conversation(turns) -> str:
    """The text the model reads: the turns, one per line, and a new line for its answer."""
    return "".join(t + "\n" for t in turns)


def model_for(settings: MemorySettings):
    from .model import build_model

    return build_model(settings.config(), settings.seed).eval()


# ---------------------------------------------------------------------------------------------- writing
@dataclass
class Writing:
    """A greedy continuation written one token at a time, and what the cache held after each."""
    prompt: str
    text: str  # what it wrote
    probs: list[float]
    cached: bool  # written with the cache (False: the text was read again for every token)
    reason: str = ""  # why there was no cache ("" when there was)
    held: list = field(default_factory=list)  # per written token: (n_layer, positions) HELD/FOLDED/GONE grid
    memory: list = field(default_factory=list)  # per written token: bytes per layer
    labels: list = field(default_factory=list)  # per layer: what it keeps, in words

    @property
    def tokens(self) -> list[str]:
        return list(self.prompt + self.text)


@torch.no_grad()
def write(model, prompt: str, n: int) -> Writing:
    """Write ``n`` characters after ``prompt`` greedily, with the cache where it computes what
    reading again computes (otherwise without, saying why); after each written token, what each
    layer's cache holds (positions of the whole text) and its bytes."""
    config = model.config
    ids = TOKENIZER.encode(prompt)
    if not ids:
        raise ValueError("the conversation is empty: add a turn")
    try:
        check_fits(config, len(ids) + n - 1)
    except ValueError as e:
        return _write_again(model, prompt, ids, n, str(e))
    cache = KVCache.for_model(model)
    out = Writing(prompt, "", [], True)
    feed, total = torch.tensor([ids]), len(ids) + n
    text = []
    for _ in range(n):
        p = torch.softmax(model(feed, cache=cache).logits[0, -1], -1)
        nxt = int(p.argmax())
        text.append(TOKENIZER.chars[nxt])
        out.probs.append(float(p[nxt]))
        grid = np.full((config.n_layer, total), GONE, dtype=np.int8)
        for c in cache.contents():
            grid[c.layer, c.folded] = FOLDED
            grid[c.layer, c.positions] = HELD
        out.held.append(grid)
        out.memory.append(cache.memory())
        feed = torch.tensor([[nxt]])
    out.labels = [c.label for c in cache.contents()]
    out.text = "".join(text)
    return out


def _write_again(model, prompt, ids, n, reason) -> Writing:
    """Without a cache: the last ``block_size`` tokens read again for every token written."""
    ctx = model.config.block_size
    idx, text, probs = list(ids), [], []
    for _ in range(n):
        p = torch.softmax(model(torch.tensor([idx[-ctx:]])).logits[0, -1], -1)
        nxt = int(p.argmax())
        idx.append(nxt)
        text.append(TOKENIZER.chars[nxt])
        probs.append(float(p[nxt]))
    return Writing(prompt, "".join(text), probs, False, reason)


def memory_series(w: Writing) -> dict:
    """Each layer's cache bytes against the tokens read so far, for a line chart."""
    start = len(w.prompt)
    reads = [start + i for i in range(len(w.memory))]
    return {f"layer {i}": (reads, [m[i] for m in w.memory]) for i in range(len(w.memory[0]) if w.memory else 0)}


# ---------------------------------------------------------------------------------------------- reach and forgetting
def reach_grid(config, t: int) -> np.ndarray:
    """(n_layer, t + 1): 1 where the token at that position can change layer ``l``'s output at
    ``t`` (``kvcache.reachable``), positions counted in what the model reads."""
    grid = np.zeros((config.n_layer, t + 1), dtype=np.int8)
    for layer, positions in enumerate(reachable(config, t)):
        grid[layer, positions] = 1
    return grid


@torch.no_grad()
def influence(model, text: str) -> np.ndarray:
    """For each character of ``text``: how much the model's prediction of the next character
    changes when that character alone is replaced (the largest change of any probability; the
    replacement is the next character of the vocabulary). Past the context, the model reads only
    the last ``block_size`` characters, so earlier ones change nothing."""
    ids = TOKENIZER.encode(text)
    ctx = model.config.block_size
    read = ids[-ctx:]
    first = len(ids) - len(read)  # characters before this fell out of the context
    batch = torch.tensor([read] * (len(read) + 1))  # row 0 as it is, row j + 1 with character j replaced
    for j in range(len(read)):
        batch[j + 1, j] = (read[j] + 1) % TOKENIZER.vocab_size
    p = torch.softmax(model(batch).logits[:, -1], -1)  # (T + 1, V)
    change = (p[1:] - p[0]).abs().amax(-1).numpy()  # (T,)
    return np.concatenate([np.zeros(first), change])


FORGET_TOL = 1e-6  # a change below this is float rounding, not memory


@dataclass
class Forgetting:
    """What the next character can still depend on, by each layer's reach and measured."""
    text: str
    reach: np.ndarray  # (n_layer, len(text)): 1 where layer l at the last position reaches the character
    change: np.ndarray  # (len(text),): measured largest change of the next prediction
    out_of_context: int  # leading characters past the context

    @property
    def forgotten(self) -> np.ndarray:
        return self.change < FORGET_TOL

    def summary(self) -> dict:
        reached = self.reach[-1].astype(bool)
        inside = self.change[reached]
        return {"characters": len(self.text), "reached": int(reached.sum()), "forgotten": int(self.forgotten.sum()),
                "largest_change_outside": float(self.change[~reached].max(initial=0.0)),
                "smallest_change_inside": float(inside.min()) if inside.size else 0.0}


def forgetting(model, text: str) -> Forgetting:
    config = model.config
    read = min(len(text), config.block_size)
    first = len(text) - read
    grid = np.zeros((config.n_layer, len(text)), dtype=np.int8)
    grid[:, first:] = reach_grid(config, read - 1)
    return Forgetting(text, grid, influence(model, text), first)


def reach_words(settings: MemorySettings) -> str:
    """How far back the last token can reach, in words, from the registry entries."""
    config = settings.config()
    kind = ATTENTION[config.attention]
    if kind.reach is None:
        return (f"Full {kind.name} attention lets every token read every earlier one, so the model's memory is the context: "
                f"the last {config.block_size} characters")
    back = kind.reach(config)
    return (f"One layer of {kind.name} reads {back} characters back; {config.n_layer} layers stacked reach "
            f"{config.n_layer * back} back ({config.n_layer} × {back}), within the context of {config.block_size}")


def kind_names() -> list[str]:
    return [k for k in ATTENTION.names() if ATTENTION[k].cache is not None]


# ---------------------------------------------------------------------------------------------- measuring
CONTEXTS = (64, 128, 256, 512, 1024, 2048)  # the page's context lengths (up to the chosen longest)


@dataclass(frozen=True)
class MeasureSettings:
    """The page's measurement: writing speed and cache memory against the context, per kind."""
    kinds: tuple = ("softmax", "sliding_window", "linear")  # kinds measured, each cached and read again
    max_n: int = 1024  # the longest context measured
    new_tokens: int = 16  # tokens written per point
    repeats: int = 3  # timed runs per point, the fastest counts
    seed: int = 0

    def contexts(self) -> tuple:
        return tuple(n for n in CONTEXTS if n <= self.max_n)

    def points(self) -> list[tuple]:
        return [(k, n, c) for k in self.kinds for n in self.contexts() for c in (True, False)]

    def peak_bytes(self) -> float:
        """Reading a text of the longest context again: 4 heads' scores, weights and a copy, plus slack."""
        return 3 * 4 * 4 * self.max_n ** 2 + 64e6


class MeasureJob(Job):
    """Measure one point per slice (so Stop is taken between points and other students' work
    interleaves), publishing the rows so far."""

    def __init__(self, settings: MeasureSettings):
        self.settings = settings
        self.key = self.key_of(settings)
        self.title = "measuring generation"
        self.peak_bytes = settings.peak_bytes()
        self._todo = settings.points()
        self.rows: list[dict] = []
        self._models: dict = {}

    def _model(self, kind):
        if kind not in self._models:
            from .kvcache import MemorySettings as Bench
            from .model import build_model

            b = Bench()
            config = ModelConfig(vocab_size=b.vocab_size, block_size=max(self.settings.contexts()), n_layer=b.n_layer,
                                 n_embd=b.n_embd, n_head=b.n_head, attention=kind, window=b.window, encoding=b.encoding)
            self._models[kind] = build_model(config, self.settings.seed).eval()
        return self._models[kind]

    @staticmethod
    def key_of(settings: MeasureSettings) -> tuple:
        """The work a measurement does, as the scheduler shares it: its settings."""
        return ("memory-measure", settings)

    @torch.no_grad()
    def step(self, slice_s: float) -> bool:
        from .kvcache import measure_point

        kind, n, cached = self._todo[len(self.rows)]
        model = self._model(kind)
        g = torch.Generator().manual_seed(self.settings.seed + n)
        prompt = torch.randint(0, model.config.vocab_size, (1, n - self.settings.new_tokens), generator=g)
        self.rows = self.rows + [measure_point(model, prompt, self.settings.new_tokens, cached, self.settings.repeats)]
        return len(self.rows) == len(self._todo)

    def result(self) -> list[dict]:
        return self.rows

    def live(self) -> list[dict]:
        return self.rows

    def progress(self) -> tuple[float, str]:
        return len(self.rows) / len(self._todo), f"{len(self.rows)} of {len(self._todo)} points"

    def remaining_s(self):
        return None

    def close(self) -> None:
        self._models = {}


def measured_model_words(settings: MeasureSettings) -> str:
    """The model the measurement times, in words, from the settings it is built with."""
    from .kvcache import MemorySettings as Bench

    b = Bench()
    return (f"The model measured is untrained at the Lab's size ({b.n_layer} layers, width {b.n_embd}, {b.n_head} heads, "
            f"window {b.window}); {settings.new_tokens} characters are written per point and the fastest of "
            f"{settings.repeats} runs counts.")


def speedup_lines(rows: list[dict]) -> list[str]:
    """What came out, in sentences, from the measured rows."""
    by = {(r["kind"], r["context"], r["cached"]): r for r in rows}
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        ns = sorted(n for (k, n, c) in by if k == kind and c and (k, n, False) in by)
        if not ns:
            continue
        lo, hi = ns[0], ns[-1]
        s_lo = by[kind, lo, True]["tokens_per_s"] / by[kind, lo, False]["tokens_per_s"]
        s_hi = by[kind, hi, True]["tokens_per_s"] / by[kind, hi, False]["tokens_per_s"]
        m_lo, m_hi = by[kind, lo, True]["cache_bytes"], by[kind, hi, True]["cache_bytes"]
        grows = "grows with the text" if m_hi > 1.5 * m_lo else "stays the same size"
        out.append(f"**{kind}**: the cache makes writing {s_lo:.1f}× as fast at N = {lo:,} and {s_hi:.1f}× at "
                   f"N = {hi:,}; its memory {grows} ({m_lo / 1024:,.1f} KiB at {lo:,}, {m_hi / 1024:,.1f} KiB at {hi:,}).")
    return out
