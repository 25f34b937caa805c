"""The Attention Lab's logic, free of any UI: settings -> configs, a training run that a page
keeps in its session, which model to show after a control changes, and the analysis of one input
(tokens, attention, generated answer, the model's inside).

The page only reads widgets into ``LabSettings``, calls these functions and draws the results.
"""
from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np
import torch

from .attention import ATTENTION
from .attention.window import dynamic_window_rule
from .child import ChildWorker
from .config import ModelConfig
from .encodings import ENCODINGS
from .cost import model_attention_flops, useful_fraction
from .figures import md_escape
from .generate import generate
from .model import GPT, build_model, logit_lens, runtime_fields, same_parameters, with_config
from .tasks import LETTERS, TASKS, Task
from .jobs import FunctionJob, Handle
from .measure import CHILD_BYTES
from .runs import StopRule, TrainedRun, TrainJob, measure_step_s, training_peak_bytes
from .train import TrainConfig, Trainer, evaluate

WIDTHS = (16, 32, 64, 128, 256)
CONTROL_RANGES = {"window": (1, 512), "steps": (10, 20000), "seed": (0, 2**31 - 1)}  # the page's number inputs


@dataclass(frozen=True)
class LabSettings:
    task: str = "reverse"  # a name in explorer.tasks.TASKS
    length: int = 16  # input length the model is trained on
    attention: str = "softmax"  # a name in explorer.attention.ATTENTION
    window: int = 8  # window / block size for the kinds that use one
    n_head: int = 4  # attention heads
    encoding: str = "learned"  # a name in explorer.encodings.ENCODINGS
    n_layer: int = 2  # transformer blocks
    n_embd: int = 64  # width
    steps: int = 300  # training steps (at most)
    seed: int = 0  # seeds weights and data
    until_learned: bool = True  # stop once held-out accuracy stays >= 99% (tasks with right answers)

    @property
    def task_obj(self) -> Task:
        try:
            return TASKS[self.task]
        except KeyError as e:
            raise ValueError(f"task = {self.task!r}: choose one of {', '.join(TASKS.names())}") from e

    def model_config(self) -> ModelConfig:
        """The model these settings describe; ``ValueError`` names the field that is wrong."""
        task = self.task_obj
        if not 2 <= self.length <= 32:
            raise ValueError(f"length = {self.length}: allowed range is 2 to 32")
        return ModelConfig(
            vocab_size=task.tokenizer.vocab_size, block_size=task.context(self.length), n_layer=self.n_layer,
            n_head=self.n_head, n_embd=self.n_embd, attention=self.attention, window=self.window,
            encoding=self.encoding,
        )

    def train_config(self) -> TrainConfig:
        if not 1 <= self.steps <= 20000:
            raise ValueError(f"steps = {self.steps}: allowed range is 1 to 20000")
        return TrainConfig(steps=self.steps, seed=self.seed)

    def problem(self) -> Optional[str]:
        """Why these settings cannot make a model, or None."""
        try:
            self.model_config()
            self.train_config()
        except ValueError as e:
            return str(e)
        return None


FIELD_NAMES = tuple(f.name for f in fields(LabSettings))
URL_CONTROLS = {  # the page's URL key -> (LabSettings field, the control's label)
    "lab_task": ("task", "Task"), "lab_length": ("length", "Input length"), "lab_attention": ("attention", "Attention"),
    "lab_window": ("window", "Window"), "lab_heads": ("n_head", "Heads"),
    "lab_encoding": ("encoding", "Positional encoding"), "lab_layers": ("n_layer", "Layers"),
    "lab_width": ("n_embd", "Width"), "lab_steps": ("steps", "Training steps"),
    "lab_until_learned": ("until_learned", "Stop when learned"), "lab_seed": ("seed", "Seed"),
}
VIEW_DEFAULTS = {"lab_input": None, "lab_layer": 0, "lab_head": 0, "lab_tab": "Selected head",  # None: the page's own
                 "lab_step": None}
CONFIG_LABELS = {"n_head": "Heads", "n_embd": "Width", "n_layer": "Layers", "window": "Window",
                 "block_size": "Context", "attention": "Attention", "encoding": "Positional encoding",
                 "length": "Input length", "steps": "Training steps", "task": "Task"}


def url_defaults() -> dict:
    """Every control of the page at its default (what a lesson starts from)."""
    d = LabSettings()
    return {key: getattr(d, field) for key, (field, _) in URL_CONTROLS.items()} | VIEW_DEFAULTS


RUNTIME = ("attention", "window", "n_head")  # fields a trained model can be read under without retraining


def valid_heads(width: int, encoding: str) -> list[int]:
    """The head counts the Heads control offers for this width and encoding."""
    from .config import LIMITS

    lo, hi = LIMITS["n_head"]
    even = ENCODINGS[encoding].needs_even_head_dim
    return [h for h in range(lo, hi + 1) if width % h == 0 and not (even and (width // h) % 2)]


def link_flags(run: Optional["LabRun"], settings: LabSettings) -> dict:
    """The URL flags that make a copied link reopen this view: ``lab_trained=1`` when a finished
    run is shown, and ``lab_from`` naming the trained run's kind, window and heads when they differ
    from the controls (its weights are read under the controls' ones)."""
    current = run.current() if run is not None else None
    if current is None or not current.finished or run.training:
        return {}
    changed = [f for f in run.differences(settings) if f not in ("steps", "until_learned")]
    if not changed:
        return {"lab_trained": "1"}
    if set(changed) <= set(RUNTIME):
        return {"lab_trained": "1", "lab_from": ";".join(f"{f}:{getattr(run.settings, f)}" for f in changed)}
    return {}


def trained_from(text: str, view: LabSettings) -> tuple[LabSettings, str]:
    """The settings a link's ``lab_from`` says were trained (the view's, with those fields), and a
    problem when the text cannot be read ('' if none)."""
    changes = {}
    for part in filter(None, (text or "").split(";")):
        field, _, value = part.partition(":")
        if field not in RUNTIME:
            return view, f"'lab_from' names {field!r}, not one of {', '.join(RUNTIME)}"
        try:
            changes[field] = value if field == "attention" else int(value)
        except ValueError:
            return view, f"'lab_from' has {part!r}, not a whole number"
    trained = dataclasses.replace(view, **changes)
    problem = trained.problem()
    return (view, f"'lab_from' describes a model that cannot exist: {problem}") if problem else (trained, "")


def explain(problem: str) -> str:
    """A settings problem in the controls' words (``n_head = 3`` -> ``Heads = 3``)."""
    for field, label in CONFIG_LABELS.items():
        problem = re.sub(rf"\b{field}\b", label, problem)
    return problem
HELD_OUT_SEED = 4321  # fresh examples for the stop rule's checks, never the training stream


def step_flops(settings: LabSettings) -> float:
    """Matrix-product FLOPs of one training step (forward and backward: 3 x the forward's): the
    weights' 2 FLOPs per parameter and token, and every layer's attention core."""
    config = settings.model_config()
    T = settings.task_obj.context(settings.length)
    C, L = config.n_embd, config.n_layer
    weights = L * 12 * C * C + config.vocab_size * C  # the blocks' matrices and the unembedding
    return 3 * TrainConfig.batch_size * (2 * weights * T + model_attention_flops(config, T))


CALIBRATION = (LabSettings(length=8), LabSettings(n_embd=128, n_layer=3, length=16))  # a small and a larger model


def calibrate() -> tuple[float, float]:
    """This machine's training speed: seconds per step = a + b x FLOPs per step, fitted to one
    small and one large model measured now (a few steps each)."""
    points = []
    for s in CALIBRATION:
        config, task = s.model_config(), s.task_obj
        seconds = measure_step_s(lambda: Trainer(build_model(config, s.seed), task, s.length,
                                                 dataclasses.replace(s.train_config(), steps=10)))
        points.append((step_flops(s), seconds))
    (f0, s0), (f1, s1) = points
    b = max(0.0, (s1 - s0) / (f1 - f0))
    return max(0.0, s0 - b * f0), b


def estimate_text(settings: LabSettings, speed: tuple[float, float]) -> str:
    """What pressing Train will cost, from this machine's measured speed."""
    step_s = speed[0] + speed[1] * step_flops(settings)
    text = (f"About {step_s * settings.steps:.0f} s of training alone for {settings.steps} steps (about "
            f"{step_s * 1000:.0f} ms a step on this server, from its measured speed)")
    if settings.until_learned and settings.task_obj.symbolic:
        text += "; it stops earlier once it has learned"
    return text + "."


def calibrate_in_child() -> tuple[float, float]:
    """``calibrate`` in a child process with one torch thread (the server's own setting for a
    computation), so the seconds it measures do not slow the server's other sessions through
    Python's lock while a student is changing controls."""
    worker = ChildWorker(threads=1)
    try:
        return worker.call("explorer.lab:calibrate")
    finally:
        worker.close()


def calibration_job():
    """Measuring this server's speed, once per server (shared by key), in a child process."""
    return FunctionJob(calibrate_in_child, key=("lab-speed",), peak_bytes=CHILD_BYTES + training_peak_bytes(
        CALIBRATION[1].model_config(), TrainConfig.batch_size, CALIBRATION[1].task_obj.context(CALIBRATION[1].length)),
        title="measuring this server's speed")


def about(settings: LabSettings, text: str) -> list[str]:
    """What a model of these settings was trained on and what it cannot do, for the 'About this
    model' box; the last line warns about the user's input when it is outside what it saw."""
    task = settings.task_obj
    config = settings.model_config()
    out = [f"Trained on **{task.title.lower()}**: {task.description}",
           f"Every training input is {'a sentence of the toy language' if not task.symbolic else ''}"
           + (f"exactly **{settings.length}** characters long ({describe_chars(task.input_chars)}), drawn at random "
              f"with seed {settings.seed}" if task.symbolic else f", cut to {config.block_size} characters") + ".",
           f"Its context holds {config.block_size} tokens"
           + (f": the input, '{task.separator}' and the answer." if task.separator else ".")]
    if not ENCODINGS[settings.encoding].extrapolates:
        out.append(f"Its {settings.encoding} positions have no row past position {config.block_size - 1}.")
    if task.symbolic and text and len(text) != settings.length:
        out.append(f"Your input has {len(text)} characters; this model has only ever seen {settings.length}: expect "
                   "mistakes. Retrain with that input length to teach it.")
    return out


def training_job(settings: LabSettings) -> TrainJob:
    """The scheduler job that trains these settings. Its key is the full run description, so the
    same settings are trained once per server, whoever asks. A task with right answers stops once
    it has learned (held-out accuracy >= 99% for 3 checks in a row) when ``until_learned``."""
    config, task = settings.model_config(), settings.task_obj
    stop = StopRule() if settings.until_learned and task.symbolic else None

    def build() -> Trainer:
        return Trainer(build_model(config, settings.seed), task, settings.length, settings.train_config())

    def held_out(model: GPT) -> float:
        return evaluate(model, task, settings.length, batches=1, batch_size=256, seed=HELD_OUT_SEED)["accuracy"]

    T = task.context(settings.length)
    return TrainJob(("lab", settings), f"training {settings.task} ({settings.attention})", build,
                    training_peak_bytes(config, TrainConfig.batch_size, T), held_out=held_out, stop=stop)


@dataclass
class Shown:
    """The model a page shows for the current controls, and why."""
    model: GPT
    settings: LabSettings  # the settings the shown model answers to
    note: str = ""  # why this model, when it is not exactly the trained one
    reread: bool = False  # trained weights read under another kind, window or head count


@dataclass
class LabRun:
    """This session's training run: the settings trained, the scheduler's handle while it runs,
    and the run as it was when this session stopped watching it (kept: nothing is lost)."""

    settings: LabSettings
    handle: Optional[Handle] = None
    holder: object = None  # who holds the handle (this session)
    frozen: Optional[TrainedRun] = None  # the run as it was when this session stopped it
    stopped: bool = False
    _accuracies: dict = field(default_factory=dict, repr=False)
    opened_from: str = ""  # the file this run was opened from ('' when trained in this session)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this run in the session's caches

    @property
    def training(self) -> bool:
        return not self.stopped and self.handle is not None and self.handle.active

    def current(self) -> Optional[TrainedRun]:
        """The run as far as it got: the finished result, the live view, or the stopped one."""
        if self.stopped:
            return self.frozen
        return self.handle.job.live() if self.handle is not None else None

    def stop(self) -> None:
        """Keep the run as it is now; the scheduler stops it once no other session watches it."""
        if not self.stopped:
            self.frozen, self.stopped = self.current(), True
            if self.handle is not None:
                self.handle.release(self.holder)

    @property
    def config(self) -> ModelConfig:
        return self.settings.model_config()

    def model_key(self, at: Optional[int] = None) -> tuple:
        """Names the weights shown: the shared run and its step (the same for every session watching
        it), or this session's stopped copy; ``at`` a checkpoint step when rewound."""
        run = self.current()
        step = run.step if run is not None else 0
        if self.stopped or self.handle is None:
            return ("stopped", self.id, step, at)
        return ("run", self.handle.job.key, step, at)

    def differences(self, settings: LabSettings) -> list[str]:
        """The settings that differ from those this run was trained with."""
        return [n for n in FIELD_NAMES if getattr(settings, n) != getattr(self.settings, n)]

    def status(self) -> str:
        run = self.current()
        if run is None:
            return "waiting to start"
        text = (f"opened from **{md_escape(self.opened_from)}**, " if self.opened_from else "") + \
            f"trained {run.step} of {run.total} steps"
        if run.learned_at is not None:
            text += f": **learned at step {run.learned_at}** (held-out accuracy ≥ 99% from then on, so it stopped)"
        elif run.history:
            text += f", last training batch accuracy {run.history[-1][2]:.1%}"
        return text

    def accuracy(self, model: GPT, step: int) -> float:
        """Token accuracy of ``model`` (these weights, some config) on 64 fresh examples of the
        trained task; remembered per step and config (at most 32, so a session's memory stays small)."""
        key = (step, model.config)
        if key not in self._accuracies:
            if len(self._accuracies) >= 32:
                self._accuracies.pop(next(iter(self._accuracies)))
            self._accuracies[key] = evaluate(model, self.settings.task_obj, self.settings.length, batches=1,
                                             batch_size=64)["accuracy"]
        return self._accuracies[key]

    def shown(self, settings: LabSettings, step: Optional[int] = None) -> Optional[Shown]:
        """The model to show for the controls ``settings`` (at checkpoint ``step`` if given): the
        trained one; its weights read under the new kind, window or head count when only those
        changed (with the accuracy that costs); or the trained one with a note when the controls
        describe a model of other shapes."""
        run = self.current()
        if run is None:
            return None
        trained = run.model if step is None else run.model_at(step)
        changed = [c for c in self.differences(settings) if c not in ("steps", "until_learned")]
        if not changed:
            return Shown(trained, self.settings)
        config = None if settings.problem() else settings.model_config()
        if config is not None and same_parameters(config, self.config) and \
                set(changed) <= {"attention", "window", "n_head"}:
            fields_changed = runtime_fields(config, self.config)
            model = with_config(trained, config)
            before = self.accuracy(trained, run.step if step is None else step)
            after = self.accuracy(model, run.step if step is None else step)
            was = ", ".join(f"{f} = {getattr(self.config, f)}" for f in fields_changed)
            also = ENCODINGS[config.encoding].reread_note(self.config, config)
            return Shown(model, settings, reread=True, note=(
                f"Showing the trained weights read with the new {', '.join(fields_changed)} (trained with {was}); "
                f"nothing was retrained. Token accuracy on fresh examples: **{after:.0%}** now, {before:.0%} as "
                "trained" + (" — the weights were learned for the old setting, and that is the price of reading "
                             "them under a new one." if after < before - 0.02 else ".")
                + (f" {also}" if also else "") + " Press **Train** to train this configuration."))
        return Shown(trained, self.settings, note=(
            "The controls describe a different model (" + ", ".join(changed) + " changed). Showing the model you "
            "trained; press **Train** to train the new one."))


# ---------------------------------------------------------------------------------------------- save and open
LAB_SOURCE = "attention_lab"  # a checkpoint's meta["source"] when the Lab saved it


def bundle_name(settings: LabSettings) -> str:
    """The file name a trained Lab model is downloaded as: its task and architecture, readable."""
    window = f"-w{settings.window}" if ATTENTION[settings.attention].size_control else ""
    return (f"lab-{settings.task}-len{settings.length}-{settings.attention}{window}-{settings.encoding}-"
            f"L{settings.n_layer}-H{settings.n_head}-C{settings.n_embd}-seed{settings.seed}.zip")


def save_bundle(run: LabRun) -> bytes:
    """The run's model as it is now (trained, or stopped part-way) as a checkpoint bundle (a zip of
    safetensors weights and a JSON config), with the settings and the history it was trained with."""
    from .checkpoint import bundle

    now = run.current()
    if now is None:
        raise ValueError("nothing trained yet: press Train first")
    meta = {"source": LAB_SOURCE, "task": run.settings.task, "settings": dataclasses.asdict(run.settings),
            "seed": run.settings.seed, "steps": now.step, "total": now.total, "finished": now.finished,
            "learned_at": now.learned_at, "seconds": round(now.seconds, 3),
            "history": [[int(s), float(loss), float(acc)] for s, loss, acc in now.history]}
    return bundle(now.model, run.settings.task_obj.chars, meta)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def open_bundle(data: bytes, name: str) -> LabRun:
    """A Lab run holding the model saved in ``data`` (made by ``save_bundle``), finished as saved, to
    show as this session's model; ``CheckpointError`` says why a file cannot be opened here."""
    from .checkpoint import CheckpointError, load_bundle
    from .runs import state_copy

    ck = load_bundle(data)
    meta = ck.meta
    if meta.get("source") != LAB_SOURCE or not isinstance(meta.get("settings"), dict):
        what = meta.get("corpus") or meta.get("task") or meta.get("source")
        raise CheckpointError("This file holds a model that was not trained in the Attention Lab"
                              + (f" (it was trained on {what!r})" if isinstance(what, str) else "")
                              + ": open it on the page that saved it.")
    saved, defaults = meta["settings"], LabSettings()
    if sorted(saved) != sorted(FIELD_NAMES):
        raise CheckpointError("This file's Lab settings are not the ones this app knows: they should name "
                              f"{', '.join(FIELD_NAMES)}.")
    wrong = [n for n in FIELD_NAMES if type(saved[n]) is not type(getattr(defaults, n))]
    if wrong:
        raise CheckpointError(f"This file's Lab settings have values of the wrong type: {', '.join(wrong)}.")
    settings = LabSettings(**saved)
    problem = settings.problem()
    if problem:
        raise CheckpointError(f"This file's Lab settings are not possible: {explain(problem)}.")
    outside = [f"{f} = {getattr(settings, f)} ({lo} to {hi})" for f, (lo, hi) in CONTROL_RANGES.items()
               if not lo <= getattr(settings, f) <= hi] + ([f"n_embd = {settings.n_embd} (one of {WIDTHS})"]
                                                          if settings.n_embd not in WIDTHS else [])
    if outside:
        raise CheckpointError(f"This file's Lab settings are outside what the controls offer: {', '.join(outside)}.")
    if settings.model_config() != ck.config:
        raise CheckpointError("This file's Lab settings describe another model than its weights: "
                              + ", ".join(runtime_fields(settings.model_config(), ck.config)) + " differ.")
    if ck.chars != settings.task_obj.chars:
        raise CheckpointError(f"This file's vocabulary is not the {settings.task} task's: it cannot be read here.")
    step, total = meta.get("steps"), meta.get("total")
    if not (_whole(step) and _whole(total) and step <= total):
        raise CheckpointError("This file does not say how many steps its model was trained (meta 'steps', 'total').")
    history = meta.get("history")
    if not (isinstance(history, list) and all(
            isinstance(h, list) and len(h) == 3 and _whole(h[0]) and all(isinstance(v, (int, float)) for v in h[1:])
            for h in history)):
        history = []  # the loss curve is not drawn when the file lacks it; everything else is the model's
    learned_at = meta.get("learned_at") if _whole(meta.get("learned_at")) else None
    seconds = meta.get("seconds") if isinstance(meta.get("seconds"), (int, float)) else 0.0
    for p in ck.model.parameters():
        p.requires_grad_(False)
    frozen = TrainedRun(ck.model, step, total, [tuple(h) for h in history], [(step, state_copy(ck.model))],
                        learned_at=learned_at, seconds=float(seconds), finished=meta.get("finished") is True)
    return LabRun(settings, stopped=True, frozen=frozen, opened_from=name)


def opened_text(run: LabRun) -> str:
    """What opening a saved model did, for the page."""
    s, now = run.settings, run.current()
    return (f"Opened **{md_escape(run.opened_from)}**: a model trained {now.step} of {now.total} steps on the "
            f"**{s.task}** task (input length {s.length}, seed {s.seed}), {s.attention} attention, {s.encoding} "
            f"positions, {s.n_layer} layers, {s.n_head} heads, width {s.n_embd}. The controls now show the settings "
            "it was trained with.")


def control_values(settings: LabSettings) -> dict:
    """The page's controls (their keys) set to ``settings``: what restores a run's settings."""
    return {key: getattr(settings, name) for key, (name, _) in URL_CONTROLS.items()}


def pattern_finding(analysis: Analysis, task: Task, text: str) -> Optional[str]:
    """Where the task's pattern is in this model: the head that gives each answer-writing position's
    source token the most attention on average (from the task's own rule, ``Task.sources``)."""
    pairs = [(q, k) for q, k in task.sources(task.tokenizer.encode(text)) if q < len(analysis.tokens)]
    if not pairs:
        return None
    q, k = np.array(pairs).T
    score = analysis.attentions[:, :, q, k].mean(-1)  # (n_layer, nh)
    layer, head = np.unravel_index(int(score.argmax()), score.shape)
    return (f"In this model the clearest head is **layer {layer}, head {head}**: from each position that writes an "
            f"answer token it gives the input token that answer comes from {score[layer, head]:.0%} of its "
            f"attention on average (the mean over all heads is {score.mean():.0%}).")


def compare_row(run: Optional["LabRun"], model: GPT, settings: LabSettings) -> str:
    """One model of a side-by-side comparison, in a line: how far it trained and what it gets right."""
    if run is None or run.current() is None:
        return f"untrained: random weights · {model.num_params():,} parameters"
    now = run.current()
    state = "training…" if run.training else f"trained {now.step} steps"
    return (f"{state} · token accuracy on fresh examples {run.accuracy(model, now.step):.0%} · "
            f"{model.num_params():,} parameters")


def analysis_line(a: "Analysis") -> str:
    right = f"{a.right} of {len(a.expected)} characters right · " if a.expected is not None else ""
    return f"{right}attention FLOPs for this input {a.flops:,.0f} ({a.useful:.0%} inside the causal pattern)"


def watch_ids(task: Task, text: str) -> torch.Tensor:
    """``(1, T)`` ids of an input and its right answer (where the task has one) to watch in training."""
    expected = task.expected(text)
    full = text + task.separator + (expected or "")
    return torch.tensor([task.tokenizer.encode(full[:-1] if expected else full)])


def stack(attentions: list[torch.Tensor]) -> np.ndarray:
    """n_layer tensors (nh, T, T) -> one array (n_layer, nh, T, T)."""
    return torch.stack(attentions).numpy()


def example(settings: LabSettings) -> tuple[str, str]:
    """The default input (and its answer) for these settings: the same for the same seed."""
    gen = torch.Generator().manual_seed(settings.seed)
    return settings.task_obj.sample(gen, settings.length)


def input_to_show(typed: Optional[str], last_example: Optional[str], new_example: str, from_url: bool) -> Optional[str]:
    """The input box follows the task's example until the user types their own: the new example
    when the box still holds the last example (or nothing), else ``None`` (keep what is there). A
    value that came in the link is the user's own."""
    if from_url or new_example == last_example:
        return None
    if typed is None or typed == last_example:
        return new_example
    return None


@dataclass
class InputCheck:
    ok: bool
    message: str = ""  # what is wrong and what to do


def check_input(task: Task, config: ModelConfig, text: str, length: int) -> InputCheck:
    """Validate a user's input before the model sees it."""
    if not text:
        return InputCheck(False, "The input is empty: type a few characters for the model to work on.")
    bad = task.tokenizer.unknown(text)
    if bad:
        shown = " ".join(md_escape(repr(c)) for c in bad[:10]) + (" …" if len(bad) > 10 else "")
        return InputCheck(False, f"The input has characters this task's vocabulary does not know: {shown}. "
                                 f"Use only {describe_chars(task.input_chars)}.")
    limit = length if task.symbolic else config.block_size - 1
    if len(text) > limit:
        return InputCheck(False, f"The input is {len(text)} characters long; this model's context fits at most "
                                 f"{limit}. Shorten it, or raise the length and retrain.")
    return InputCheck(True)


def describe_chars(chars: str) -> str:
    if chars == LETTERS:
        return "lowercase letters a-z"
    if chars.endswith(LETTERS):
        extra = " ".join({" ": "space", ".": "'.'"}.get(c, repr(c)) for c in chars[: -len(LETTERS)])
        return f"lowercase letters a-z, {extra}"
    return repr(chars)


@dataclass
class Analysis:
    tokens: list[str]  # every position's character: input, separator, answer
    attentions: np.ndarray  # (n_layer, nh, T, T) the weights the model applied
    answer: str  # what the model wrote
    probs: list[float]  # the probability it gave each written character
    expected: Optional[str]  # the right answer, where the task has one
    flops: float  # attention FLOPs of one forward pass over the whole sequence
    useful: float  # the share of those FLOPs the causal pattern uses
    ids: list[int]  # the token ids of the whole sequence
    notes: list[str]  # what the kind says about its weights or its window, for this model

    @property
    def right(self) -> Optional[int]:
        if self.expected is None:
            return None
        return sum(a == b for a, b in zip(self.answer, self.expected))


@torch.no_grad()
def analyze(model: GPT, task: Task, text: str) -> Analysis:
    """Generate the answer to ``text`` and read the attention and the residual stream over input +
    answer."""
    prompt = text + task.separator
    if task.symbolic:
        gen = generate(model, task.tokenizer, prompt, task.answer_length(text))
    else:
        room = model.config.block_size - len(prompt)
        gen = generate(model, task.tokenizer, prompt, max(1, room), stop=".")
    ids = gen.ids[: model.config.block_size]
    idx = torch.tensor([ids])
    out = model(idx, need_weights=True)
    cfg = model.config
    kind = ATTENTION[cfg.attention]
    notes = [kind.weights_note] if kind.weights_note else []
    if cfg.attention == "dynamic_window":
        notes.append("Dynamic window: " + dynamic_window_rule(cfg.block_size, cfg.window) + ".")
    return Analysis(
        tokens=list(task.tokenizer.decode(ids)), attentions=stack([w[0] for w in out.attentions]), answer=gen.text,
        probs=gen.probs, expected=task.expected(text), flops=model_attention_flops(cfg, len(ids)),
        useful=useful_fraction(cfg, len(ids)), ids=ids, notes=notes,
    )


@torch.no_grad()
def inside(model: GPT, analysis: Analysis) -> dict:
    """The logit lens over the analysed sequence: the guess and the stream's norm per layer."""
    return logit_lens(model, torch.tensor([analysis.ids]))


GRAD_SEED = 4242  # the fixed batch the gradient view is measured on


def gradient_norms(model: GPT, settings: LabSettings) -> list[float]:
    """Each block's gradient norm for the training loss on a fixed batch of the task, for the model
    as shown (rewound or not), measured on a copy: the shown model is shared and never written to."""
    import copy

    from .residuals import block_grad_norms

    x, y = settings.task_obj.batch(torch.Generator().manual_seed(GRAD_SEED), 64, settings.length)
    return block_grad_norms(copy.deepcopy(model), x, y)


def untrained(settings: LabSettings) -> GPT:
    return build_model(settings.model_config(), settings.seed).eval()
