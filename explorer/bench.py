"""Benchmarks, from the command line (no browser).

    python -m explorer.bench lab [--json results.json]
    python -m explorer.bench complexity --max-n 16384 --json results.json [--heads 4 --width 64 ...]
    python -m explorer.bench extrapolation --task copy --train-len 16 --json results.json [--steps 400 ...]

``lab``: the Attention Lab's figures: how long ``reverse`` (length 16) takes to reach 99% token
accuracy at the page's default settings, and (through ``scripts/bench_page.py``, which runs the
page with streamlit's AppTest in a separate process: this library never imports streamlit) the
server time of a control change and the redraw rate while training.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def device_name() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def time_to_accuracy(target: float = 0.99, task_name: str = "reverse", length: int = 16, check_every: int = 25) -> dict:
    """Train at the lab's default settings (as the page's Train button does); report training wall time (evaluation excluded) until
    fresh-example token accuracy reaches ``target``."""
    from .lab import LabSettings
    from .model import build_model
    from .tasks import TASKS
    from .train import Trainer, evaluate

    settings = LabSettings(task=task_name, length=length)
    model = build_model(settings.model_config(), settings.seed)
    trainer = Trainer(model, TASKS[task_name], length, settings.train_config())
    curve = []
    while not trainer.done:
        trainer.run(steps=check_every, every=10**9)
        acc = evaluate(model, TASKS[task_name], length, batches=2)["accuracy"]
        curve.append((trainer.step, round(trainer.seconds, 2), round(acc, 4)))
        if acc >= target:
            break
    return {"task": task_name, "length": length, "target": target, "reached": curve[-1][2] >= target,
            "steps": trainer.step, "train_seconds": round(trainer.seconds, 2), "curve": curve}


def bench_lab(args) -> dict:
    result = {"device": device_name(), "reverse_to_99": time_to_accuracy()}
    print(f"reverse (length 16) reached {result['reverse_to_99']['curve'][-1][2]:.2%} after "
          f"{result['reverse_to_99']['steps']} steps, {result['reverse_to_99']['train_seconds']} s of training")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_page.py")], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    page = json.loads(out.stdout[out.stdout.index("{"):])
    result["page"] = page
    print(f"control change (no training): median {page['control_change_ms_median']} ms, "
          f"max {page['control_change_ms_max']} ms of server time")
    print(f"redraws while training: {page['redraws_per_second']} per second "
          f"(median interval {page['redraw_interval_s_median']} s, max {page['redraw_interval_s_max']} s)")
    return result


def bench_complexity(args) -> dict:
    from .measure import KINDS, SweepSettings, summary, sweep

    settings = SweepSettings(
        kinds=tuple(args.kinds.split(",")) if args.kinds else KINDS, min_n=args.min_n, max_n=args.max_n,
        n_embd=args.width, n_head=args.heads, window=args.window, pass_=args.pass_, repeats=args.repeats,
        time_budget_s=args.time_budget, memory_budget_bytes=args.memory_budget * 1e9, threads=args.threads,
    )
    result = sweep(settings, device=args.device,
                   progress=lambda f, what: print(f"  {f:5.0%}  {what}", file=sys.stderr, flush=True))
    print(f"device: {result.device}; {settings.pass_} pass, width {settings.n_embd}, {settings.n_head} heads, "
          f"window {settings.window}; median of {settings.repeats} after a warm-up; {result.seconds:.1f} s in all")
    print(f"{'kind':<16}{'N':>8}{'ms':>12}{'peak MB':>12}")
    for r in result.rows:
        print(f"{r.kind:<16}{r.n:>8}{r.ms:>12.3f}{r.peak_bytes / 1e6:>12.2f}")
    for sk in result.skipped:
        print(f"{sk.kind:<16}{sk.n:>8}   skipped: {sk.reason}")
    print(f"\n{'kind':<16}{'time slope':>12}{'memory slope':>14}{'crossover N':>14}   (slopes fitted on N >= 1024)")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for row in summary(result):
        print(f"{row['kind']:<16}{fmt(row['time_slope'], '.2f'):>12}{fmt(row['memory_slope'], '.2f'):>14}"
              f"{fmt(row['crossover_vs_softmax'], ',.0f'):>14}")
    out = result.to_json()
    out["summary"] = summary(result)
    return out


def bench_extrapolation(args) -> dict:
    from .extrapolation import ExtrapolationSettings, run

    settings = ExtrapolationSettings(
        task=args.task, train_len=args.train_len, steps=args.steps, seed=args.seed,
        encodings=tuple(args.encodings.split(",")) if args.encodings else ExtrapolationSettings.encodings,
    )
    result = run(settings, progress=lambda f, what: print(f"  {f:5.0%}  {what}", file=sys.stderr, flush=True))
    print(f"task {settings.task}, trained on lengths {max(1, settings.train_len // 2)}-{settings.train_len}, "
          f"{settings.steps} steps per model; {result.seconds:.1f} s in all")
    lens = [settings.train_len * f for f in settings.factors]
    print(f"{'encoding':<12}" + "".join(f"{'acc@' + str(n):>12}" for n in lens))
    for e in settings.encodings:
        cells = [result.accuracy(e, n) for n in lens]
        print(f"{e:<12}" + "".join(f"{'n/a' if c is None else format(c, '.1%'):>12}" for c in cells))
    return result.to_json()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m explorer.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    lab = sub.add_parser("lab", help="the Attention Lab's speed and learning figures")
    lab.add_argument("--json", help="also write the results here")
    cx = sub.add_parser("complexity", help="attention time and peak memory against sequence length")
    cx.add_argument("--max-n", type=int, default=16384)
    cx.add_argument("--min-n", type=int, default=128)
    cx.add_argument("--kinds", help="comma-separated, from softmax,sliding_window,dynamic_window,block_sparse,linear,sdpa")
    cx.add_argument("--width", type=int, default=64, help="total width d of all heads")
    cx.add_argument("--heads", type=int, default=4)
    cx.add_argument("--window", type=int, default=128)
    cx.add_argument("--pass", dest="pass_", default="forward", choices=["forward", "forward+backward"])
    cx.add_argument("--repeats", type=int, default=3)
    cx.add_argument("--time-budget", type=float, default=15.0, help="seconds per point before it is skipped")
    cx.add_argument("--memory-budget", type=float, default=3.0, help="GB per point before it is skipped")
    cx.add_argument("--threads", type=int, default=0, help="torch threads (0 = every core)")
    cx.add_argument("--device", default="cpu")
    cx.add_argument("--json", help="also write the results here")
    ex = sub.add_parser("extrapolation", help="train short, test long: accuracy at 1x, 2x, 4x the training length")
    ex.add_argument("--task", default="copy")
    ex.add_argument("--train-len", type=int, default=16)
    ex.add_argument("--steps", type=int, default=400)
    ex.add_argument("--encodings", help="comma-separated, from none,sinusoidal,learned,rope,alibi")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    result = {"lab": bench_lab, "complexity": bench_complexity, "extrapolation": bench_extrapolation}[args.what](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
