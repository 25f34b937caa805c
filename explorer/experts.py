"""The Mixture of experts lab: a small model whose feed-forward layers are mixtures of experts,
trained live on a mixture of tasks, beside the same mixture without the balancing loss and a
dense model with the same active parameters.

The task: copy, reverse or sort a string of letters; each sequence says which by its tag, the
character between input and answer (``>`` copy, ``<`` reverse, ``^`` sort). Tokens before the tag
cannot know the task (the model is causal), so the place to look for experts that specialise by task
is the tag and the answer.

Papers: Shazeer et al. 2017; Lepikhin et al. 2020 (GShard); Fedus et al. 2021 (Switch Transformer);
Jiang et al. 2024 (Mixtral).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .config import ModelConfig
from .generate import Generation, generate
from .runs import TurnsJob
from .model import GPT, build_model  # noqa: F401 (build_model: for callers and tests)
from .moe import Routing
from .tasks import IGNORE, LETTERS, TASKS, Task
from .train import TrainConfig, Trainer

TAGS = {"copy": ">", "reverse": "<", "sort": "^"}  # the character that names each task in a sequence
CHARS = LETTERS + "".join(TAGS.values())


@dataclass(frozen=True)
class MixedTask(Task):
    """Sequences ``input tag answer`` where the tag picks the task, drawn evenly."""

    def batch_with_tasks(self, gen: torch.Generator, batch_size: int, length: int):
        """``(x, y, task index per row)``; targets masked to ``IGNORE`` over the input and the tag."""
        tok = self.tokenizer
        names = list(TAGS)
        which = torch.randint(0, len(names), (batch_size,), generator=gen)
        src = torch.randint(0, len(LETTERS), (batch_size, length), generator=gen)
        answers = torch.stack([TASKS[names[int(w)]].make(src[i:i + 1])[0] for i, w in enumerate(which)])
        tags = torch.tensor([tok.stoi[TAGS[names[int(w)]]] for w in which])[:, None]
        seq = torch.cat([src, tags, answers], dim=1)  # (B, 2L + 1)
        x, y = seq[:, :-1], seq[:, 1:].clone()
        y[:, : length] = IGNORE
        return x, y, which

    def batch(self, gen: torch.Generator, batch_size: int, length: int):
        x, y, _ = self.batch_with_tasks(gen, batch_size, length)
        return x, y

    def sample(self, gen: torch.Generator, length: int) -> tuple[str, str]:
        src = torch.randint(0, len(LETTERS), (1, length), generator=gen)
        return self.tokenizer.decode(src[0]), TASKS["copy"].tokenizer.decode(src[0])

    def expected_for(self, text: str, task: str) -> str:
        return TASKS[task].expected(text)


MIXED = MixedTask("mixed", "Copy, reverse or sort", "A string of letters, a tag naming the task (> copy, < reverse, "
                  "^ sort), then the answer.", CHARS, LETTERS, ">", lambda s: s.clone())


@functools.lru_cache(maxsize=64)
def params_of(config: ModelConfig) -> int:
    """Parameters of a model of ``config``, counted without allocating its weights (a pure function
    of the frozen config, remembered: the page asks for it on every rerun)."""
    with torch.device("meta"):
        return GPT(config).num_params()


@dataclass(frozen=True)
class ExpertsSettings:
    n_experts: int = 4  # experts per layer
    top_k: int = 1  # experts per token (1 = Switch, 2 = GShard / Mixtral)
    capacity_factor: float = 1.25  # an expert takes at most ceil(factor * top_k * tokens / experts) tokens
    router_noise: float = 0.0  # std of the noise on the router's logits while training
    aux_weight: float = 0.01  # weight of the balancing loss (Switch Transformer uses 0.01)
    length: int = 8  # letters per input
    n_layer: int = 2  # blocks
    n_embd: int = 64  # width
    steps: int = 600  # training steps of each model
    seed: int = 0  # seeds the weights and the data

    def config(self, ffn: str = "moe", aux_weight: Optional[float] = None) -> ModelConfig:
        """The mixture (``ffn="moe"``), or the dense model with the same active feed-forward
        parameters: its MLP is ``top_k`` experts wide."""
        base = dict(vocab_size=len(CHARS), block_size=2 * self.length + 1, n_layer=self.n_layer,
                    n_embd=self.n_embd, n_head=4, encoding="learned")
        if ffn == "dense":
            return ModelConfig(**base, ffn="dense", mlp_ratio=4 * self.top_k)
        return ModelConfig(**base, ffn="moe", n_experts=self.n_experts, top_k=self.top_k,
                           capacity_factor=self.capacity_factor, router_noise=self.router_noise,
                           aux_weight=self.aux_weight if aux_weight is None else aux_weight)

    def problem(self) -> Optional[str]:
        """Why these settings cannot be trained, in the page's words, or None."""
        if self.top_k > self.n_experts:
            return (f"top-k = {self.top_k} sends each token to more experts than there are ({self.n_experts}): "
                    f"choose top-k ≤ {self.n_experts}")
        try:
            self.config()
        except ValueError as e:
            return str(e)
        return None

    def runs(self) -> dict[str, ModelConfig]:
        """The three models trained together."""
        return {"MoE": self.config(), "MoE, no balancing loss": self.config(aux_weight=0.0),
                "dense (same active parameters)": self.config("dense")}


def url_defaults() -> dict:
    """Every control of the Mixture of experts page at its default (both tabs)."""
    from .funnel import url_defaults as funnel_defaults
    from .residuals import url_defaults as residual_defaults

    d = ExpertsSettings()
    return {"moe_tab": "Experts", "moe_experts": d.n_experts, "moe_top_k": d.top_k, "moe_capacity": d.capacity_factor,
            "moe_noise": d.router_noise, "moe_aux": d.aux_weight, "moe_layers": d.n_layer, "moe_steps": d.steps,
            "moe_seed": d.seed, "moe_layer": 0, "moe_input": None, "moe_task": "copy", **residual_defaults(),
            **funnel_defaults()}


# ---------------------------------------------------------------------------------------------- statistics
def routing_of(model: GPT, x: torch.Tensor) -> list[Routing]:
    """Every layer's routing of the batch ``x`` (eval mode: no router noise)."""
    model.eval()
    with torch.no_grad():
        trace = model(x, capture=["blocks.*.moe.*"]).trace
    return [Routing.from_trace(trace, i) for i in range(model.config.n_layer)]


def load_cv(load: torch.Tensor) -> float:
    """Coefficient of variation of the experts' load (std / mean): 0 when even, √(E−1) when one
    expert takes everything."""
    return float(load.std(unbiased=False) / load.mean())


def probe(length: int, seed: int = 4321, batch_size: int = 128):
    """A fixed held-out batch: ``(x, y, task per row)``."""
    return MIXED.batch_with_tasks(torch.Generator().manual_seed(seed), batch_size, length)


@dataclass
class Record:
    step: int
    seconds: float  # training wall time so far
    train_loss: float  # mean loss of the last steps
    held_out_loss: float  # on the probe batch
    load: Optional[list[list[float]]] = None  # per layer, per expert
    dropped: Optional[float] = None  # fraction of (token, choice) pairs dropped, all layers
    cv: Optional[float] = None  # load's coefficient of variation, mean over layers


@dataclass
class ExpertsRun:
    """Three models trained together, as far as they got."""
    settings: ExpertsSettings
    records: dict[str, list[Record]]
    models: dict[str, GPT]  # copies, never trained further
    step: int
    finished: bool
    params: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (active, total)

    def step_ms(self) -> dict[str, float]:
        """Milliseconds per training step of each model, measured."""
        return {n: 1000 * r[-1].seconds / max(1, r[-1].step) for n, r in self.records.items() if r and r[-1].step}


def active_params(config: ModelConfig) -> int:
    """Parameters one token uses: everything but the experts it is not sent to."""
    from .blocks import FEEDFORWARD

    total = params_of(config)
    if config.ffn != "moe":
        return total
    ffn_all = config.n_layer * (config.n_experts * FEEDFORWARD["dense"].active_params(config) + config.n_embd * config.n_experts)
    return total - ffn_all + config.n_layer * FEEDFORWARD["moe"].active_params(config)


CHECK_EVERY = 25


class ExpertsJob(TurnsJob):
    """Train the three models in turns, a few steps each, recording losses and routing."""

    def __init__(self, settings: ExpertsSettings):
        self.settings = settings
        self.key = ("experts", settings)
        self.title = "training the experts"
        configs = settings.runs()
        self.peak_bytes = sum(16 * params_of(c) + 4 * 40 * 64 * c.block_size * c.n_embd * c.n_layer * c.top_k
                              for c in configs.values()) + 64e6
        self.trainers: dict[str, Trainer] = {}
        self.records: dict[str, list[Record]] = {n: [] for n in configs}
        self._configs = configs
        self._params = {n: (active_params(c), params_of(c)) for n, c in configs.items()}
        self._live: Optional[ExpertsRun] = None
        self._probe = probe(settings.length)

    def _record(self, name: str, tr: Trainer, recent: list[float]) -> None:
        x, y, _ = self._probe
        model = tr.model
        model.eval()
        with torch.no_grad():
            out = model(x, y, capture=["blocks.*.moe.*"] if model.config.ffn == "moe" else None)
        rec = Record(tr.step, tr.seconds, float(np.mean(recent)) if recent else float("nan"), out.loss.item())
        if model.config.ffn == "moe":
            routes = [Routing.from_trace(out.trace, i) for i in range(model.config.n_layer)]
            rec.load = [r.load.tolist() for r in routes]
            rec.dropped = float(np.mean([r.dropped for r in routes]))
            rec.cv = float(np.mean([load_cv(r.load) for r in routes]))
        self.records[name].append(rec)

    def step(self, slice_s: float) -> bool:
        t0 = time.perf_counter()
        s = self.settings
        if not self.trainers:
            for i, (name, cfg) in enumerate(self._configs.items()):
                tc = TrainConfig(steps=s.steps, batch_size=64, lr=3e-3, seed=s.seed)
                self.trainers[name] = Trainer(build_model(cfg, s.seed), MIXED, s.length, tc)
                self._record(name, self.trainers[name], [])
        while time.perf_counter() - t0 < slice_s and not self.finished:
            for name, tr in self.trainers.items():
                if tr.done:
                    continue
                before = len(tr.history)
                tr.advance(CHECK_EVERY - tr.step % CHECK_EVERY)
                self._record(name, tr, [h[1] for h in tr.history[before:]])
        self._publish()
        return self.finished


    def _publish(self) -> None:
        models = {name: copy.deepcopy(tr.model).eval() for name, tr in self.trainers.items()}
        self._live = ExpertsRun(self.settings, {n: list(r) for n, r in self.records.items()}, models,
                                min(tr.step for tr in self.trainers.values()), self.finished, self._params)



# ---------------------------------------------------------------------------------------------- views
def answer(model: GPT, text: str, task: str) -> Generation:
    """The model's greedy answer to ``text`` under ``task``'s tag (raises ``UnknownCharacters`` or
    ``ValueError`` with a message for the page)."""
    return generate(model, MIXED.tokenizer, text + TAGS[task], len(text))


def routing_table(model: GPT, generation: Generation) -> tuple[list[str], np.ndarray]:
    """Tokens of ``input tag answer`` and each layer's router probabilities, (L, T, E)."""
    ids = generation.ids[: model.config.block_size]
    routes = routing_of(model, torch.tensor([ids]))
    return [MIXED.tokenizer.decode([i]) for i in ids], np.stack([r.gates.numpy() for r in routes])


def specialisation(model: GPT, length: int, seed: int = 99) -> np.ndarray:
    """(L, tasks, E): of each task's tag and answer tokens, the fraction whose first choice is each
    expert, on fresh examples."""
    x, _, which = MIXED.batch_with_tasks(torch.Generator().manual_seed(seed), 256, length)
    routes = routing_of(model, x)
    E, T = model.config.n_experts, x.shape[1]
    out = np.zeros((len(routes), len(TAGS), E))
    first = [r.experts[:, 0].view(x.shape[0], T)[:, length:] for r in routes]  # tag and answer positions
    for li, f in enumerate(first):
        for ti in range(len(TAGS)):
            rows = f[which == ti].reshape(-1)
            out[li, ti] = np.bincount(rows.numpy(), minlength=E) / max(1, rows.numel())
    return out


def specialisation_finding(table: np.ndarray) -> str:
    """Whether tasks go to different experts, from the table: the share of a task's tokens that its
    most used expert takes, against an even split."""
    L, n_tasks, E = table.shape
    parts = []
    for li in range(L):
        tops = table[li].max(axis=1)
        favourite = table[li].argmax(axis=1)
        distinct = len(set(favourite.tolist()))
        parts.append(f"layer {li}: each task's favourite expert takes {tops.min():.0%}–{tops.max():.0%} of its "
                     f"tokens (an even split would be {1 / E:.0%}); {distinct} different favourite"
                     f"{'s' if distinct != 1 else ''} for {n_tasks} tasks")
    strong = any(table[li].max(axis=1).min() > 2 / E and len(set(table[li].argmax(axis=1).tolist())) > 1
                 for li in range(L))
    test = (f"(the test: in some layer every task's favourite expert takes more than twice an even share, "
            f"{2 / E:.0%}, and not all tasks share one favourite)")
    verdict = "Experts specialise by task here " if strong else "No clear specialisation by task here "
    return verdict + test + ": " + "; ".join(parts) + "."


def estimate_text(settings: ExpertsSettings, speed: tuple[float, float]) -> str:
    """What pressing Train will cost, from this machine's measured speed (a + b x FLOPs per step):
    the three models' steps, their FLOPs from their active parameters. The routing's own work (a loop
    over experts) is not in the FLOPs."""
    total = 0.0
    for cfg in settings.runs().values():
        T = cfg.block_size
        weights = active_params(cfg) - cfg.block_size * cfg.n_embd  # the position table is looked up, not multiplied
        flops = 3 * 64 * (2 * weights * T + 4 * cfg.n_layer * T * T * cfg.n_embd)
        total += (speed[0] + speed[1] * flops) * settings.steps
    return (f"About {total:.0f} s of training for the three models ({settings.steps} steps each), estimated from "
            f"this server's measured speed (the mixtures' routing is not in it).")


def findings(run: ExpertsRun) -> list[str]:
    """What came out, in sentences computed from the run."""
    names = list(run.records)
    moe, off, dense = names
    last = {n: run.records[n][-1] for n in names}
    ms = run.step_ms()
    out = [f"Held-out loss after {run.step} steps: {moe} {last[moe].held_out_loss:.3f}, {off} "
           f"{last[off].held_out_loss:.3f}, {dense} {last[dense].held_out_loss:.3f} nats."]
    better = last[moe].held_out_loss < last[dense].held_out_loss
    out.append(("The mixture beats the dense model with the same active parameters here, "
                if better else "The dense model with the same active parameters is ahead of the mixture here, ")
               + f"at {ms.get(moe, float('nan')):.0f} ms a step against {ms.get(dense, float('nan')):.0f} ms."
               + ("" if better else " Each expert sees only its share of the tokens; the papers find mixtures ahead "
                  "of dense models with the same compute per token at far larger scale and after far longer "
                  "training (Fedus et al. 2021) than a model trained in a minute here."))
    if last[moe].cv is not None and last[off].cv is not None:
        out.append(f"Load imbalance at the end (coefficient of variation of the experts' load, 0 = even): "
                   f"{last[moe].cv:.2f} with the balancing loss, {last[off].cv:.2f} without"
                   + (": the loss keeps the load more even." if last[moe].cv < last[off].cv else
                      ": here the balancing loss did not make it more even.")
                   + f" Tokens dropped for a full expert: {last[moe].dropped:.1%} and {last[off].dropped:.1%}.")
    return out


# ---------------------------------------------------------------------------------------------- page helpers
CAPACITIES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)  # the page's capacity-factor choices
NOISES = (0.0, 0.1, 0.3, 1.0)  # router noise choices
AUX_WEIGHTS = (0.0, 0.001, 0.01, 0.1)  # balancing-loss weight choices


def params_table(settings: ExpertsSettings) -> dict[str, tuple[int, int]]:
    """(active, total) parameters of each of the three models."""
    return {name: (active_params(c), params_of(c)) for name, c in settings.runs().items()}


def loss_series(run: ExpertsRun) -> dict:
    """Held-out loss against training wall time, per model."""
    return {n: ([round(r.seconds, 2) for r in recs], [r.held_out_loss for r in recs]) for n, recs in run.records.items()}


def cv_series(run: ExpertsRun) -> dict:
    """The load's coefficient of variation over training, for the two mixtures."""
    return {n: ([r.step for r in recs], [r.cv for r in recs]) for n, recs in run.records.items()
            if recs and recs[0].cv is not None}


def load_series(run: ExpertsRun, layer: int, name: str = "MoE") -> dict:
    """Each expert's share of the routed tokens in ``layer`` over training."""
    recs = run.records[name]
    E = len(recs[0].load[layer]) if recs and recs[0].load else 0
    return {f"expert {e}": ([r.step for r in recs], [r.load[layer][e] for r in recs]) for e in range(E)}


def untrained(settings: ExpertsSettings) -> GPT:
    """The mixture before training (the seed's starting weights)."""
    return build_model(settings.config(), settings.seed).eval()


def default_input(settings: ExpertsSettings) -> str:
    return MIXED.sample(torch.Generator().manual_seed(settings.seed), settings.length)[0]


@dataclass
class InputView:
    message: str = ""  # why the input cannot be shown ("" when it can)
    answer: str = ""
    expected: str = ""
    tokens: list = field(default_factory=list)
    gates: Optional[np.ndarray] = None  # (L, T, E)
    chosen: Optional[np.ndarray] = None  # (L, T, k)


def input_view(model: GPT, text: str, task: str, length: int) -> InputView:
    """The model's answer to ``text`` under ``task`` and the routing of every token, or a message."""
    if not text:
        return InputView(f"Type up to {length} lowercase letters.")
    if len(text) > length:
        return InputView(f"The input has {len(text)} letters; these models were trained on {length}: shorten it "
                         f"to at most {length}.")
    if task not in TAGS:
        return InputView(f"Unknown task {task!r}: choose one of {', '.join(TAGS)}.")
    bad = sorted(set(text) - set(LETTERS))
    if bad:
        return InputView(f"These models know lowercase letters a–z only, not {', '.join(repr(c) for c in bad)}: "
                         "remove them.")
    gen = answer(model, text, task)
    ids = gen.ids[: model.config.block_size]
    model.eval()
    with torch.no_grad():
        trace = model(torch.tensor([ids]), capture=["blocks.*.moe.*"]).trace
    routes = [Routing.from_trace(trace, i) for i in range(model.config.n_layer)]
    return InputView("", gen.text, TASKS[task].expected(text), [MIXED.tokenizer.decode([i]) for i in ids],
                     np.stack([r.gates.numpy() for r in routes]), np.stack([r.experts.numpy() for r in routes]))


def specialisation_rows(table: np.ndarray, layer: int) -> list[dict]:
    """The specialisation table of one layer as rows for a data frame (percent)."""
    return [{"task": name, **{f"expert {e}": f"{table[layer, i, e]:.0%}" for e in range(table.shape[2])}}
            for i, name in enumerate(TAGS)]


# ---------------------------------------------------------------------------------------------- benchmark
def train_for(config: ModelConfig, settings: ExpertsSettings, seconds: float) -> dict:
    """Train one model alone for ``seconds`` of wall time; its held-out loss and routing then."""
    tr = Trainer(build_model(config, settings.seed), MIXED, settings.length,
                 TrainConfig(steps=10**6, batch_size=64, lr=3e-3, seed=settings.seed))
    while tr.seconds < seconds:
        tr.advance(CHECK_EVERY)
    x, y, _ = probe(settings.length)
    tr.model.eval()
    with torch.no_grad():
        out = tr.model(x, y, capture=["blocks.*.moe.*"] if config.ffn == "moe" else None)
    row = {"steps": tr.step, "seconds": round(tr.seconds, 2), "ms_per_step": round(1000 * tr.seconds / tr.step, 2),
           "held_out_loss": round(out.loss.item(), 4), "active_params": active_params(config),
           "total_params": params_of(config)}
    if config.ffn == "moe":
        routes = [Routing.from_trace(out.trace, i) for i in range(config.n_layer)]
        row["load_cv"] = round(float(np.mean([load_cv(r.load) for r in routes])), 4)
        row["dropped"] = round(float(np.mean([r.dropped for r in routes])), 4)
        row["dropped_at_capacity"] = {f: round(dropped_at(tr.model, f), 4) for f in (1.0, 1.25)}
    return row


def dropped_at(model: GPT, factor: float, length: int = 8) -> float:
    """Fraction of (token, choice) pairs a trained mixture drops on the probe batch when its experts
    take ``factor`` times a fair share (the same weights read with another capacity factor)."""
    from .model import with_config

    reread = with_config(model, dataclasses.replace(model.config, capacity_factor=factor))
    x, _, _ = probe(length)
    return float(np.mean([r.dropped for r in routing_of(reread, x)]))


def step_ms(config: ModelConfig, T: int, batch: int = 4, repeats: int = 5) -> float:
    """Median milliseconds of one training step (forward, backward, no update) at length ``T``."""
    model = build_model(config, 0).train()
    x = torch.randint(0, config.vocab_size, (batch, T), generator=torch.Generator().manual_seed(0))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        model(x, x).loss.backward()
        if i:
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return 1000 * float(np.median(times))
