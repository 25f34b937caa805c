"""Multimodal fusion: a small captioner that reads an image as patches and writes words about it.

Two ways for the words to meet the image, chosen by name from ``FUSIONS``:

``cross`` (late fusion through cross-attention, the encoder-decoder of Vaswani et al. 2017 with a
ViT encoder, Dosovitskiy et al. 2021):

    p = patch_embed(patchify(image)) + pos2d              (B, N, C)   vis.embed
    for each encoder block j:                              (bidirectional over the patches)
        p = p + attn(ln(p)); p = p + mlp(ln(p))            enc.{j}.attn.pattern (B, nh, N, N)
    mem = ln_v(p)                                          vis.out
    x = wte(words) + pos(T)                                (B, T, C)
    for each decoder block i:
        x = x + self_attn(ln_1(x))    causal, the kind from explorer.attention     dec.{i}.attn.pattern
        x = x + cross_attn(ln_2(x), mem)  queries: words; keys, values: patches   dec.{i}.cross.pattern (B, nh, T, N)
        x = x + mlp(ln_3(x))
    logits = lm_head(ln_f(x))

``early`` (early fusion: one sequence, a prefix-LM mask as in UniLM, Dong et al. 2019, and T5's
prefix LM, Raffel et al. 2020):

    s = [patch_embed + pos2d + type_img ; wte(words) + pos(T) + type_txt]   (B, N + T, C)
    for each block i: s = s + attn(ln(s)) under the prefix-LM mask; s = s + mlp(ln(s))
                                                           blocks.{i}.attn.pattern (B, nh, N+T, N+T)
    logits = lm_head(ln_f(s[:, N:]))

The prefix-LM mask lets every patch see every patch, every word see every patch and the words up
to itself, and no patch see a word. Every map the page draws is a hook point's tensor: the weights
the forward pass multiplied the values by (``pattern @ v`` is the head's output ``z``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import scenes
from .blocks import DenseMLP
from .config import ModelConfig
from .encodings import ENCODINGS
from .model import NO_HOOKS, CausalSelfAttention, Hooks, ModelOutput, seeded
from .registry import Registry
from .tasks import IGNORE


# ---------------------------------------------------------------------------------------------- patches
def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, 3, H, W) -> (B, N, 3 * patch * patch): the image cut into patches, row-major, each
    flattened channel first (N = (H / patch) * (W / patch))."""
    B, ch, H, W = images.shape
    g, h = H // patch, W // patch
    x = images.reshape(B, ch, g, patch, h, patch).permute(0, 2, 4, 1, 3, 5)  # (B, g, h, ch, p, p)
    return x.reshape(B, g * h, ch * patch * patch)


def unpatchify(patches: Tensor, patch: int, H: int, W: int) -> Tensor:
    """The inverse of ``patchify``: (B, N, 3 * patch * patch) -> (B, 3, H, W)."""
    B, N, D = patches.shape
    g, h, ch = H // patch, W // patch, D // (patch * patch)
    x = patches.reshape(B, g, h, ch, patch, patch).permute(0, 3, 1, 4, 2, 5)  # (B, ch, g, p, h, p)
    return x.reshape(B, ch, H, W)


def sincos_2d(grid: int, width: int) -> Tensor:
    """Fixed 2-D sinusoidal positions (as in MAE, He et al. 2022): half the channels encode the
    patch's row, half its column, each with the sines and cosines of Vaswani et al. (grid², width)."""
    quarter = width // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    pos = torch.arange(grid, dtype=torch.float32)[:, None] * freq[None, :]  # (grid, width/4)
    one = torch.cat([pos.sin(), pos.cos()], dim=1)  # (grid, width/2)
    rows = one[:, None, :].expand(grid, grid, -1)
    cols = one[None, :, :].expand(grid, grid, -1)
    out = torch.cat([rows, cols], dim=-1).reshape(grid * grid, -1)
    return F.pad(out, (0, width - out.shape[1]))


POS2D = ("learned", "sinusoidal")  # the image's 2-D positional encodings


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class FusionConfig:
    fusion: str = "cross"  # how words meet the image, a name in FUSIONS
    patch: int = 8  # patch side in pixels; the image is (SIZE / patch)² patches
    pos2d: str = "learned"  # the patches' 2-D positions: learned table or fixed 2-D sines (POS2D)
    n_embd: int = 64  # width of every token, patch or word
    n_head: int = 4  # heads of every attention
    enc_layers: int = 1  # cross: encoder blocks over the patches; early: extra blocks (enc + dec in all)
    dec_layers: int = 2  # cross: decoder blocks (self-attention, cross-attention, MLP)
    attention: str = "softmax"  # cross: the words' causal self-attention, a kind in explorer.attention

    @property
    def n_patches(self) -> int:
        return (scenes.SIZE // self.patch) ** 2

    @property
    def grid(self) -> int:
        return scenes.SIZE // self.patch

    def text_config(self) -> ModelConfig:
        """The words' side as the decoder-only model's config: its attention kinds and encodings apply."""
        return ModelConfig(vocab_size=len(scenes.VOCAB), block_size=scenes.CAPTION_TOKENS,
                           n_layer=self.enc_layers + self.dec_layers, n_embd=self.n_embd, n_head=self.n_head,
                           attention=self.attention, encoding="learned")

    def problem(self) -> Optional[str]:
        """Why this config cannot be built, in words (None when it can)."""
        if self.fusion not in FUSIONS:
            return f"fusion {self.fusion!r}: choose one of {', '.join(FUSIONS.names())}"
        if self.pos2d not in POS2D:
            return f"2-D positions {self.pos2d!r}: choose one of {', '.join(POS2D)}"
        if self.patch not in PATCHES:
            return f"patch {self.patch}: the {scenes.SIZE}-pixel image splits into whole patches of {', '.join(map(str, PATCHES))}"
        try:
            self.text_config()
        except ValueError as e:
            return str(e)
        return None


PATCHES = tuple(p for p in (4, 6, 8, 12, 16) if scenes.SIZE % p == 0)


# ---------------------------------------------------------------------------------------------- attention
class MaskedAttention(nn.Module):
    """Multi-head softmax attention with queries from ``x`` and keys and values from ``mem`` (the
    same tensor for self-attention), under an optional boolean mask (True: may attend). The
    weights are formed explicitly, so the map a hook records is the one the output was made with."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(n_embd, n_embd)
        self.kv = nn.Linear(n_embd, 2 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: Tensor, mem: Tensor, mask: Optional[Tensor] = None, hook=NO_HOOKS, name: str = "") -> Tensor:
        B, T, C = x.shape
        N, nh, hs = mem.shape[1], self.n_head, C // self.n_head
        q = hook(f"{name}.q", self.q(x).view(B, T, nh, hs).transpose(1, 2))  # (B, nh, T, hs)
        k, v = (t.view(B, N, nh, hs).transpose(1, 2) for t in self.kv(mem).split(C, dim=2))  # (B, nh, N, hs)
        k, v = hook(f"{name}.k", k), hook(f"{name}.v", v)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, N)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = hook(f"{name}.pattern", torch.softmax(scores, dim=-1))  # (B, nh, T, N)
        z = hook(f"{name}.z", weights @ v)  # (B, nh, T, hs)
        return self.proj(z.transpose(1, 2).reshape(B, T, C))


ATTN_HOOKS = ("q", "k", "v", "pattern", "z")  # every attention's hook points, under its name


def prefix_lm_mask(n_prefix: int, T: int) -> Tensor:
    """(N + T, N + T) bool: every token sees the whole prefix (the patches); a word also sees the
    words up to itself; a patch sees no word."""
    S = n_prefix + T
    i = torch.arange(S)
    return (i[None, :] < n_prefix) | ((i[:, None] >= n_prefix) & (i[None, :] <= i[:, None]))


class EncoderBlock(nn.Module):
    """Pre-LN block with attention under a fixed mask (none: bidirectional)."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        C = config.n_embd
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.attn = MaskedAttention(C, config.n_head)
        self.mlp = DenseMLP(C, 4 * C)

    def forward(self, x: Tensor, mask: Optional[Tensor], hook, name: str) -> Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, mask, hook, f"{name}.attn")
        return x + self.mlp(self.ln_2(x), hook, name)[0]


class DecoderBlock(nn.Module):
    """Pre-LN: causal self-attention over the words (the registry's kind), cross-attention to the
    patches, MLP."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        C = config.n_embd
        self.ln_1, self.ln_2, self.ln_3 = nn.LayerNorm(C), nn.LayerNorm(C), nn.LayerNorm(C)
        self.attn = CausalSelfAttention(config.text_config())
        self.cross = MaskedAttention(C, config.n_head)
        self.mlp = DenseMLP(C, 4 * C)

    def forward(self, x: Tensor, mem: Tensor, pos, hook, name: str) -> Tensor:
        x = x + self.attn(self.ln_1(x), pos, hook, f"{name}.attn")
        x = x + self.cross(self.ln_2(x), mem, None, hook, f"{name}.cross")
        return x + self.mlp(self.ln_3(x), hook, name)[0]


# ---------------------------------------------------------------------------------------------- models
class Captioner(nn.Module):
    """What both fusion modes share: patch and word embeddings, positions, the output head, the
    loss, hooks and greedy decoding. ``forward((images, words), targets)`` as the trainer calls it."""

    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        C = config.n_embd
        self.patch_embed = nn.Linear(3 * config.patch ** 2, C)
        if config.pos2d == "learned":
            self.pos2d = nn.Parameter(torch.zeros(config.n_patches, C))
        else:
            self.register_buffer("pos2d", sincos_2d(config.grid, C), persistent=False)
        text = config.text_config()
        self.wte = nn.Embedding(text.vocab_size, C)
        self.pos = ENCODINGS[text.encoding](text)
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, text.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if isinstance(self.pos2d, nn.Parameter):
            nn.init.normal_(self.pos2d, std=0.02)

    def hook_names(self) -> list[str]:
        raise NotImplementedError

    def embed_patches(self, images: Tensor, hook) -> Tensor:
        return hook("vis.embed", self.patch_embed(patchify(images, self.config.patch)) + self.pos2d)  # (B, N, C)

    def embed_words(self, words: Tensor, hook) -> Tensor:
        T = words.shape[1]
        return hook("embed", self.wte(words) + self.pos.embed(T, words.device))  # (B, T, C)

    def forward(self, x: tuple[Tensor, Tensor], targets: Optional[Tensor] = None,
                capture: Iterable[str] | bool | None = None,
                edit: Optional[dict[str, Callable[[Tensor], Tensor]]] = None) -> ModelOutput:
        images, words = x
        hook = Hooks(self.hook_names(), capture, edit) if (capture or edit) else NO_HOOKS
        logits = hook("logits", self.lm_head(self.ln_f(self.words_out(images, words, hook))))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE)
        return ModelOutput(logits, loss, dict(hook.trace), logits.new_zeros(()), 0.0)

    def words_out(self, images: Tensor, words: Tensor, hook) -> Tensor:
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def caption(self, images: Tensor) -> list[list[str]]:
        """Greedy captions for a batch of images: words until <eos> (or the longest caption)."""
        self.eval()
        B = images.shape[0]
        words = torch.full((B, 1), scenes.BOS, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        for _ in range(scenes.CAPTION_TOKENS - 1):
            nxt = self((images, words)).logits[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, scenes.PAD), nxt)
            words = torch.cat([words, nxt[:, None]], dim=1)
            done |= nxt == scenes.EOS
            if bool(done.all()):
                break
        return [scenes.decode(row.tolist()) for row in words]

    def word_maps(self, images: Tensor, words: Tensor) -> Tensor:
        """(layers, B, nh, T, N): the weights each word's query put on each patch, per layer and
        head (cross: the cross-attention; early: the word rows' patch columns of the self-attention,
        which need not sum to 1 over the patches, the rest going to earlier words)."""
        raise NotImplementedError


class CrossCaptioner(Captioner):
    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.enc = nn.ModuleList([EncoderBlock(config) for _ in range(config.enc_layers)])
        self.ln_v = nn.LayerNorm(config.n_embd)
        self.dec = nn.ModuleList([DecoderBlock(config) for _ in range(config.dec_layers)])
        self._init()

    def hook_names(self) -> list[str]:
        c = self.config
        return (["vis.embed"] + [f"enc.{j}.attn.{h}" for j in range(c.enc_layers) for h in ATTN_HOOKS]
                + ["vis.out", "embed"]
                + [f"dec.{i}.{part}.{h}" for i in range(c.dec_layers) for part in ("attn", "cross") for h in ATTN_HOOKS]
                + ["logits"])

    def encode(self, images: Tensor, hook=NO_HOOKS) -> Tensor:
        p = self.embed_patches(images, hook)
        for j, block in enumerate(self.enc):
            p = block(p, None, hook, f"enc.{j}")
        return hook("vis.out", self.ln_v(p))  # (B, N, C)

    def words_out(self, images: Tensor, words: Tensor, hook) -> Tensor:
        mem = self.encode(images, hook)
        x = self.embed_words(words, hook)
        for i, block in enumerate(self.dec):
            x = block(x, mem, self.pos, hook, f"dec.{i}")
        return x

    @torch.no_grad()
    def word_maps(self, images: Tensor, words: Tensor) -> Tensor:
        self.eval()
        trace = self((images, words), capture=["dec.*.cross.pattern"]).trace
        return torch.stack([trace[f"dec.{i}.cross.pattern"] for i in range(self.config.dec_layers)])


class EarlyCaptioner(Captioner):
    def __init__(self, config: FusionConfig):
        super().__init__(config)
        self.type_embed = nn.Parameter(torch.zeros(2, config.n_embd))  # 0: patch, 1: word
        self.blocks = nn.ModuleList([EncoderBlock(config) for _ in range(config.enc_layers + config.dec_layers)])
        self._init()

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def hook_names(self) -> list[str]:
        return (["vis.embed", "embed"] + [f"blocks.{i}.attn.{h}" for i in range(self.n_layers) for h in ATTN_HOOKS]
                + ["logits"])

    def words_out(self, images: Tensor, words: Tensor, hook) -> Tensor:
        p = self.embed_patches(images, hook) + self.type_embed[0]
        x = self.embed_words(words, hook) + self.type_embed[1]
        N, T = p.shape[1], x.shape[1]
        s = torch.cat([p, x], dim=1)  # (B, N + T, C)
        mask = prefix_lm_mask(N, T).to(s.device)
        for i, block in enumerate(self.blocks):
            s = block(s, mask, hook, f"blocks.{i}")
        return s[:, N:]

    @torch.no_grad()
    def word_maps(self, images: Tensor, words: Tensor) -> Tensor:
        self.eval()
        N = self.config.n_patches
        trace = self((images, words), capture=["blocks.*.attn.pattern"]).trace
        return torch.stack([trace[f"blocks.{i}.attn.pattern"][:, :, N:, :N] for i in range(self.n_layers)])


@dataclass(frozen=True)
class Fusion:
    name: str
    title: str
    summary: str  # one line for the page: how the words meet the image
    paper: str
    make: Callable[[FusionConfig], Captioner]
    maps_sum_to_one: bool  # a word's weights over the patches sum to 1 (else the rest is on earlier words)


FUSIONS: Registry[Fusion] = Registry("fusion")
FUSIONS.add("cross", Fusion(
    "cross", "Cross-attention (late fusion)",
    "A vision encoder turns the patches into a memory; every decoder block lets the words query it through "
    "cross-attention (queries from the words, keys and values from the patches).",
    "Vaswani et al. 2017 (encoder-decoder); Dosovitskiy et al. 2021 (ViT)", CrossCaptioner, True))
FUSIONS.add("early", Fusion(
    "early", "One sequence (early fusion)",
    "Patches and words form one sequence through the same self-attention blocks; a prefix-LM mask lets the "
    "patches see each other, and each word see every patch and the words up to itself.",
    "Dong et al. 2019 (UniLM); Raffel et al. 2020 (T5, prefix LM)", EarlyCaptioner, False))


def build(config: FusionConfig, seed: int = 0) -> Captioner:
    """A freshly initialised captioner; the same seed gives the same weights."""
    with seeded(seed):
        return FUSIONS[config.fusion].make(config)
