"""Benchmarks, from the command line (no browser).

    python -m explorer.bench lab [--json results.json]

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
import time
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m explorer.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    lab = sub.add_parser("lab", help="the Attention Lab's speed and learning figures")
    lab.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    result = {"lab": bench_lab}[args.what](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
