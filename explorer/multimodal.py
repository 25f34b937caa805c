"""The Multimodal lab: captioners of the generated scene world (``explorer.scenes``) trained live
with both fusion modes (``explorer.fusion``), evaluated on held-out scenes, and read word by word:
where each generated word's attention falls on the image.

Training goes through the one trainer (``explorer.train.Trainer``): ``CaptionTask`` hands it
batches of (images, words) and next-word targets, as the symbolic tasks hand it characters.
"""
from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from . import scenes
from .fusion import FUSIONS, PATCHES, POS2D, Captioner, FusionConfig, build
from .jobs import run_to_end
from .runs import StopRule, TrainJob, TrainedRun
from .tasks import IGNORE
from .train import TrainConfig, Trainer, evaluate

HELD_OUT_SEED = 2024  # the held-out scenes every evaluation reads
EVAL_SCENES = 256  # held-out scenes per evaluation
STOP_RULE = StopRule(accuracy=0.99, checks=3, every=50)  # "stop when learned": held-out word accuracy
UPLOAD_BYTES = 5_000_000  # the largest picture a student may upload


class CaptionTask:
    """Scenes of one split as the trainer's task: ``batch`` gives ``((images, words), targets)``;
    the words start with <bos>, the targets are the next words with padding ignored."""

    def __init__(self, split: str = "train"):
        self.split = split

    def batch(self, gen: torch.Generator, batch_size: int, length: int = 0) -> tuple[tuple[Tensor, Tensor], Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        images, captions, _ = scenes.batch(self.split, batch_size, seed)  # (B, 3, S, S), (B, CAPTION_TOKENS)
        words, targets = captions[:, :-1], captions[:, 1:].clone()
        targets[targets == scenes.PAD] = IGNORE
        return (images, words), targets


@dataclass(frozen=True)
class MultimodalSettings:
    fusions: tuple = ("cross", "early")  # the fusion modes trained side by side, names in FUSIONS
    pos2d: str = "learned"  # the patches' 2-D positions, one of POS2D
    patch: int = 8  # patch side in pixels, one of PATCHES
    steps: int = 1500  # training steps of each model (at most)
    batch_size: int = 64  # scenes per step
    lr: float = 3e-3  # peak learning rate
    seed: int = 0  # seeds the weights and the scenes drawn
    until_learned: bool = True  # stop when held-out word accuracy stays high (STOP_RULE)

    def config(self, fusion: str) -> FusionConfig:
        return FusionConfig(fusion=fusion, patch=self.patch, pos2d=self.pos2d)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=50, seed=self.seed)

    def problem(self) -> Optional[str]:
        if not self.fusions:
            return "choose at least one fusion mode"
        for fusion in self.fusions:
            problem = self.config(fusion).problem()
            if problem:
                return problem
        return None


def url_defaults() -> dict:
    """Every control of the Multimodal page at its default."""
    d = MultimodalSettings()
    scene = DEFAULT_SCENE
    out = {"mm_fusions": list(d.fusions), "mm_pos2d": d.pos2d, "mm_patch": d.patch, "mm_steps": d.steps,
           "mm_seed": d.seed, "mm_until_learned": d.until_learned, "mm_things": len(scene.things),
           "mm_word": 0, "mm_head": "mean of heads", "mm_layer": "last"}
    for i in range(scenes.MAX_THINGS):
        thing = scene.things[i] if i < len(scene.things) else FILLER[i]
        out.update({f"mm_shape{i}": thing.shape, f"mm_colour{i}": thing.colour, f"mm_cell{i}": cell_name(thing.row, thing.col)})
    return out


def world_sentence() -> str:
    """What the scene world holds, in words, from its constants."""
    shapes, colours = [f"{s}s" for s in scenes.SHAPES], list(scenes.COLOURS)
    return (f"one to {scenes.MAX_THINGS} {', '.join(shapes[:-1])} and {shapes[-1]} in {', '.join(colours[:-1])} or "
            f"{colours[-1]}, one to a cell of a {scenes.GRID} × {scenes.GRID} grid, on a dark ground")


CELLS = tuple(f"{r} {c}".strip() for r in ("top", "middle", "bottom") for c in ("left", "centre", "right"))


def cell_name(row: int, col: int) -> str:
    return CELLS[row * scenes.GRID + col]


def cell_of(name: str) -> tuple[int, int]:
    i = CELLS.index(name)
    return divmod(i, scenes.GRID)


DEFAULT_SCENE = scenes.make_scene([scenes.Thing("circle", "red", 0, 0), scenes.Thing("triangle", "blue", 2, 2)])
FILLER = (scenes.Thing("circle", "red", 0, 0), scenes.Thing("triangle", "blue", 2, 2),
          scenes.Thing("square", "yellow", 1, 1))  # what an unused composer row holds


# ---------------------------------------------------------------------------------------------- training
def training_job(settings: MultimodalSettings, fusion: str) -> TrainJob:
    """One fusion mode's shared training run: its key is the full run description, so the same
    settings train once per server, whoever asks."""
    config = settings.config(fusion)
    task, held = CaptionTask("train"), CaptionTask("held_out")

    def build_trainer() -> Trainer:
        return Trainer(build(config, settings.seed), task, 0, settings.train_config())

    def held_out(model) -> float:
        return evaluate(model, held, 0, batches=1, batch_size=EVAL_SCENES, seed=HELD_OUT_SEED)["accuracy"]

    stop = STOP_RULE if settings.until_learned else None
    return TrainJob(("multimodal", settings, fusion), f"training the {fusion}-fusion captioner", build_trainer,
                    peak_bytes(config, settings.batch_size), held_out=held_out, stop=stop,
                    max_checkpoints=0)  # its page never rewinds: no checkpoints to keep


def peak_bytes(config: FusionConfig, batch_size: int) -> float:
    """Predicted peak memory of training: weights, gradients, AdamW moments (16 bytes a parameter),
    about 40 activations per token and width per block kept for the backward pass, the attention
    weights three times, and 48 MB of slack (the scene batch, temporaries)."""
    C, N, T = config.n_embd, config.n_patches, scenes.CAPTION_TOKENS
    blocks = config.enc_layers + config.dec_layers
    params = blocks * 16 * C * C + (3 * config.patch ** 2 + N + len(scenes.VOCAB) + T) * C
    scores = config.n_head * (N + T) ** 2
    return 16 * params + 4 * batch_size * blocks * (40 * (N + T) * C + 3 * scores) + 48e6


# ---------------------------------------------------------------------------------------------- evaluation
@dataclass
class CaptionScore:
    exact: float  # share of scenes whose caption is word for word the true one
    colour: float  # share of the scenes' things whose colour the caption gets right, in place
    shape: float  # the same for shapes
    relation: float  # share of the relations between consecutive things said right
    count: float  # share of scenes with the right number of things
    n: int  # scenes


def score(predicted: list[list[str]], truth: list[scenes.Scene]) -> CaptionScore:
    """Exact match and per-attribute accuracy of captions against their scenes: the i-th thing named
    is compared with the scene's i-th thing (canonical order); a caption that does not parse gets
    nothing right."""
    exact = colour = shape = relation = count = things = relations = 0
    for words, scene in zip(predicted, truth):
        true_words = scenes.caption(scene)
        exact += words == true_words
        true_things, true_rel = scenes.parse(true_words)
        things += len(true_things)
        relations += len(true_rel)
        parsed = scenes.parse(words)
        if parsed is None:
            continue
        got_things, got_rel = parsed
        count += len(got_things) == len(true_things)
        for (c, s), (tc, ts) in zip(got_things, true_things):
            colour += c == tc
            shape += s == ts
        relation += sum(a == b for a, b in zip(got_rel, true_rel))
    n = len(truth)
    return CaptionScore(exact / n, colour / max(1, things), shape / max(1, things), relation / max(1, relations),
                        count / n, n)


def evaluate_captions(model: Captioner, split: str = "held_out", n: int = EVAL_SCENES, seed: int = HELD_OUT_SEED) -> CaptionScore:
    """Greedy captions of ``n`` scenes of ``split`` scored against the truth."""
    images, _, truth = scenes.batch(split, n, seed)
    predicted = []
    for i in range(0, n, 128):
        predicted += model.caption(images[i:i + 128])
    return score(predicted, truth)


def frequency_baseline(split: str = "held_out", n: int = EVAL_SCENES, seed: int = HELD_OUT_SEED,
                       train_scenes: int = 4096) -> tuple[list[str], CaptionScore]:
    """The most frequent caption of the training scenes, said of every scene: what a model that
    ignores the image can do at best with one caption."""
    counts = Counter(tuple(scenes.caption(s)) for s in scenes.batch_scenes("train", train_scenes, 0))
    best = list(counts.most_common(1)[0][0])
    _, _, truth = scenes.batch(split, n, seed)
    return best, score([best] * n, truth)


# ---------------------------------------------------------------------------------------------- where words look
@dataclass
class WordMaps:
    words: list  # the words written, in order
    maps: np.ndarray  # (layers, heads, words, patches): the attention of the query that wrote each word
    sums_to_one: bool  # the weights over the patches sum to 1 (cross) or share with earlier words (early)


def word_maps(model: Captioner, image: Tensor, words: Optional[list[str]] = None) -> WordMaps:
    """For each word of ``words`` (default: the model's own caption of ``image``, (3, S, S)), the
    attention over the patches of the query that wrote it: word t is written by the position
    reading word t - 1 (<bos> for the first)."""
    if words is None:
        words = model.caption(image[None])[0]
    ids = torch.tensor([[scenes.BOS] + scenes.encode(words)[:-1]])  # what each writing position reads
    maps = model.word_maps(image[None], ids)  # (layers, 1, nh, words, N)
    return WordMaps(list(words), maps[:, 0].numpy(), FUSIONS[model.config.fusion].maps_sum_to_one)


@dataclass
class NamedMass:
    colour: list  # per layer: mean share of a colour word's patch attention on the thing it names
    shape: list  # per layer: the same for shape words
    chance: float  # the share a uniform spread would give (the thing's patches over all patches)


def named_mass(model: Captioner, n: int = 128, seed: int = HELD_OUT_SEED) -> NamedMass:
    """Does a colour or shape word look at the thing it names? On held-out scenes, reading the true
    captions (so every word names a known thing), the share of each such word's attention over the
    patches that falls on that thing's patches (mean over heads), per layer."""
    images, captions, truth = scenes.batch("held_out", n, seed)
    cfg = model.config
    maps = model.word_maps(images, captions[:, :-1])  # (L, B, nh, T, N); query t writes caption word t+1
    maps = maps.mean(2)  # (L, B, T, N)
    share = maps / maps.sum(-1, keepdim=True)
    colour, shape = [[] for _ in range(maps.shape[0])], [[] for _ in range(maps.shape[0])]
    inside = []
    for b, scene in enumerate(truth):
        words = scenes.caption(scene)
        thing_no = -1
        for t, w in enumerate(words):
            if w == "a":
                thing_no += 1
            if w in scenes.COLOURS or w in scenes.SHAPES:
                patches = scenes.patches_of(scene.things[thing_no], cfg.patch)
                inside.append(len(patches) / cfg.n_patches)
                for layer in range(maps.shape[0]):
                    mass = float(share[layer, b, t, patches].sum())  # query t writes word t (words exclude <bos>)
                    (colour if w in scenes.COLOURS else shape)[layer].append(mass)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return NamedMass([mean(x) for x in colour], [mean(x) for x in shape], mean(inside))


# ---------------------------------------------------------------------------------------------- cost
@functools.lru_cache(maxsize=32)
def step_flops(config: FusionConfig) -> float:
    """FLOPs of one forward pass over one scene and its caption, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(config)
    images, captions, _ = scenes.batch("train", 1, 0)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model((images, captions[:, :-1]))
    return float(counter.get_total_flops())


@functools.lru_cache(maxsize=32)
def attention_scores(config: FusionConfig) -> int:
    """Attention weights one forward pass forms per head, over all layers, for one scene and a
    full-length caption: read from the shapes of the patterns the hooks record."""
    model = build(config)
    images, captions, _ = scenes.batch("train", 1, 0)
    with torch.no_grad():
        trace = model((images, captions[:, :-1]), capture=[n for n in model.hook_names() if n.endswith(".pattern")]).trace
    return int(sum(t[0, 0].numel() for t in trace.values()))


# ---------------------------------------------------------------------------------------------- findings
def findings(runs: dict[str, TrainedRun], evals: dict[str, "Evaluation"]) -> list[str]:
    """What came out, in sentences computed from the runs and their scores."""
    out = []
    for fusion, run in runs.items():
        e = evals[fusion]
        s, hard, m = e.held_out, e.hard, e.mass
        learned = f", learned at step {run.learned_at}" if run.learned_at is not None else ""
        out.append(f"**{FUSIONS[fusion].title}**: {s.exact:.0%} of {s.n} held-out scenes captioned word for word right "
                   f"after {run.step} steps ({run.seconds:.0f} s of training{learned}); colours {s.colour:.0%}, shapes "
                   f"{s.shape:.0%}, relations {s.relation:.0%}. On scenes with a colour–shape pair it never saw: "
                   f"{hard.exact:.0%} right, colours {hard.colour:.0%}, shapes {hard.shape:.0%}.")
        best = int(np.nanargmax(m.colour))
        out.append(f"Its colour words put {m.colour[best]:.0%} of their attention on the image on the thing they "
                   f"name (layer {best}; shape words there: {m.shape[best]:.0%}); spread evenly it would be "
                   f"{m.chance:.0%}.")
    if len(evals) == 2:
        (a, ea), (b, eb) = evals.items()
        if ea.held_out.exact != eb.held_out.exact:
            better, worse = (a, b) if ea.held_out.exact > eb.held_out.exact else (b, a)
            out.append(f"On these settings **{better}** fusion captions more held-out scenes right "
                       f"({evals[better].held_out.exact:.0%} against {evals[worse].held_out.exact:.0%}).")
        else:
            out.append(f"Both fusion modes caption {ea.held_out.exact:.0%} of the held-out scenes right.")
    return out


def train_alone(settings: MultimodalSettings, fusion: str) -> TrainedRun:
    """Run one fusion mode's training job to its end in this thread (the bench; tests)."""
    job = training_job(settings, fusion)
    run = run_to_end(job)
    job.close()
    return run


def report(settings: MultimodalSettings = MultimodalSettings()) -> dict:
    """The page's headline figures, from runs: each fusion mode's default training (alone, one
    thread), its held-out scores on the ordinary and the hard split, where its words look, its
    cost; and the caption-frequency baseline."""
    out = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
           "held_out_scenes": EVAL_SCENES, "runs": {}}
    best, base = frequency_baseline()
    out["baseline"] = {"caption": " ".join(best), "held_out": base.__dict__}
    for fusion in settings.fusions:
        t0 = time.perf_counter()
        run = train_alone(settings, fusion)
        wall = time.perf_counter() - t0
        mass = named_mass(run.model)
        cfg = settings.config(fusion)
        out["runs"][fusion] = {
            "steps": run.step, "learned_at": run.learned_at, "training_s": round(run.seconds, 1),
            "wall_s": round(wall, 1), "ms_per_step": round(1000 * run.seconds / max(1, run.step), 1),
            "held_out": evaluate_captions(run.model).__dict__,
            "hard": evaluate_captions(run.model, split="hard").__dict__,
            "named_mass": mass.__dict__, "params": run.model.num_params(),
            "forward_flops": step_flops(cfg), "attention_weights_per_head": attention_scores(cfg)}
    return out


# ---------------------------------------------------------------------------------------------- the page's views
HEAD_MEAN = "mean of heads"
LAYER_LAST = "last"


def scene_from_controls(rows: list[tuple[str, str, str]], n: int) -> tuple[Optional[scenes.Scene], Optional[str]]:
    """The composed scene from the page's first ``n`` rows of (shape, colour, cell name), or why not."""
    things = [scenes.Thing(shape, colour, *cell_of(cell)) for shape, colour, cell in rows[:n]]
    cells = [cell for _, _, cell in rows[:n]]
    for cell in dict.fromkeys(cells):
        if cells.count(cell) > 1:
            return None, f"two things are in the {cell} cell: move one of them (one thing per cell)"
    scene = scenes.make_scene(things)
    return scene, scene.problem()


def random_rows(k: int) -> list[tuple[str, str, str]]:
    """The k-th held-out scene as composer rows (the page's "Random scene"; the same k, the same scene)."""
    scene = scenes.batch_scenes("held_out", 1, 10_000 + k)[0]
    return [(t.shape, t.colour, cell_name(t.row, t.col)) for t in scene.things]


SOURCES = ("Compose", "Draw", "Upload")  # where the captioned picture comes from (the page's tabs)


@dataclass
class Picture:
    image: Optional[np.ndarray]  # (SIZE, SIZE, 3) uint8 to caption, or None
    truth: Optional[list] = None  # the true caption (a composed scene only)
    error: str = ""  # why the student's file or drawing was refused (the composed scene is shown instead)
    problem: str = ""  # why the composed scene cannot be drawn
    note: str = ""  # what to know about this picture


def picture(source: str, scene: Optional[scenes.Scene], scene_problem: Optional[str],
            upload: Optional[bytes] = None, drawing: Optional[str] = None) -> Picture:
    """The picture the page captions: the student's drawing or upload when that tab is open and one
    was given (and decodes), else the composed scene. A refusal never loses the scene."""
    own = {"Draw": drawing, "Upload": upload}.get(source)
    error, note = "", ""
    if own:
        try:
            image = (scenes.image_from_data_url(own, UPLOAD_BYTES) if source == "Draw"
                     else scenes.image_from_upload(own, max_bytes=UPLOAD_BYTES))
            what = "drawing" if source == "Draw" else "picture"
            return Picture(image, note=f"Your {what}, at {scenes.SIZE} × {scenes.SIZE} pixels. The model has only ever "
                                       f"seen this page's world ({world_sentence()}): it describes your {what} in those "
                                       "words, whatever it shows.")
        except scenes.UploadRefused as e:
            error = str(e)
    elif source in ("Draw", "Upload"):
        note = ("Nothing drawn yet: paint, then press **Caption this drawing**." if source == "Draw"
                else "No file yet: choose a PNG or JPEG.") + " Until then the composed scene is shown."
    if scene_problem:
        return Picture(None, error=error, problem=scene_problem, note=note)
    return Picture(scenes.render(scene), scenes.caption(scene), error=error, note=note)


def image_tensor(image: np.ndarray) -> Tensor:
    return scenes.to_tensor([image])[0]  # (3, S, S)


@dataclass
class WordView:
    words: list  # the caption written
    word: int  # the word shown (clamped to the caption)
    grid: Optional[np.ndarray]  # (g, g) weights of the query that wrote it, over the patches
    on_patches: float  # the share of that query's attention on the patches (1 for cross-attention)
    where: str  # which layer and head, in words


def word_view(model: Captioner, image: np.ndarray, word: int, head: str, layer: str) -> WordView:
    """The model's caption of ``image`` and, for word number ``word``, its attention over the
    patches in one layer (``LAYER_LAST`` or a number) and head (``HEAD_MEAN`` or a number)."""
    wm = word_maps(model, image_tensor(image))
    if not wm.words:
        return WordView([], 0, None, 0.0, "")
    L, nh = wm.maps.shape[:2]
    li = L - 1 if layer == LAYER_LAST else min(int(layer), L - 1)
    w = min(max(0, word), len(wm.words) - 1)
    maps = wm.maps[li, :, w]  # (nh, N)
    if head == HEAD_MEAN:
        row, who = maps.mean(0), f"layer {li}, mean of {nh} heads"
    else:
        hi = min(int(head), nh - 1)
        row, who = maps[hi], f"layer {li}, head {hi}"
    g = model.config.grid
    return WordView(wm.words, w, row.reshape(g, g), float(row.sum()), who)


def layer_choices(settings: MultimodalSettings) -> list:
    """The layer control's options: "last" and every layer number any of the chosen modes has."""
    most = max((settings.config(f).dec_layers + (settings.config(f).enc_layers if f == "early" else 0)
                for f in settings.fusions), default=1)
    return [LAYER_LAST] + [str(i) for i in range(most)]


def loss_series(runs: dict[str, TrainedRun]) -> dict:
    """Training loss of each mode against its training time (every 10th step)."""
    out = {}
    for fusion, run in runs.items():
        hist = run.history[::10] or run.history
        per = run.seconds / max(1, run.step)
        out[FUSIONS[fusion].title] = ([round(h[0] * per, 2) for h in hist], [h[1] for h in hist])
    return out


@dataclass
class Evaluation:
    held_out: CaptionScore
    hard: CaptionScore
    mass: NamedMass


def evaluation_job(run_key, run: TrainedRun):
    """Score a run's weights (at its step) on held-out and hard scenes and measure where its words
    look: a scheduler job, shared by key (a seeded run's weights at a step are the same for everyone)."""
    from .jobs import FunctionJob

    model = run.model

    def work() -> Evaluation:
        return Evaluation(evaluate_captions(model), evaluate_captions(model, split="hard"), named_mass(model))

    job = FunctionJob(work, key=("mm_eval", run_key, run.step), peak_bytes=64e6, title="scoring the captions")
    job.shippable = True  # seeded weights on generated scenes: the same everywhere (explorer.shelf)
    return job


def score_rows(runs: dict[str, TrainedRun], evals: dict[str, Evaluation], settings: MultimodalSettings) -> list[dict]:
    """The comparison table: one row per fusion mode."""
    rows = []
    for fusion, run in runs.items():
        e, cfg = evals.get(fusion), settings.config(fusion)
        rows.append({
            "fusion": FUSIONS[fusion].title, "steps": run.step,
            "training (s)": round(run.seconds, 1), "ms per step": round(1000 * run.seconds / max(1, run.step), 1),
            "exact, held-out": None if e is None else f"{e.held_out.exact:.1%}",
            "colour": None if e is None else f"{e.held_out.colour:.1%}",
            "shape": None if e is None else f"{e.held_out.shape:.1%}",
            "relation": None if e is None else f"{e.held_out.relation:.1%}",
            "exact, unseen combinations": None if e is None else f"{e.hard.exact:.1%}",
            "shape, unseen combinations": None if e is None else f"{e.hard.shape:.1%}",
            "parameters": f"{run.model.num_params():,}",
            "attention weights per head": f"{attention_scores(cfg):,}",
            "forward MFLOPs": round(step_flops(cfg) / 1e6, 1),
        })
    return rows
