"""Generation: greedy, temperature and top-k sampling, returning each token's probability.

``use_cache=False`` reads the last ``block_size`` tokens again for every new token;
``use_cache=True`` reads each token once through a key/value cache (``explorer.kvcache``): the same
tokens, and a ``ValueError`` saying why when a cache cannot compute what reading again does.
``slide=True`` writes past the context the way nanoGPT's ``sample.py`` does: each new token is
predicted from the last ``block_size`` tokens only (the window slides; positions restart at 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .kvcache import KVCache, check_fits
from .model import GPT
from .tasks import CharTokenizer


@dataclass
class Generation:
    text: str  # what it wrote
    probs: list[float]  # probability the model gave each written character
    ids: list[int]  # prompt + written token ids
    logits: list[torch.Tensor]  # (V,) each: the logits each written token was drawn from, on the CPU


def distribution(logits: torch.Tensor, temperature: float, top_k: Optional[int] = None) -> torch.Tensor:
    """The distribution ``generate`` draws each token from: ``softmax(logits / T)``, cut to the
    ``top_k`` most likely and renormalised; at ``temperature == 0`` (greedy) the model's own
    ``softmax(logits)``. ``(V,) -> (V,)``."""
    if temperature <= 0:
        return torch.softmax(logits.float(), -1)
    p = torch.softmax(logits.float() / temperature, -1)
    if top_k:
        kth = torch.topk(p, min(top_k, p.numel())).values[-1]
        p = torch.where(p < kth, torch.zeros_like(p), p)
        p = p / p.sum()
    return p


@torch.no_grad()
def generate(
    model: GPT,
    tokenizer: CharTokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    stop: str | None = None,
    use_cache: bool = False,
    slide: bool = False,
) -> Generation:
    """Continue ``prompt`` by up to ``max_new_tokens`` characters. ``temperature == 0`` is greedy.
    Raises ``UnknownCharacters`` for characters outside the vocabulary and ``ValueError`` when
    prompt and output would not fit the model's context (unless ``slide``: then the model reads
    only the last ``block_size`` tokens, as far as it writes), or (``use_cache``) when the model
    cannot be cached or a cache would read past the context what reading again would not."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty: type at least one character")
    context = model.config.block_size
    if len(ids) + max_new_tokens > context and not model.pos.extrapolates and not slide:
        raise ValueError(
            f"the input ({len(ids)} characters) and its answer ({max_new_tokens}) need {len(ids) + max_new_tokens} "
            f"positions, but this model's context is {context}: shorten the input to at most "
            f"{max(0, context - max_new_tokens)} characters"
        )
    if use_cache:
        check_fits(model.config, len(ids) + max_new_tokens - 1)  # the last token written is never read
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device  # the model's device; sampling draws on the CPU
    idx = torch.tensor([ids], device=device)
    cache = KVCache.for_model(model) if use_cache else None
    feed = idx  # what the cache has not read yet
    text, probs, read = [], [], []
    for _ in range(max_new_tokens):
        if cache is None:
            logits = model(idx[:, -context:]).logits[0, -1]
        else:
            logits = model(feed, cache=cache).logits[0, -1]
        logits = logits.float().cpu()
        read.append(logits)
        p = distribution(logits, temperature, top_k)
        if temperature > 0:
            nxt = int(torch.multinomial(p, 1, generator=gen))
        else:
            nxt = int(p.argmax())
        feed = torch.tensor([[nxt]], device=device)
        idx = torch.cat([idx, feed], dim=1)
        ch = tokenizer.chars[nxt]
        text.append(ch)
        probs.append(float(p[nxt]))
        if stop is not None and ch == stop:
            break
    return Generation("".join(text), probs, idx[0].tolist(), read)
