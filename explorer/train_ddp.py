"""Data-parallel training on torch.distributed: N workers, one model each, one global batch.

Every worker builds the same seeded model, wraps it in ``DistributedDataParallel`` and trains it
with the project's one ``Trainer`` (``explorer.train``). The data it is given (``RankShard``) draws
the same global batch on every rank (the same generator, the same seed) and hands each rank its
own rows. Each rank's loss is the mean over its rows (every row has ``length`` targets, none
masked), DDP all-reduces the gradients and divides by the number of workers, so each rank's
gradient is the mean over the whole global batch: the step of one process on the global batch,
up to float rounding (the sums are added in another order). Clipping and AdamW then see the same
gradients on every rank, so the replicas stay equal.

Run it as ``python -m explorer.train_ddp --workers 2 --steps 50``: without torchrun's environment
(RANK, WORLD_SIZE, ...) it is a launcher that starts the workers as local processes of itself on
a free port of 127.0.0.1 (the environment torchrun would set), waits for them with a timeout, and
kills every one of them however the run ends. Under ``torchrun`` the same command is one worker,
so it runs across machines unchanged. Backend gloo on CPU, nccl when every local rank has a GPU.

Library: ``DDPSettings``, ``run_local(settings) -> DDPResult`` (raises ``DDPError``: which rank
died, its exit code and the tail of its stderr, or a hang past the timeout), ``single_process``
(the same training in one process on the whole batch), ``compare`` and ``DDPJob`` (the scheduler
job the page runs; Stop kills the workers).

Papers: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training"
(DDP's bucketed all-reduce overlapped with the backward pass); Goyal et al. 2017, "Accurate, Large
Minibatch SGD" (the global batch is what defines the step).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import Tensor

from .config import ModelConfig
from .corpus import Corpus, builtin, from_path
from .jobs import Job, run_to_end
from .model import build_model
from .train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # set by torchrun per worker
FAIL_CODE = 3  # exit code of a worker told to die (--fail-rank, for tests)
WORKER_BYTES = 350e6  # a worker process's own memory (python, torch, the corpus) besides training


class DDPError(RuntimeError):
    """A data-parallel run failed: a worker died or the run hung past its timeout. The message
    says which rank, its exit code and the end of its stderr."""

    def __init__(self, message: str, pids: tuple[int, ...] = (), rank: Optional[int] = None):
        super().__init__(message)
        self.pids = pids  # every worker process started (all ended when this is raised)
        self.rank = rank  # the first rank seen to fail (None for a hang)


class SettingsError(ValueError):
    """Settings that cannot run; the message says which field and why."""


@dataclass(frozen=True)
class DDPSettings:
    workers: int = 2  # local worker processes the launcher starts (under torchrun: ignored, WORLD_SIZE rules)
    steps: int = 50  # optimisation steps
    batch_size: int = 16  # the GLOBAL batch: sequences per step over all workers (each takes batch_size / world)
    length: int = 64  # context: characters per sequence (the model's block size)
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 64  # residual width
    lr: float = 3e-3  # peak learning rate (warm-up, cosine decay: TrainConfig)
    seed: int = 0  # seeds the model's weights and the data stream (the same on every rank)
    timeout_s: float = 300.0  # the launcher kills every worker after this long; also the collectives' timeout
    corpus: str = ""  # path of a UTF-8 text file; "" = the built-in corpus
    fail_rank: int = -1  # testing only: this rank exits with FAIL_CODE after its first step
    hang_rank: int = -1  # testing only: this rank sleeps forever instead of joining the group

    def validate(self, world: Optional[int] = None) -> None:
        world = self.workers if world is None else world
        if world < 1:
            raise SettingsError(f"workers = {world}: at least one worker is needed")
        if self.steps < 1:
            raise SettingsError(f"steps = {self.steps}: train at least one step")
        if self.batch_size < world or self.batch_size % world:
            raise SettingsError(f"batch_size = {self.batch_size}: the global batch is split evenly over the "
                                f"{world} workers, so it must be a multiple of {world}")
        if self.timeout_s <= 0:
            raise SettingsError(f"timeout_s = {self.timeout_s}: must be positive")
        if self.corpus and not Path(self.corpus).is_file():
            raise SettingsError(f"corpus = {self.corpus!r}: no such file (give a UTF-8 text file, or none for the "
                                "built-in corpus)")

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, block_size=self.length, n_layer=self.n_layer,
                           n_head=self.n_head, n_embd=self.n_embd)

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           warmup=min(30, max(1, self.steps // 10)), seed=self.seed)

    def load_corpus(self) -> Corpus:
        return from_path(self.corpus) if self.corpus else builtin()


@dataclass(frozen=True)
class RankShard:
    """The data a rank trains on: the global batch, drawn the same on every rank, this rank's rows."""
    corpus: Corpus
    rank: int
    world: int
    device: torch.device = torch.device("cpu")

    symbolic = False  # a Task's flag (a corpus has no answer rule)

    def batch(self, gen: torch.Generator, batch_size: int, length: int, split: str = "train") -> tuple[Tensor, Tensor]:
        """``batch_size`` is the global batch; returns this rank's ``(x, y)``, each ``(batch_size / world, length)``."""
        x, y = self.corpus.batch(gen, batch_size, length, split)  # (B, L): the whole global batch
        per = batch_size // self.world
        rows = slice(self.rank * per, (self.rank + 1) * per)
        return x[rows].to(self.device), y[rows].to(self.device)


@dataclass(frozen=True)
class WorkerStats:
    rank: int
    host: str  # the machine it ran on
    device: str  # "cpu" or "cuda:N"
    steps: int
    step_s: float  # mean wall time of its steps after the first (the first builds DDP's buckets)
    tokens_per_s: float  # its own rows' tokens per second: (batch_size / world) * length / step_s


@dataclass
class DDPResult:
    settings: DDPSettings
    world: int  # workers that trained
    backend: str  # "gloo" or "nccl"
    workers: list  # WorkerStats, by rank
    final_loss: float  # mean loss of the last step over the global batch
    checksum: str  # sha256 of every parameter's float32 bytes, in name order
    state_dict: dict = field(repr=False)  # the trained parameters (rank 0's; all ranks hold the same)
    wall_s: float = 0.0  # launch to finish, process start-up included

    @property
    def tokens_per_s(self) -> float:
        """All workers together."""
        return sum(w.tokens_per_s for w in self.workers)

    @property
    def step_s(self) -> float:
        """The slowest worker's mean step time (every step waits for it in the all-reduce)."""
        return max(w.step_s for w in self.workers)


@dataclass
class Comparison:
    settings: DDPSettings
    parallel: DDPResult  # settings.workers workers
    single: DDPResult  # one worker (a one-process DDP run): the throughput baseline
    max_abs_diff: float  # largest |parameter of the N-worker run - same parameter of single_process|
    cores: int  # cores this machine lets us use
    load: float  # the machine's 1-minute load average right after the workers' run (other work competing)
    findings: list = field(default_factory=list)  # sentences, computed from the numbers above

    @property
    def speedup(self) -> float:
        return self.parallel.tokens_per_s / self.single.tokens_per_s


# ---------------------------------------------------------------------------------------------- the worker
def checksum(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def cpu_state(model: torch.nn.Module) -> dict:
    """Parameters as separate CPU tensors (safetensors refuses the tied embedding's shared storage)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}


def pick_device(local_rank: int, local_world: int) -> tuple[str, torch.device]:
    """nccl on this rank's GPU when every local rank has one, else gloo on the CPU."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world:
        return "nccl", torch.device("cuda", local_rank)
    return "gloo", torch.device("cpu")


def worker(settings: DDPSettings, json_path: Optional[Path], params_path: Optional[Path]) -> None:
    """One rank, from torchrun's environment: train, then rank 0 writes the JSON result and the
    parameters (safetensors)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    settings.validate(world)
    backend, device = pick_device(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if rank == settings.hang_rank:  # never joins: the others wait for it in the rendezvous
        print(f"rank {rank}: hanging on purpose (--hang-rank)", file=sys.stderr, flush=True)
        while True:
            time.sleep(60)
    dist.init_process_group(backend, timeout=timedelta(seconds=settings.timeout_s))
    try:
        corpus = settings.load_corpus()
        model = build_model(settings.model_config(corpus.vocab_size), settings.seed).to(device)
        ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        trainer = Trainer(ddp, RankShard(corpus, rank, world, device), settings.length, settings.train_config())
        trainer.advance(1)  # the first step: DDP builds its gradient buckets
        first_s = trainer.seconds
        if rank == settings.fail_rank:
            print(f"rank {rank}: failing on purpose (--fail-rank)", file=sys.stderr, flush=True)
            os._exit(FAIL_CODE)
        report = Path(os.environ["TE_DDP_PROGRESS"]) if rank == 0 and "TE_DDP_PROGRESS" in os.environ else None
        while not trainer.done:
            trainer.advance(max(1, settings.steps // 20))
            if report is not None:
                tmp = report.with_suffix(".tmp")
                tmp.write_text(str(trainer.step))
                tmp.replace(report)
        timed = trainer.step - 1
        step_s = (trainer.seconds - first_s) / timed if timed else first_s
        tokens = settings.batch_size // world * settings.length
        mine = WorkerStats(rank, socket.gethostname(), str(device), trainer.step, step_s, tokens / step_s)
        loss = torch.tensor([trainer.history[-1][1]], device=device)
        dist.all_reduce(loss)  # each rank's loss is the mean over its rows: their mean is the global batch's
        stats = [None] * world
        dist.all_gather_object(stats, dataclasses.asdict(mine))
        if rank == 0:
            state = cpu_state(model)
            report_result(settings, world, backend, stats, float(loss) / world, state, json_path, params_path)
        # every rank leaves together: a rank that tears down its connections while a peer still holds
        # its end open made gloo's background thread abort the peer ("terminate called without an
        # active exception", SIGABRT): 3 failed runs in about 8 of the DDP tests under load, on this machine
        dist.barrier()
        # DDP's reducer holds the process group: while it lives, destroy_process_group only forgets the
        # group, and gloo's threads are torn down later, in the interpreter's own teardown (see main)
        del trainer, ddp
        gc.collect()
    finally:
        dist.destroy_process_group()


def report_result(settings, world, backend, stats, loss, state, json_path, params_path, **extra) -> dict:
    """Save the parameters (safetensors) and the JSON result; print and return the result."""
    from safetensors.torch import save_file

    data = {"settings": dataclasses.asdict(settings), "world": world, "backend": backend, "workers": stats,
            "final_loss": loss, "checksum": checksum(state),
            "params": str(params_path) if params_path else None, **extra}
    if params_path is not None:
        save_file(state, str(params_path))
    if json_path is not None:
        json_path.write_text(json.dumps(data, indent=1))
    print(summary(data), flush=True)
    return data


def summary(data: dict) -> str:
    lines = [f"{data['world']} worker(s), backend {data['backend']}, {data['settings']['steps']} steps, "
             f"global batch {data['settings']['batch_size']} x {data['settings']['length']}"]
    for w in data["workers"]:
        lines.append(f"  rank {w['rank']} on {w['host']} ({w['device']}): {w['step_s'] * 1e3:.1f} ms/step, "
                     f"{w['tokens_per_s']:,.0f} tokens/s")
    lines.append(f"  all workers: {sum(w['tokens_per_s'] for w in data['workers']):,.0f} tokens/s; "
                 f"final loss {data['final_loss']:.4f}; parameter sha256 {data['checksum'][:16]}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- the launcher
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def to_argv(settings: DDPSettings) -> list[str]:
    return [a for f in dataclasses.fields(settings)
            for a in (f"--{f.name.replace('_', '-')}", str(getattr(settings, f.name)))]


def tail(path: Path, lines: int = 8) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


class LocalRun:
    """``settings.workers`` worker processes on this machine, started at once, never left running:
    ``poll`` says whether they finished (raising ``DDPError`` if one died or the timeout passed,
    after killing them all), ``close`` kills them. Each worker leads its own process group, so
    killing the group also ends anything it started."""

    def __init__(self, settings: DDPSettings):
        settings.validate()
        self.settings = settings
        self._dir = tempfile.TemporaryDirectory(prefix="te-ddp-")
        self.dir = Path(self._dir.name)
        self.json_path, self.params_path = self.dir / "result.json", self.dir / "params.safetensors"
        self.progress_path = self.dir / "progress"
        port = free_port()
        self.started = time.monotonic()
        self.procs: list[subprocess.Popen] = []
        try:
            for rank in range(settings.workers):
                env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(settings.workers), LOCAL_RANK=str(rank),
                           LOCAL_WORLD_SIZE=str(settings.workers), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                           OMP_NUM_THREADS="1", TE_DDP_PROGRESS=str(self.progress_path))
                cmd = [sys.executable, "-m", "explorer.train_ddp", *to_argv(settings),
                       "--json", str(self.json_path), "--params", str(self.params_path)]
                with open(self.dir / f"rank{rank}.out", "wb") as out, open(self.dir / f"rank{rank}.err", "wb") as err:
                    self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                                       stderr=err, start_new_session=True))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.procs)

    def step(self) -> int:
        """Steps rank 0 has reported so far."""
        try:
            return int(self.progress_path.read_text())
        except (OSError, ValueError):
            return 0

    def poll(self, wait_s: float = 0.0) -> bool:
        """True once every worker exited cleanly; raises ``DDPError`` (all workers killed) if one
        failed or the timeout passed."""
        deadline = time.monotonic() + wait_s
        while True:
            codes = [p.poll() for p in self.procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                self.close()
                parts = [f"rank {r} exited with code {codes[r]}" + self._why(codes[r]) + ":\n" +
                         (tail(self.dir / f"rank{r}.err") or "(no stderr)") for r in failed]
                raise DDPError(f"a worker died: {parts[0]}" + "".join(f"\nalso {p}" for p in parts[1:]),
                               self.pids, failed[0])
            if all(c == 0 for c in codes):
                return True
            elapsed = time.monotonic() - self.started
            if elapsed > self.settings.timeout_s:
                running = [r for r, c in enumerate(codes) if c is None]
                self.close()
                last = "".join(f"\nrank {r}'s last stderr: " + (tail(self.dir / f"rank{r}.err", 2) or "(none)")
                               for r in running)
                raise DDPError(f"the run hung: rank(s) {', '.join(map(str, running))} were still running after "
                               f"{self.settings.timeout_s:g} s (rank 0 had reported step {self.step()} of "
                               f"{self.settings.steps}); all workers were killed. Raise timeout_s if the run is "
                               "just slow." + last, self.pids)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    @staticmethod
    def _why(code: int) -> str:
        if code < 0:
            return f" (killed by signal {signal.Signals(-code).name})"
        return " (told to fail by --fail-rank)" if code == FAIL_CODE else ""

    def result(self) -> DDPResult:
        from safetensors.torch import load_file  # our own file, written by rank 0: never pickle

        data = json.loads(self.json_path.read_text())
        return DDPResult(self.settings, data["world"], data["backend"], [WorkerStats(**w) for w in data["workers"]],
                         data["final_loss"], data["checksum"], load_file(str(self.params_path)),
                         time.monotonic() - self.started)

    def close(self) -> None:
        """Kill every worker (and its process group) and reap it; remove the run's files."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for p in self.procs:
            p.wait()


def run_local(settings: DDPSettings) -> DDPResult:
    """Launch ``settings.workers`` local workers, wait, collect; ``DDPError`` if one died or hung."""
    run = LocalRun(settings)
    try:
        while not run.poll(wait_s=1.0):
            pass
        return run.result()
    finally:
        run.close()
        run._dir.cleanup()


def single_process(settings: DDPSettings) -> dict:
    """The same training in this process, no DDP, on the whole global batch: the reference."""
    trainer = _single_trainer(settings)
    trainer.run()
    return cpu_state(trainer.model)


def _single_trainer(settings: DDPSettings) -> Trainer:
    corpus = settings.load_corpus()
    model = build_model(settings.model_config(corpus.vocab_size), settings.seed)
    return Trainer(model, corpus, settings.length, settings.train_config())


def max_abs_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def findings(c: Comparison) -> list[str]:
    """What the numbers say, in sentences (every figure from the runs)."""
    n, s = c.settings.workers, c.settings
    out = []
    faster = c.speedup >= 1.0
    verdict = ("about the same" if abs(c.speedup - 1) < 0.05 else "faster" if faster else "slower")
    out.append(f"{n} workers trained {c.parallel.tokens_per_s:,.0f} tokens/s together against "
               f"{c.single.tokens_per_s:,.0f} for one worker: {c.speedup:.2f}x the throughput "
               f"({verdict}; the ideal is {n}x).")
    per = s.batch_size // n
    out.append(f"Each worker's step on its {per} of the {s.batch_size} sequences took {c.parallel.step_s * 1e3:.1f} ms "
               f"(the slowest rank) against {c.single.step_s * 1e3:.1f} ms for one worker on all {s.batch_size}: "
               "a step is the compute on a worker's share plus the gradient all-reduce, which every rank waits for.")
    if c.load > c.cores:
        out.append(f"While the workers ran, this machine's load average was {c.load:.1f} on {c.cores} core(s): "
                   "other work competed for the cores, so these times are noisy.")
    if n > c.cores:
        out.append(f"This machine lets us use {c.cores} core(s) for {n} workers, so workers share cores and "
                   "cannot all compute at once: the speed-up is capped here, not by data parallelism.")
    if not faster:
        grads = sum(t.numel() for t in c.parallel.state_dict.values()) * 4
        out.append(f"Why not faster: each of the {n} workers computes only {per} of the {s.batch_size} sequences, "
                   f"but every step it also sends and receives its gradients ({grads / 1e6:.2f} MB of float32 for this model) "
                   "through gloo over local sockets and waits for the slowest worker. A model this small computes "
                   "its share in little time, so those fixed costs weigh more than the compute saved; data "
                   "parallelism pays when each worker's compute is large against the gradients it exchanges.")
    out.append(f"After {s.steps} steps the parameters differ from one-process training on the same global batch by "
               f"at most {c.max_abs_diff:.2g}: the same step, up to float32 rounding (the all-reduce adds the "
               "workers' gradients in another order than one process sums its batch).")
    return out


# The Training page's controls: URL key -> DDPSettings field, and their choices.
PAGE_CONTROLS = {"tr_ddp_workers": "workers", "tr_ddp_steps": "steps", "tr_ddp_batch": "batch_size"}
WORKER_RANGE = (1, 4)
STEP_CHOICES = (10, 20, 50, 100, 200)
BATCH_CHOICES = (4, 6, 8, 12, 16, 24, 32, 48, 64)  # global batches (some do not divide over 3 or 4 workers)


def url_defaults() -> dict:
    d = DDPSettings()
    return {key: getattr(d, name) for key, name in PAGE_CONTROLS.items()}


def command_lines(settings: DDPSettings) -> dict[str, str]:
    """The shell commands that run ``settings`` outside the app: the launcher (local workers on
    127.0.0.1) and torchrun (one machine here; add ``--nnodes`` and a rendezvous endpoint for more).
    Fields at their defaults are left out, ``--workers`` is always given to the launcher."""
    default = DDPSettings()
    given = [a for f in dataclasses.fields(settings) if f.name not in ("workers", "fail_rank", "hang_rank")
             and getattr(settings, f.name) != getattr(default, f.name)
             for a in (f"--{f.name.replace('_', '-')}", str(getattr(settings, f.name)))]
    args = " ".join(given)
    return {"launcher": f"python -m explorer.train_ddp --workers {settings.workers} {args}".rstrip(),
            "torchrun": f"torchrun --standalone --nproc-per-node {settings.workers} -m explorer.train_ddp {args}".rstrip()}


class DDPJob(Job):
    """The page's comparison as a scheduler job: ``settings.workers`` workers, then one worker
    (the throughput baseline), then the same training in one process (the parameter reference),
    giving a ``Comparison``. The workers are separate processes (their own cores); the scheduler's
    slice only watches them. Stop (the last holder's release) ends the job at the end of a slice,
    and ``close`` kills every worker."""

    def __init__(self, settings: DDPSettings):
        settings.validate()
        self.settings = settings
        self.key = ("ddp", settings)
        self.title = f"data-parallel training, {settings.workers} workers"
        corpus_chars = 256  # the largest vocabulary a corpus may have (the peak is an upper bound)
        from .runs import training_peak_bytes
        one = training_peak_bytes(settings.model_config(corpus_chars), settings.batch_size, settings.length)
        self.peak_bytes = (settings.workers + 1) * (WORKER_BYTES + one)
        self._phases = self._work()
        self._run: Optional[LocalRun] = None
        self._status = (0.0, "starting")
        self._result: Optional[Comparison] = None

    def _work(self) -> Iterator[None]:
        s = self.settings
        results = {}
        counts = [s.workers] + ([1] if s.workers != 1 else [])
        for i, n in enumerate(counts):
            self._run = LocalRun(dataclasses.replace(s, workers=n))
            try:
                while not self._run.poll():
                    self._status = ((i + self._run.step() / s.steps) / (len(counts) + 1),
                                    f"{n} worker(s): step {self._run.step()}/{s.steps}")
                    yield
                results[n] = self._run.result()
                if n == s.workers:
                    load = os.getloadavg()[0]
            finally:
                self.close()
        trainer = _single_trainer(s)
        while not trainer.done:
            trainer.advance(max(1, s.steps // 20))
            self._status = ((len(counts) + trainer.step / s.steps) / (len(counts) + 1),
                            f"one process: step {trainer.step}/{s.steps}")
            yield
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        c = Comparison(s, results[s.workers], results[1], max_abs_diff(results[s.workers].state_dict,
                                                                        cpu_state(trainer.model)), cores, load)
        c.findings = findings(c)
        self._result = c
        self._status = (1.0, "done")

    def step(self, slice_s: float) -> bool:
        t0 = time.monotonic()
        for _ in self._phases:
            if time.monotonic() - t0 >= slice_s:
                return False
            time.sleep(0.02)  # the workers compute; this thread only watches
        return True

    def result(self) -> Optional[Comparison]:
        return self._result

    def live(self) -> Optional[Comparison]:
        """What a page shows of it now (the comparison once every run finished, else None)."""
        return self._result

    def progress(self) -> tuple[float, str]:
        return self._status

    def close(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.close()
            run._dir.cleanup()


def compare(settings: DDPSettings) -> Comparison:
    """N workers against one, and against one process: throughput and parameter difference."""
    job = DDPJob(settings)
    try:
        return run_to_end(job)
    finally:
        job.close()


# ---------------------------------------------------------------------------------------------- command line
def parse(argv: Optional[list[str]] = None) -> tuple[DDPSettings, Optional[Path], Optional[Path]]:
    parser = argparse.ArgumentParser(prog="python -m explorer.train_ddp", description=__doc__.split("\n\n")[0])
    hidden = ("fail_rank", "hang_rank")
    for f in dataclasses.fields(DDPSettings):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                            help=argparse.SUPPRESS if f.name in hidden else f"default {f.default!r}")
    parser.add_argument("--timeout", dest="timeout_s", type=float, help=argparse.SUPPRESS)  # short for --timeout-s
    parser.add_argument("--json", type=Path, help="rank 0 writes the result here (per-worker throughput, loss, ...)")
    parser.add_argument("--params", type=Path, help="rank 0 saves the trained parameters here (safetensors)")
    args = vars(parser.parse_args(argv))
    json_path, params_path = args.pop("json"), args.pop("params")
    if args["timeout_s"] is None:
        args["timeout_s"] = DDPSettings.timeout_s
    if json_path is not None and params_path is None:
        params_path = json_path.with_suffix(".safetensors")
    return DDPSettings(**args), json_path, params_path


def main(argv: Optional[list[str]] = None) -> int:
    settings, json_path, params_path = parse(argv)
    try:
        if all(k in os.environ for k in TORCHRUN_ENV):
            worker(settings, json_path, params_path)
            # leave without the interpreter's teardown: gloo's threads, still alive in a rank whose peers
            # had gone, aborted it there (SIGABRT, 'terminate called without an active exception') in
            # 1 of 48 runs with four launches at once on 2 cores (0 of 160 since), after the result was written
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        result = run_local(settings)
    except (DDPError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    report_result(settings, result.world, result.backend, [dataclasses.asdict(w) for w in result.workers],
                  result.final_loss, result.state_dict, json_path, params_path, wall_s=result.wall_s)
    print(f"  wall time {result.wall_s:.1f} s (process start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
