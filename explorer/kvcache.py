"""Memory for generation: a key/value cache, one ``LayerCache`` per layer.

Without a cache every new token reads the whole text again: ``T`` tokens through every layer for
each token written. With one, each layer keeps what later tokens need of the past (the keys and
values of earlier positions, Pope et al. 2022, "Efficiently Scaling Transformer Inference") and a
new token is read alone. What a layer keeps is its attention kind's business (its entry's
``cache``): every key and value for full attention; the last ``w`` for a sliding window, a rolling
cache whose memory is bounded by ``w`` (Jiang et al. 2023, Mistral 7B); for linear attention a
running state ``S = sum phi(k) v^T``, ``z = sum phi(k)`` of constant size, the kind read as an RNN
(Katharopoulos et al. 2020, "Transformers are RNNs"); one summary per finished block for the
hierarchical kind. Stacked windows reach further than one: through ``L`` layers of width ``w``
information travels ``L (w - 1)`` positions (Beltagy et al. 2020, Longformer): ``reachable``.

What the cached path computes, against ``generate(use_cache=False)``, which reads the last
``block_size`` tokens again for every token (renumbering positions from 0 once the text is
longer than the context):

- while every position read fits the context (``< block_size``) both compute the same outputs
  (up to float rounding), for every kind with a cache and every encoding;
- past the context they agree only where renumbering changes nothing: a window kind, an encoding
  that sees only offsets (none, RoPE, ALiBi), and a receptive field ``L (w - 1) + 1`` that fits the
  context; then the rolling cache goes on for ever. Otherwise the cached path refuses, saying why
  (``check_fits``): a full cache would remember tokens the uncached path has forgotten.

Memory is read from the tensors a cache holds (``nbytes``), never from a formula.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .attention import ATTENTION, LayerCache
from .blocks import FEEDFORWARD
from .encodings import ENCODINGS


@dataclass
class LayerContents:
    """What one layer's cache holds, for the Memory page."""
    layer: int
    label: str  # what it keeps, in words
    nbytes: int  # bytes of its tensors (keys and values, or the state)
    positions: list[int]  # absolute positions held token by token
    folded: list[int]  # absolute positions summarised into a state or block summaries


@dataclass
class KVCache:
    """Every layer's cache, and how many tokens have been read (the next token's position)."""
    layers: list[LayerCache]
    length: int = 0

    @classmethod
    def for_model(cls, model) -> "KVCache":
        """An empty cache for ``model``; ``ValueError`` with the reason when it cannot have one."""
        problem = cache_problem(model.config)
        if problem:
            raise ValueError(problem)
        return cls([block.attn.kind.new_cache(model.config) for block in model.blocks])

    def memory(self) -> list[int]:
        """Bytes per layer (keys and values, or the state), read from the tensors held."""
        return [layer.nbytes for layer in self.layers]

    @property
    def nbytes(self) -> int:
        return sum(self.memory())

    def contents(self) -> list[LayerContents]:
        return [LayerContents(i, layer.label, layer.nbytes, layer.positions(), layer.folded())
                for i, layer in enumerate(self.layers)]


def cache_problem(config) -> Optional[str]:
    """Why a model of ``config`` cannot generate with a cache, or None."""
    kind = ATTENTION[config.attention]
    if kind.cache is None:
        return f"{kind.name} attention has no key/value cache: {kind.cache_reason}"
    ffn = FEEDFORWARD[config.ffn]
    if ffn.cache_reason:
        return f"{ffn.title}: {ffn.cache_reason}"
    if config.funnel:
        return ("a funnel pools pairs of tokens between blocks, so a later block reads merged tokens that a "
                "cache of single tokens does not hold: no key/value cache")
    return None


def cached_length(config) -> Optional[int]:
    """How many positions the cached path may read and still compute what the uncached path does
    (which reads the last ``block_size`` tokens); None: any number."""
    kind = ATTENTION[config.attention]
    if kind.reach is not None and ENCODINGS[config.encoding].offsets_only \
            and config.n_layer * kind.reach(config) + 1 <= config.block_size:
        return None
    return config.block_size


def past_context_reason(config) -> str:
    """Why the cached path stops at the context, in words for the page ("" when it does not)."""
    if cached_length(config) is None:
        return ""
    kind, enc = ATTENTION[config.attention], ENCODINGS[config.encoding]
    if kind.reach is None:
        why = (f"{kind.name} attention remembers every earlier token, but past the context the uncached model "
               f"reads only the last {config.block_size}")
    elif not enc.offsets_only:
        why = f"the {enc.name} encoding adds a row per absolute position, and past the context positions are renumbered"
    else:
        why = (f"{config.n_layer} layers of windows reach {config.n_layer * kind.reach(config)} positions back, "
               f"more than the context of {config.block_size} holds")
    return f"{why}: a cache agrees with reading the text again only within the context ({config.block_size} positions)"


def check_fits(config, n_positions: int) -> None:
    """``ValueError`` when generating must read ``n_positions`` and a cache cannot do so exactly."""
    problem = cache_problem(config)
    if problem:
        raise ValueError(problem)
    limit = cached_length(config)
    if limit is not None and n_positions > limit:
        raise ValueError(f"this needs {n_positions} positions; {past_context_reason(config)}. Write fewer tokens "
                         f"or generate without the cache")


def cache_label(config) -> str:
    """What each layer keeps with this config, or why there is no cache."""
    problem = cache_problem(config)
    if problem:
        return problem
    return ATTENTION[config.attention].new_cache(config).label


def reachable(config, t: int) -> list[list[int]]:
    """For each layer ``1 .. n_layer``, the positions ``j <= t`` whose token can change that
    layer's output at ``t``: layer 1 sees its pattern's row, layer ``L`` the union of what layer
    ``L - 1`` reached from each position layer 1 sees (the residual stream keeps a token's own
    past). For a window of ``w``: ``max(0, t - L (w - 1)) .. t``."""
    if config.funnel:
        raise ValueError("a funnel pools pairs of tokens between blocks: reachability is for flat models")
    P = ATTENTION[config.attention].pattern(t + 1, config).float()  # (T, T) may i see j
    row = torch.zeros(t + 1)
    row[t] = 1.0
    out = []
    for _ in range(config.n_layer):
        row = ((row @ P) > 0).float()  # (T,) positions reached one layer further
        out.append(torch.nonzero(row).flatten().tolist())
    return out


# ---------------------------------------------------------------------------------------------- measured
@dataclass(frozen=True)
class MemorySettings:
    """``python -m explorer.bench memory``: generation speed and cache memory against context length."""
    contexts: tuple = (64, 128, 256, 512, 1024)  # tokens in the text when the new tokens are written
    new_tokens: int = 32  # tokens written per measurement
    kinds: tuple = ("softmax", "sliding_window", "linear")  # attention kinds measured, cached and recomputed
    encoding: str = "learned"  # the Lab's default
    n_layer: int = 2  # the Lab's default size
    n_embd: int = 64
    n_head: int = 4
    window: int = 8
    vocab_size: int = 32
    repeats: int = 5  # timed runs per point (the fastest counts: the machine is shared)
    seed: int = 0  # the untrained model's weights and the prompt


def _decode(model, prompt, n: int, use_cache: bool) -> tuple[float, float, list[int]]:
    """Write ``n`` tokens greedily after ``prompt`` (1, T): seconds to the first token (reading the
    prompt), seconds for the other ``n - 1``, and the cache's bytes per layer at the end ([] without)."""
    ctx = model.config.block_size
    t0 = time.perf_counter()
    cache = KVCache.for_model(model) if use_cache else None
    idx, feed, first = prompt, prompt, 0.0
    for s in range(n):
        logits = model(feed, cache=cache).logits if use_cache else model(idx[:, -ctx:]).logits
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], 1)
        feed = nxt
        if s == 0:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0 - first, [] if cache is None else cache.memory()


@torch.no_grad()
def measure_point(model, prompt, new_tokens: int, use_cache: bool, repeats: int) -> dict:
    """One point: write ``new_tokens`` after ``prompt`` (1, T) ``repeats`` times, cached or
    recomputed; the fastest run counts (the machine is shared)."""
    runs = [_decode(model, prompt, new_tokens, use_cache) for _ in range(repeats)]
    first, rest = min(r[0] for r in runs), min(r[1] for r in runs)
    return {"kind": model.config.attention, "context": prompt.shape[1] + new_tokens, "cached": use_cache,
            "first_token_ms": round(first * 1e3, 2), "tokens_per_s": round((new_tokens - 1) / rest, 1),
            "cache_bytes_per_layer": runs[0][2], "cache_bytes": sum(runs[0][2]),
            "cache_label": cache_label(model.config) if use_cache else ""}


@torch.no_grad()
def measure(settings: MemorySettings, progress: Optional[Callable[[str], None]] = None) -> dict:
    """For each kind, cached and recomputed, at each context: the first token's latency, tokens per
    second after it, and the cache's bytes per layer once the text is ``N`` tokens long (the last
    one written, ``N - 1`` read)."""
    from .config import ModelConfig
    from .model import build_model

    rows = []
    for kind in settings.kinds:
        config = ModelConfig(vocab_size=settings.vocab_size, block_size=max(settings.contexts), n_layer=settings.n_layer,
                             n_embd=settings.n_embd, n_head=settings.n_head, attention=kind, window=settings.window,
                             encoding=settings.encoding)
        model = build_model(config, settings.seed).eval()
        g = torch.Generator().manual_seed(settings.seed)
        for n in settings.contexts:
            prompt = torch.randint(0, settings.vocab_size, (1, n - settings.new_tokens), generator=g)
            for use_cache in (True, False):
                rows.append(measure_point(model, prompt, settings.new_tokens, use_cache, settings.repeats))
                if progress:
                    progress(f"{kind} at {n}, {'cached' if use_cache else 'recomputed'}: "
                             f"{rows[-1]['tokens_per_s']} tokens/s")
    return {"settings": dict(settings.__dict__), "results": rows}


def speedups(result: dict) -> list[dict]:
    """Cached over recomputed tokens per second (after the first token), per kind and context."""
    by = {(r["kind"], r["context"], r["cached"]): r for r in result["results"]}
    return [{"kind": k, "context": n, "speedup": round(by[k, n, True]["tokens_per_s"] / by[k, n, False]["tokens_per_s"], 2),
             "cache_bytes": by[k, n, True]["cache_bytes"]}
            for (k, n, cached) in by if cached]
