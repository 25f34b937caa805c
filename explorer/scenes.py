"""A generated image world for the captioning lab: small RGB scenes of coloured shapes, each with a
caption generated from the scene. Nothing is downloaded.

The world: a SIZE x SIZE image (48 px) split into a GRID x GRID grid of 16 px cells. A scene holds
1..MAX_THINGS things, each a coloured shape (circle, square or triangle in red, green, blue or
yellow) in its own cell. Things are kept in canonical order, left to right and top to bottom within
a column, and the caption names them in that order, joined by the relation between neighbours:

    a red circle left of a blue square above a green triangle

"left of": the next thing is in a column further right; "above": it is in the same column, lower
down. A caption is true of a scene (``is_true``) if it names the scene's things in canonical order
and each relation holds, so a scene has exactly one true caption, its own: exact match is a fair
score.

Splits (``SPLITS``), for testing compositional generalisation:
- ``train``:    colour-shape combinations in HELD_OUT never appear;
- ``held_out``: the same distribution as ``train``, from a separate seed stream. The world is small
  (``count_scenes("train")`` = 64,233 distinct scenes), so many held-out scenes also occur in
  training: it measures fitting the distribution, not novelty;
- ``hard``:     every scene contains at least one HELD_OUT combination (a red triangle, a green
  circle or a blue square), never seen in training (``count_scenes("hard")`` = 86,211).

Everything is deterministic given seeds (``random.Random`` seeded with strings, not ``hash()``).
``image_from_upload`` turns an uploaded PNG/JPEG into a SIZE x SIZE image, refusing anything else.
"""
from __future__ import annotations

import base64
import binascii
import io
import random
import warnings
from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

SIZE = 48  # image side in pixels
GRID = 3  # GRID x GRID cells
CELL = SIZE // GRID  # 16 px
SHAPES = ("circle", "square", "triangle")
COLOURS = {  # RGB
    "red": (230, 60, 50), "green": (60, 180, 75), "blue": (50, 100, 230), "yellow": (240, 210, 50),
}
HELD_OUT = (("red", "triangle"), ("green", "circle"), ("blue", "square"))  # never in training
MAX_THINGS = 3
BACKGROUND = (20, 20, 28)
SPLITS = ("train", "held_out", "hard")


@dataclass(frozen=True)
class Thing:
    shape: str  # in SHAPES
    colour: str  # in COLOURS
    row: int  # 0..GRID-1, top to bottom
    col: int  # 0..GRID-1, left to right


def _order(t: Thing) -> tuple[int, int]:
    return (t.col, t.row)  # canonical: left to right, then top to bottom


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]  # 1..MAX_THINGS things in distinct cells, canonical order

    def problem(self) -> str | None:
        """None if the scene is valid, else a short message saying what is wrong."""
        if not 1 <= len(self.things) <= MAX_THINGS:
            return f"a scene holds 1 to {MAX_THINGS} things, not {len(self.things)}"
        for t in self.things:
            if t.shape not in SHAPES:
                return f"unknown shape {t.shape!r} (shapes: {', '.join(SHAPES)})"
            if t.colour not in COLOURS:
                return f"unknown colour {t.colour!r} (colours: {', '.join(COLOURS)})"
            if not (0 <= t.row < GRID and 0 <= t.col < GRID):
                return f"cell (row {t.row}, column {t.col}) is outside the {GRID}x{GRID} grid"
        cells = [(t.row, t.col) for t in self.things]
        if len(set(cells)) < len(cells):
            return "two things are in the same cell"
        if list(self.things) != sorted(self.things, key=_order):
            return "things are not in canonical order (build scenes with make_scene)"
        return None


def make_scene(things: Iterable[Thing]) -> Scene:
    """A scene with ``things`` in canonical order (check ``.problem()`` for validity)."""
    return Scene(tuple(sorted(things, key=_order)))


def _check(scene: Scene) -> None:
    if (p := scene.problem()) is not None:
        raise ValueError(f"invalid scene: {p}")


# --------------------------------------------------------------------------------------- language
VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "a", "left", "of", "above", *COLOURS, *SHAPES)
PAD, BOS, EOS = 0, 1, 2
MAX_CAPTION = 3 * MAX_THINGS + 2 * (MAX_THINGS - 1)  # 13 words
CAPTION_TOKENS = MAX_CAPTION + 2  # BOS ... EOS
_INDEX = {w: i for i, w in enumerate(VOCAB)}
RELATIONS = {"left of": ("left", "of"), "above": ("above",)}


def _relation(a: Thing, b: Thing) -> str:
    """The relation the caption states from ``a`` to the next thing ``b`` (canonical order)."""
    return "left of" if b.col > a.col else "above"


def _holds(relation: str, a: Thing, b: Thing) -> bool:
    if relation == "left of":
        return a.col < b.col
    return a.col == b.col and a.row < b.row  # "above": directly above, same column


def caption(scene: Scene) -> list[str]:
    _check(scene)
    words: list[str] = []
    for i, t in enumerate(scene.things):
        if i:
            words += RELATIONS[_relation(scene.things[i - 1], t)]
        words += ["a", t.colour, t.shape]
    return words


def parse(words: list[str]) -> tuple[list[tuple[str, str]], list[str]] | None:
    """((colour, shape) of each thing, relations between neighbours), or None if ``words`` is not a
    sentence of the grammar: NP (REL NP){0,2}, NP = a COLOUR SHAPE, REL = left of | above."""
    things: list[tuple[str, str]] = []
    relations: list[str] = []
    i = 0
    while True:
        np_ = words[i:i + 3]
        if len(np_) < 3 or np_[0] != "a" or np_[1] not in COLOURS or np_[2] not in SHAPES:
            return None
        things.append((np_[1], np_[2]))
        i += 3
        if i == len(words):
            return (things, relations) if len(things) <= MAX_THINGS else None
        for name, rel in RELATIONS.items():
            if tuple(words[i:i + len(rel)]) == rel:
                relations.append(name)
                i += len(rel)
                break
        else:
            return None


def is_true(words: list[str], scene: Scene) -> bool:
    parsed = parse(list(words))
    if parsed is None or scene.problem() is not None:
        return False
    things, relations = parsed
    if things != [(t.colour, t.shape) for t in scene.things]:
        return False
    pairs = zip(scene.things, scene.things[1:])
    return all(_holds(r, a, b) for r, (a, b) in zip(relations, pairs))


def encode(words: list[str]) -> list[int]:
    unknown = list(dict.fromkeys(w for w in words if w not in _INDEX))
    if unknown:
        raise ValueError(f"unknown words {', '.join(map(repr, unknown))}: the vocabulary is {VOCAB}")
    return [_INDEX[w] for w in words]


def decode(ids: Iterable[int]) -> list[str]:
    """Words up to the first EOS, skipping PAD and BOS."""
    words = []
    for i in map(int, ids):
        if i == EOS:
            break
        if i not in (PAD, BOS):
            words.append(VOCAB[i])
    return words


# ---------------------------------------------------------------------------------------- drawing
@lru_cache(maxsize=None)
def _mask(shape: str, half: int, dx: int, dy: int) -> np.ndarray:
    """(CELL, CELL) bool: the shape centred in its cell, shifted by (dx, dy), radius/half-side half."""
    y, x = np.meshgrid(np.arange(CELL) + 0.5, np.arange(CELL) + 0.5, indexing="ij")  # pixel centres
    y, x = y - (CELL / 2 + dy), x - (CELL / 2 + dx)  # relative to the shape's centre
    if shape == "circle":
        m = x * x + y * y <= half * half
    elif shape == "square":
        m = (abs(x) <= half) & (abs(y) <= half)
    else:  # upward triangle: apex at the top, base of width 2 * half at the bottom
        m = (y <= half) & (abs(x) <= (y + half) / 2)
    m.setflags(write=False)
    return m


def render(scene: Scene, seed: int = 0) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8: each thing in its cell, with a seeded jitter (+-2 px) and size (5-6 px)."""
    _check(scene)
    rng = random.Random(seed)
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    for t in scene.things:
        dx, dy, half = rng.randint(-2, 2), rng.randint(-2, 2), rng.randint(5, 6)
        cell = image[t.row * CELL:(t.row + 1) * CELL, t.col * CELL:(t.col + 1) * CELL]  # view
        cell[_mask(t.shape, half, dx, dy)] = COLOURS[t.colour]
    return image


def patches_of(thing: Thing, patch: int) -> list[int]:
    """Row-major indices in the (SIZE // patch)^2 patch grid of the patches the thing's cell covers."""
    if SIZE % patch:
        raise ValueError(f"patch size {patch} does not divide the image side {SIZE}")
    n = SIZE // patch
    rows = range(thing.row * CELL // patch, ((thing.row + 1) * CELL - 1) // patch + 1)
    cols = range(thing.col * CELL // patch, ((thing.col + 1) * CELL - 1) // patch + 1)
    return [r * n + c for r in rows for c in cols]


# --------------------------------------------------------------------------------------- sampling
_ALL = [(c, s) for c in COLOURS for s in SHAPES]
_ALLOWED = [cs for cs in _ALL if cs not in HELD_OUT]


def in_split(scene: Scene, split: str) -> bool:
    """Whether ``scene`` can be drawn in ``split``."""
    held = any((t.colour, t.shape) in HELD_OUT for t in scene.things)
    return scene.problem() is None and (held if split == "hard" else not held)


def sample_scene(rng: random.Random, split: str) -> Scene:
    """1..MAX_THINGS things (uniform), distinct cells, colour-shape uniform among the split's."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {SPLITS}")
    k = rng.randint(1, MAX_THINGS)
    cells = rng.sample(range(GRID * GRID), k)
    while True:
        combos = [rng.choice(_ALLOWED if split != "hard" else _ALL) for _ in cells]
        if split != "hard" or any(cs in HELD_OUT for cs in combos):  # hard: redraw without one
            break
    return make_scene(Thing(s, c, cell // GRID, cell % GRID) for (c, s), cell in zip(combos, cells))


def _rng(split: str, seed: int) -> random.Random:
    return random.Random(f"{split}:{seed}")  # str seeds are hashed with sha512: same everywhere


def batch_scenes(split: str, n: int, seed: int) -> list[Scene]:
    rng = _rng(split, seed)
    return [sample_scene(rng, split) for _ in range(n)]


def count_scenes(split: str = "train") -> int:
    """The number of distinct scenes ``split`` can draw."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {SPLITS}")
    a, b = len(_ALLOWED), len(_ALL)
    per_cells = (lambda k: b**k - a**k) if split == "hard" else (lambda k: a**k)
    return sum(comb(GRID * GRID, k) * per_cells(k) for k in range(1, MAX_THINGS + 1))


# ---------------------------------------------------------------------------------------- tensors
def to_tensor(images: list[np.ndarray]) -> Tensor:
    """(B, 3, SIZE, SIZE) float in [0, 1] from B (SIZE, SIZE, 3) uint8 images."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)


def caption_tensor(captions: list[list[str]]) -> Tensor:
    """(B, CAPTION_TOKENS) long: BOS, the words' ids, EOS, then PAD."""
    out = torch.full((len(captions), CAPTION_TOKENS), PAD, dtype=torch.long)
    for i, words in enumerate(captions):
        if len(words) > MAX_CAPTION:
            raise ValueError(f"caption of {len(words)} words is longer than {MAX_CAPTION}")
        out[i, :len(words) + 2] = torch.tensor([BOS, *encode(words), EOS])
    return out


def batch(split: str, n: int, seed: int) -> tuple[Tensor, Tensor, list[Scene]]:
    """images (n, 3, SIZE, SIZE), captions (n, CAPTION_TOKENS), and the scenes (= batch_scenes)."""
    rng = _rng(split, seed)
    scenes = [sample_scene(rng, split) for _ in range(n)]
    images = [render(s, rng.getrandbits(32)) for s in scenes]  # render seeds from the same stream
    return to_tensor(images), caption_tensor([caption(s) for s in scenes]), scenes


# ---------------------------------------------------------------------------------------- uploads
class UploadRefused(ValueError):
    """An uploaded file that is not a usable image; the message is one sentence for the user."""


_OTHER_FORMATS = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}  # magic bytes


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}".removesuffix(".0") + " MB"


def image_from_upload(
    data: bytes, max_bytes: int = 5_000_000, max_pixels: int = 25_000_000
) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 from a PNG or JPEG upload, decoded by Pillow (centre-cropped, resized);
    raises UploadRefused with a one-sentence reason otherwise."""
    if not data:
        raise UploadRefused("The file is empty.")
    if len(data) > max_bytes:
        raise UploadRefused(f"The file is {_mb(len(data))}; the limit is {_mb(max_bytes)}.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=("PNG", "JPEG"))  # only these decoders
        except UnidentifiedImageError:
            other = next((f for m, f in _OTHER_FORMATS.items() if data.startswith(m)), None)
            what = f"{other} images are not accepted" if other else "The file is not a readable image"
            raise UploadRefused(f"{what}; please upload a PNG or JPEG.") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadRefused(f"The image has too many pixels; the limit is {max_pixels:,}.") from None
        except (OSError, SyntaxError, ValueError):
            raise UploadRefused("The image file is corrupt and cannot be read.") from None
        if getattr(img, "n_frames", 1) > 1 or getattr(img, "is_animated", False):
            raise UploadRefused("Animated images are not accepted; please upload a single still image.")
        w, h = img.size
        if w * h > max_pixels:
            raise UploadRefused(f"The image is {w}x{h} pixels; the limit is {max_pixels:,} pixels.")
        if w == 0 or h == 0:
            raise UploadRefused("The image has no pixels.")
        img.draft("RGB", (SIZE, SIZE))  # JPEG only: decode at a reduced scale
        try:
            img.load()
            img = ImageOps.exif_transpose(img)  # photos taken on their side
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning):
            raise UploadRefused("The image file is truncated or corrupt and cannot be read.") from None
    return _to_rgb_square(img)


def image_from_data_url(url: str, max_bytes: int = 5_000_000) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 from a ``data:image/png;base64,...`` URL (a drawing from the page's
    canvas), checked like an upload; raises UploadRefused otherwise."""
    head, _, body = (url or "").partition(",")
    if head != "data:image/png;base64" or not body:
        raise UploadRefused("The drawing did not arrive as a PNG image.")
    if len(body) > max_bytes * 4 // 3 + 4:
        raise UploadRefused(f"The drawing is over {_mb(max_bytes)}.")
    try:
        data = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        raise UploadRefused("The drawing's data is damaged.") from None
    return image_from_upload(data, max_bytes=max_bytes)


def _to_rgb_square(img: Image.Image) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float greyscale -> 8-bit
        a = np.asarray(img, dtype=np.float64)
        a = a / (65535.0 if a.max() > 255 else 255.0) * 255
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # composite transparency onto the dark background
        img = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        img.alpha_composite(rgba)
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)  # centre square
    img = img.resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8).copy()
