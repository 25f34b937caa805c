"""Benchmarks, from the command line (no browser): one subcommand per page's headline figure.

    python -m explorer.bench lab [--json results.json]
    python -m explorer.bench complexity --max-n 16384 --json results.json [--heads 4 --width 64 ...]
    python -m explorer.bench extrapolation --task copy --train-len 8 --json results.json [--max-steps ...]
    python -m explorer.bench moe --seconds 30 --json results.json [--experts 4 --top-k 1]
    python -m explorer.bench multimodal --json results.json [--fusions cross early --steps 1500]
    python -m explorer.bench memory --json results.json [--contexts 64 128 256 512 1024 --new-tokens 32]
    python -m explorer.bench incontext --json results.json [--threads 1 --seed 0 --fewshot-steps 1500]
    python -m explorer.bench charlm --json results.json [--corpus tinyshakespeare.txt --threads 1 --quick]
    python -m explorer.bench training --json results.json [--threads 1 --workers 2 --quick]
    python -m explorer.bench safeguards --json results.json [--threads 1 --quick --only uncertainty bias]

``lab``: the Attention Lab's figures: how long ``reverse`` (length 16) takes to reach 99% token
accuracy at the page's default settings, and (through ``scripts/bench_page.py``, which runs the
page with streamlit's AppTest in a separate process: this library never imports streamlit) the
server time of a control change and the redraw rate while training.

Every choice list and default below is read from the registries and the settings dataclasses.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

from .registry import Registry

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]  # adds the subcommand's options
    run: Callable[[argparse.Namespace], dict]  # the figures, as JSON-ready data (also printed)


BENCHES: Registry[Bench] = Registry("benchmark")


def device_name() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def defaults(cls) -> dict:
    """A settings dataclass's defaults, by field name."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


# ---------------------------------------------------------------------------------------------- lab
def time_to_accuracy(target: float = 0.99, task_name: str = "reverse", length: int = 16, check_every: int = 25) -> dict:
    """Train at the lab's default settings (as the page's Train button does); report training wall time
    (evaluation excluded) until fresh-example token accuracy reaches ``target``."""
    from .lab import LabSettings
    from .model import build_model
    from .tasks import TASKS
    from .train import Trainer, evaluate

    settings = LabSettings(task=task_name, length=length)
    model = build_model(settings.model_config(), settings.seed)
    trainer = Trainer(model, TASKS[task_name], length, settings.train_config())
    curve = []
    while not trainer.done:
        trainer.advance(check_every)
        acc = evaluate(model, TASKS[task_name], length, batches=2)["accuracy"]
        curve.append((trainer.step, round(trainer.seconds, 2), round(acc, 4)))
        if acc >= target:
            break
    return {"task": task_name, "length": length, "target": target, "reached": curve[-1][2] >= target,
            "steps": trainer.step, "train_seconds": round(trainer.seconds, 2), "curve": curve}


def _lab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repeats", type=int, default=3, help="control changes of each kind (page part)")


def _lab(args) -> dict:
    result = {"device": device_name(), "reverse_to_99": time_to_accuracy()}
    r = result["reverse_to_99"]
    print(f"reverse (length 16) reached {r['curve'][-1][2]:.2%} after {r['steps']} steps, "
          f"{r['train_seconds']} s of training")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_page.py"), "--repeats", str(args.repeats)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    page = json.loads(out.stdout[out.stdout.index("{"):])
    result["page"] = page
    print(f"control change (no training): median {page['control_change_ms_median']} ms, "
          f"max {page['control_change_ms_max']} ms of server time")
    print(f"Train click to learned (the page's defaults): {page['train_to_learned_s']} s, learned at step "
          f"{page['learned_at']}")
    return result


BENCHES.add("lab", Bench("lab", "the Attention Lab's speed and learning figures", _lab_args, _lab))


# ---------------------------------------------------------------------------------------------- complexity
def _complexity_args(p: argparse.ArgumentParser) -> None:
    from .measure import PASSES, SweepSettings, all_kinds

    d = defaults(SweepSettings)
    p.add_argument("--max-n", type=int, default=d["max_n"])
    p.add_argument("--min-n", type=int, default=d["min_n"])
    p.add_argument("--kinds", help=f"comma-separated, from: {', '.join(all_kinds())} (default: all)")
    p.add_argument("--width", type=int, default=d["n_embd"], help="total width d of all heads")
    p.add_argument("--heads", type=int, default=d["n_head"])
    p.add_argument("--window", type=int, default=d["window"])
    p.add_argument("--pass", dest="pass_", default=d["pass_"], choices=list(PASSES))
    p.add_argument("--repeats", type=int, default=d["repeats"])
    p.add_argument("--time-budget", type=float, default=d["time_budget_s"], help="seconds per point before it is skipped")
    p.add_argument("--memory-budget", type=float, default=d["memory_budget_bytes"] / 1e9,
                   help="GB per point before it is skipped")
    p.add_argument("--threads", type=int, default=0, help="torch threads of this process (0 = every core)")
    p.add_argument("--device", default="cpu")


def _complexity(args) -> dict:
    import os

    from .measure import SweepSettings, all_kinds, causal_skip_ratio, summary, sweep

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    settings = SweepSettings(
        kinds=tuple(args.kinds.split(",")) if args.kinds else all_kinds(), min_n=args.min_n, max_n=args.max_n,
        n_embd=args.width, n_head=args.heads, window=args.window, pass_=args.pass_, repeats=args.repeats,
        time_budget_s=args.time_budget, memory_budget_bytes=args.memory_budget * 1e9,
    )
    result = sweep(settings, device=args.device,
                   progress=lambda f, what: print(f"  {f:5.0%}  {what}", file=sys.stderr, flush=True))
    if "sdpa" in settings.kinds and args.device == "cpu":
        result.sdpa_causal = causal_skip_ratio(min(4096, settings.max_n), settings.n_embd, settings.n_head)
    print(f"device: {result.device}; {settings.pass_} pass, width {settings.n_embd}, {settings.n_head} heads, "
          f"window {settings.window}; median of {settings.repeats}+ after a warm-up; {result.seconds:.1f} s in all")
    print(f"{'kind':<16}{'N':>8}{'ms':>12}{'min':>10}{'max':>10}{'peak MB':>12}")
    for r in result.rows:
        print(f"{r.kind:<16}{r.n:>8}{r.ms:>12.3f}{r.ms_min:>10.3f}{r.ms_max:>10.3f}{r.peak_bytes / 1e6:>12.2f}")
    for sk in result.skipped:
        print(f"{sk.kind:<16}{sk.n:>8}   skipped: {sk.reason}")
    print(f"\n{'kind':<16}{'time slope':>12}{'theory':>8}{'memory slope':>14}{'crossover N':>14}   (fitted on N >= 1024)")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    table = summary(result)
    for row in table:
        print(f"{row['kind']:<16}{fmt(row['time_slope'], '.2f'):>12}{fmt(row['theory_slope'], '.2f'):>8}"
              f"{fmt(row['memory_slope'], '.2f'):>14}{fmt(row['crossover_vs_softmax'], ',.0f'):>14}")
    if result.sdpa_causal:
        c = result.sdpa_causal
        print(f"\nsdpa causal / no mask at N = {c['n']}: {c['causal_ms']:.1f} / {c['full_ms']:.1f} ms = {c['ratio']:.2f}")
    out = result.to_json()
    out["summary"] = table
    return out


BENCHES.add("complexity", Bench("complexity", "attention time and peak memory against sequence length",
                                _complexity_args, _complexity))


# ---------------------------------------------------------------------------------------------- extrapolation
def _extrapolation_args(p: argparse.ArgumentParser) -> None:
    from .encodings import ENCODINGS
    from .extrapolation import ExtrapolationSettings
    from .tasks import TASKS

    d = defaults(ExtrapolationSettings)
    p.add_argument("--task", default=d["task"], choices=TASKS.names())
    p.add_argument("--train-len", type=int, default=d["train_len"])
    p.add_argument("--max-steps", type=int, default=d["max_steps"], help="step cap per model")
    p.add_argument("--encodings", help=f"comma-separated, from: {', '.join(ENCODINGS.names())} (default: all)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--parallel", type=int, default=0,
                   help="models trained at once, one torch thread each, as the app does (0 = every core)")


def _extrapolation(args) -> dict:
    import os
    import time

    from .extrapolation import ExtrapolationSettings, combine, jobs
    from .jobs import Scheduler

    settings = ExtrapolationSettings(task=args.task, train_len=args.train_len, max_steps=args.max_steps, seed=args.seed,
                                     **({"encodings": tuple(args.encodings.split(","))} if args.encodings else {}))
    torch.set_num_threads(1)
    scheduler = Scheduler(workers=args.parallel or os.cpu_count() or 1)
    t0 = time.perf_counter()
    handles = [scheduler.submit(job) for job in jobs(settings)]
    for h in handles:
        h.wait()
        print(f"  {h.job.encoding}: {h.status} {h.error}", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    scheduler.shutdown()
    result = combine(settings, [h.result() for h in handles])
    lens = settings.lengths()
    print(f"task {settings.task}, trained on lengths {max(1, settings.train_len // 2)}-{settings.train_len} until "
          f"95% at {settings.train_len} (cap {settings.max_steps} steps); {wall:.1f} s wall time, "
          f"{scheduler.workers} models at once")
    print(f"{'encoding':<12}{'steps':>7}{'fitted':>8}" + "".join(f"{'acc@' + str(n):>10}" for n in lens))
    for e in settings.encodings:
        m = result.models[e]
        cells = [result.accuracy(e, n) for n in lens]
        print(f"{e:<12}{m.steps:>7}{'yes' if m.fitted else 'no':>8}"
              + "".join(f"{'n/a' if c is None else format(c, '.1%'):>10}" for c in cells))
    for line in result.findings():
        print("-", line.replace("**", ""))
    out = result.to_json()
    out["wall_seconds"] = round(wall, 2)
    return out


BENCHES.add("extrapolation", Bench("extrapolation", "train short, test long: accuracy at 1x, 2x, 4x the training length",
                                   _extrapolation_args, _extrapolation))


# ---------------------------------------------------------------------------------------------- pages
def _pages_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lessons", action="store_true", help="also time every lesson for a first and a second student")
    p.add_argument("--repeats", type=int, default=2, help="warm visits per page")
    p.add_argument("--only-lessons", action="store_true", help="time the lessons only")
    p.add_argument("--opened-server", action="store_true",
                   help="a lesson's first student comes after one visit to the landing page (the server's imports done)")


def _pages(args) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_pages.py"), "--repeats", str(args.repeats)]
    flags = [f for f, on in (("--lessons", args.lessons or args.only_lessons), ("--only-lessons", args.only_lessons),
                             ("--opened-server", args.opened_server)) if on]
    out = subprocess.run(cmd + flags, capture_output=True, text=True, cwd=ROOT, check=True)
    result = json.loads(out.stdout[out.stdout.index("{"):])
    for name, r in result["pages"].items():
        warm = r["warm"]
        print(f"{name:<16} cold: first chart {r['cold']['first_chart_s']} s, idle {r['cold']['idle_s']} s;  warm: "
              f"first chart {', '.join(str(w['first_chart_s']) for w in warm)} s, "
              f"idle {', '.join(str(w['idle_s']) for w in warm)} s")
    live = result.get("lab_live")
    if live:
        print(f"Lab while training: {live['redraws_per_second']} redraws per second (median interval "
              f"{live['redraw_interval_s_median']} s, max {live['redraw_interval_s_max']} s); first loss point after "
              f"{live['first_loss_point_s']} s; 300 steps in {live['train_300_steps_s']} s")
    for lid, r in result["lessons"].items():
        one, two = r["first_student"], r["second_student"]
        print(f"lesson {lid:<14} first student: charts {one['charts_s']} s, still {one['idle_s']} s;  second student: "
              f"charts {two['charts_s']} s, still {two['idle_s']} s")
    return result


BENCHES.add("pages", Bench("pages", "every page's first picture in Chromium, cold and warm; lessons for two students",
                           _pages_args, _pages))


# ---------------------------------------------------------------------------------------------- moe
def _moe_args(p: argparse.ArgumentParser) -> None:
    from .experts import ExpertsSettings

    d = defaults(ExpertsSettings)
    p.add_argument("--seconds", type=float, default=30.0, help="wall-time budget of each model (trained alone)")
    p.add_argument("--experts", type=int, default=d["n_experts"], help="experts per layer")
    p.add_argument("--top-k", type=int, default=d["top_k"], help="experts per token")
    p.add_argument("--seed", type=int, default=d["seed"])


def _moe(args) -> dict:
    from . import experts, residuals
    from .config import ModelConfig

    torch.set_num_threads(1)
    s = experts.ExpertsSettings(n_experts=args.experts, top_k=args.top_k, seed=args.seed)
    out = {"device": device_name(), "seconds_each": args.seconds, "runs": {}}
    for name, cfg in s.runs().items():
        row = experts.train_for(cfg, s, args.seconds)
        out["runs"][name] = row
        print(f"{name:<32} {row['steps']:>5} steps in {row['seconds']:.0f} s ({row['ms_per_step']:.1f} ms/step): "
              f"held-out loss {row['held_out_loss']:.3f}; {row['active_params']:,} of {row['total_params']:,} "
              f"parameters per token" + (f"; load CV {row['load_cv']:.2f}, dropped {row['dropped']:.1%} "
                                         f"(at capacity 1.0: {row['dropped_at_capacity'][1.0]:.1%}, 1.25: "
                                         f"{row['dropped_at_capacity'][1.25]:.1%})" if "load_cv" in row else ""))
    flat = ModelConfig(vocab_size=32, block_size=1024, n_layer=4, n_embd=64, n_head=4)
    funnel = dataclasses.replace(flat, funnel=(1, 2))
    out["funnel_ms_per_step_n1024"] = {"flat": round(experts.step_ms(flat, 1024), 1),
                                       "funnel (pool before blocks 1 and 2)": round(experts.step_ms(funnel, 1024), 1)}
    print("time per training step at N = 1,024 (4 blocks, width 64, batch 4):",
          ", ".join(f"{k} {v} ms" for k, v in out["funnel_ms_per_step_n1024"].items()))
    rs = residuals.ResidualSettings()
    out["grad_ratio_first_over_last_at_init"] = {x: round(residuals.init_ratio(rs, x), 3) for x in rs.layouts}
    print(f"first block / last block gradient norm at initialisation ({rs.n_layer} blocks):",
          ", ".join(f"{k} {v}" for k, v in out["grad_ratio_first_over_last_at_init"].items()))
    return out


BENCHES.add("moe", Bench("moe", "mixture of experts vs dense at equal active parameters, with and without the "
                                "balancing loss, under one wall-time budget; funnel vs flat; gradient ratios",
                         _moe_args, _moe))


# ---------------------------------------------------------------------------------------------- multimodal
def _multimodal_args(p: argparse.ArgumentParser) -> None:
    from .fusion import FUSIONS
    from .multimodal import MultimodalSettings

    d = defaults(MultimodalSettings)
    p.add_argument("--fusions", nargs="+", default=list(d["fusions"]), choices=FUSIONS.names(), help="fusion modes")
    p.add_argument("--steps", type=int, default=d["steps"], help="most training steps of each model")
    p.add_argument("--no-until-learned", action="store_true", help="train every step (no early stop)")
    p.add_argument("--seed", type=int, default=d["seed"])


def _multimodal(args) -> dict:
    from . import multimodal

    torch.set_num_threads(1)
    s = multimodal.MultimodalSettings(fusions=tuple(args.fusions), steps=args.steps, seed=args.seed,
                                      until_learned=not args.no_until_learned)
    out = {"device": device_name(), **multimodal.report(s)}
    b = out["baseline"]
    print(f"caption-frequency baseline ('{b['caption']}'): exact {b['held_out']['exact']:.1%}, colour "
          f"{b['held_out']['colour']:.1%}, shape {b['held_out']['shape']:.1%}")
    for fusion, r in out["runs"].items():
        h, hard, m = r["held_out"], r["hard"], r["named_mass"]
        print(f"{fusion:<6} {r['steps']} steps (learned at {r['learned_at']}) in {r['training_s']} s "
              f"({r['ms_per_step']} ms/step): held-out exact {h['exact']:.1%} (colour {h['colour']:.1%}, shape "
              f"{h['shape']:.1%}, relation {h['relation']:.1%}); hard split exact {hard['exact']:.1%} (shape "
              f"{hard['shape']:.1%}); colour words on their thing {', '.join(f'{x:.0%}' for x in m['colour'])} by layer, "
              f"shape words {', '.join(f'{x:.0%}' for x in m['shape'])} (chance {m['chance']:.0%}); "
              f"{r['params']:,} parameters, {r['forward_flops'] / 1e6:.1f} MFLOPs a forward pass")
    return out


BENCHES.add("multimodal", Bench("multimodal", "caption accuracy of cross-attention vs early fusion on held-out "
                                              "scenes, where words look, cost", _multimodal_args, _multimodal))


# ---------------------------------------------------------------------------------------------- memory
def _memory_args(p: argparse.ArgumentParser) -> None:
    from .attention import ATTENTION
    from .kvcache import MemorySettings

    d = defaults(MemorySettings)
    p.add_argument("--contexts", nargs="+", type=int, default=list(d["contexts"]), help="tokens in the text")
    p.add_argument("--new-tokens", type=int, default=d["new_tokens"], help="tokens written per measurement")
    p.add_argument("--kinds", nargs="+", default=list(d["kinds"]), choices=ATTENTION.names())
    p.add_argument("--repeats", type=int, default=d["repeats"], help="timed runs per point (the fastest counts)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (the app gives each run one)")


def _memory(args) -> dict:
    from .kvcache import MemorySettings, measure, speedups

    torch.set_num_threads(args.threads)
    s = MemorySettings(contexts=tuple(args.contexts), new_tokens=args.new_tokens, kinds=tuple(args.kinds),
                       repeats=args.repeats, seed=args.seed)
    out = {"device": device_name(), **measure(s, progress=lambda what: print(f"  {what}", file=sys.stderr, flush=True))}
    print(f"untrained model, {s.n_layer} layers, width {s.n_embd}, {s.n_head} heads, window {s.window}, {s.encoding} "
          f"positions, {torch.get_num_threads()} thread(s); {s.new_tokens} tokens written greedily after a prompt of "
          f"N - {s.new_tokens}; tokens per second after the first token, fastest of {s.repeats}; cache KB in all "
          f"layers at the end")
    print(f"{'kind':<16}{'N':>6}{'cached tok/s':>14}{'recomputed tok/s':>18}{'speed-up':>10}{'1st token ms':>14}"
          f"{'cache KB':>10}   what each layer keeps")
    by = {(r["kind"], r["context"], r["cached"]): r for r in out["results"]}
    out["speedups"] = speedups(out)
    for row in out["speedups"]:
        k, n = row["kind"], row["context"]
        c, r = by[k, n, True], by[k, n, False]
        print(f"{k:<16}{n:>6}{c['tokens_per_s']:>14.1f}{r['tokens_per_s']:>18.1f}{row['speedup']:>10.2f}"
              f"{c['first_token_ms']:>7.1f}/{r['first_token_ms']:<6.1f}{c['cache_bytes'] / 1024:>10.1f}"
              f"   {c['cache_label']}")
    return out


BENCHES.add("memory", Bench("memory", "generation with and without a key/value cache: tokens per second and the "
                                      "cache's bytes against context length", _memory_args, _memory))

# ---------------------------------------------------------------------------------------------- incontext
def _incontext_args(p: argparse.ArgumentParser) -> None:
    from .fewshot import FewShotSettings
    from .incontext import InductionSettings

    d, f = defaults(InductionSettings), defaults(FewShotSettings)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the app gives each run one: the same seed gives the page's figures)")
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument("--max-steps", type=int, default=d["steps"], help="most steps of the induction model")
    p.add_argument("--fewshot-steps", type=int, default=f["steps"], help="training steps of the few-shot model (0: skip)")


def _incontext(args) -> dict:
    from . import fewshot, incontext

    torch.set_num_threads(args.threads)
    s = incontext.InductionSettings(seed=args.seed, steps=args.max_steps)
    model, probes, wall = incontext.train(s, until_formed=True)
    pc = incontext.phase_change(probes)
    out = {"device": device_name(), "settings": dataclasses.asdict(s), "phase_change": pc, "wall_seconds": round(wall, 2),
           "curve": [(step, m["train_seconds"], round(m["loss_first"], 4), round(m["loss_repeat"], 4),
                      round(incontext.best_head(m["induction"])[2], 4)) for step, m in probes]}
    if pc is None:
        print(f"no head reached an induction score of {incontext.THRESHOLD} in {probes[-1][0]} steps ({wall:.1f} s)")
    else:
        print(f"induction head {pc['layer']}.{pc['head']} reached {pc['induction_score']:.2f} at step {pc['step']}, "
              f"{pc['train_seconds']:.1f} s of training ({wall:.1f} s wall, measurements included); repeated-half "
              f"loss {pc['loss_repeat_at_start']:.2f} -> {pc['loss_repeat']:.2f} (drop {pc['loss_repeat_drop']:.2f}), "
              f"first half {pc['loss_first']:.2f}")
    ab = incontext.ablation(model, s)
    out["ablation"] = ab
    (il, ih, _), (pl, ph, _) = ab["induction_head"][:3], ab["prev_token_head"][:3]
    print(f"ablating previous-token head {pl}.{ph} (score {ab['prev_token_head'][2]:.2f}): induction score of "
          f"{il}.{ih} {ab['clean']['induction'][il][ih]:.2f} -> {ab['ablated']['induction'][il][ih]:.2f}, repeated-half "
          f"loss {ab['clean']['loss_repeat']:.2f} -> {ab['ablated']['loss_repeat']:.2f}"
          + (f"; for comparison, head {ab['comparison_head'][0]}.{ab['comparison_head'][1]}): "
             f"{ab['comparison']['induction'][il][ih]:.2f}, loss {ab['comparison']['loss_repeat']:.2f}" if "comparison" in ab else ""))
    if args.fewshot_steps:
        fs = fewshot.FewShotSettings(seed=args.seed, steps=args.fewshot_steps)
        fmodel, _, fwall = fewshot.train(fs)
        rows = fewshot.accuracy_by_shots(fmodel, fs)
        example = fewshot.prompt_text(fs, 4, seed=args.seed)
        out["fewshot"] = {"settings": dataclasses.asdict(fs), "wall_seconds": round(fwall, 2), "by_shots": rows,
                          "example": example}
        print(f"few-shot letter mappings ({fs.n_letters} letters, held-out mappings, {fs.steps} steps, {fwall:.0f} s; "
              f"prompt e.g. {example['prompt']!r} -> {example['answer']!r}):")
        for r in rows:
            print(f"  {r['shots']} examples: accuracy {r['accuracy']:.1%} (ideal {r['ideal']:.1%}, chance {r['chance']:.1%}; "
                  f"query shown {r['accuracy_seen'] if r['accuracy_seen'] is None else format(r['accuracy_seen'], '.1%')}, "
                  f"not shown {r['accuracy_unseen'] if r['accuracy_unseen'] is None else format(r['accuracy_unseen'], '.1%')})")
    return out


BENCHES.add("incontext", Bench("incontext", "induction heads: when they form, the in-context loss drop, ablation; "
                                            "few-shot accuracy against the number of examples", _incontext_args, _incontext))


# ---------------------------------------------------------------------------------------------- charlm
def _charlm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="a UTF-8 text file to train on (default: the built-in corpus)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of both runs")
    p.add_argument("--quick", action="store_true", help="tiny models and a few steps (for the tests)")


CHARLM_EVALS = 20  # held-out evaluations per run (the app default's run, whose time to the target is read off)
CHARLM_LONG_STEPS = 2000  # the app default's settings with the page's 2,000 steps: its loss after 60 and 180 s


def _charlm(args) -> dict:
    from . import charlm, corpus

    text = corpus.from_path(args.corpus) if args.corpus else corpus.builtin()
    default = charlm.app_default()
    recipes = [charlm.nanogpt_cpu(), default,  # and the same settings with more steps, for the loss after 180 s
               dataclasses.replace(default, name="app default, longer", steps=CHARLM_LONG_STEPS)]
    if args.quick:
        recipes = [dataclasses.replace(r, n_layer=1, n_head=2, n_embd=32, batch_size=4, steps=12 * (1 + i // 2),
                                       warmup=2) for i, r in enumerate(recipes)]
    evals = 4 if args.quick else CHARLM_EVALS
    base, ours, longer = charlm.train_curves([(r, max(1, r.steps // evals)) for r in recipes], text,
                                             threads=args.threads)
    target = base.final_loss
    reached = ours.time_to(target)
    figures = {"recipe_final_loss": round(target, 4), "recipe_seconds": round(base.seconds, 2),
               "ours_seconds_to_recipe_loss": None if reached is None else round(reached[0], 2),
               "ours_step_to_recipe_loss": None if reached is None else reached[1],
               "ratio": None if reached is None else round(reached[0] / base.seconds, 3),
               "ours_final_loss": round(ours.final_loss, 4), "ours_seconds": round(ours.seconds, 2),
               "ours_loss_at_60s": ours.loss_at(60), "ours_loss_at_180s": ours.loss_at(180),
               "longer_steps": longer.points[-1][1], "longer_seconds": round(longer.seconds, 2),
               "longer_final_loss": round(longer.final_loss, 4),
               "longer_loss_at_60s": longer.loss_at(60), "longer_loss_at_180s": longer.loss_at(180)}
    print(f"corpus: {text.title} ({len(text.text):,} characters, {text.vocab_size} distinct, last 10 % held out); "
          f"{args.threads} thread(s); held-out loss in nats per character on {charlm.EVAL_BATCHES} x "
          f"{charlm.EVAL_BATCH_SIZE} fixed windows of {charlm.EVAL_LENGTH}; seconds of training, evaluation excluded")
    print(f"{'run':<22}{'layers':>7}{'width':>7}{'context':>8}{'batch':>7}{'lr':>8}{'steps':>7}{'seconds':>9}"
          f"{'ms/step':>9}{'loss':>8}")
    for c in (base, ours, longer):
        r = c.recipe
        print(f"{r.name:<22}{r.n_layer:>7}{r.n_embd:>7}{r.context:>8}{r.batch_size:>7}{r.lr:>8.0e}{c.points[-1][1]:>7}"
              f"{c.seconds:>9.1f}{1000 * c.seconds / max(1, c.points[-1][1]):>9.1f}{c.final_loss:>8.3f}")
    print(f"\nthe recipe ends at {target:.3f} after {base.seconds:.1f} s")
    if reached is None:
        print(f"the app default never reached {target:.3f}: it ends at {ours.final_loss:.3f} after {ours.seconds:.1f} s")
    else:
        print(f"the app default reached it after {reached[0]:.1f} s (step {reached[1]}): {reached[0] / base.seconds:.0%} "
              f"of the recipe's time; it ends at {ours.final_loss:.3f} after {ours.seconds:.1f} s")
    for name, c in (("app default", ours), (f"app default, {longer.points[-1][1]} steps", longer)):
        for s in (60, 180):
            value = c.loss_at(s)
            print(f"{name} after {s} s: " + (f"{value:.3f}" if value is not None else
                                              f"- (its whole run is {c.seconds:.1f} s)"))
    return {"device": device_name(), "threads": args.threads, "quick": args.quick,
            "corpus": {"name": text.name, "chars": len(text.text), "vocab": text.vocab_size},
            "eval": {"length": charlm.EVAL_LENGTH, "batches": charlm.EVAL_BATCHES, "batch_size": charlm.EVAL_BATCH_SIZE,
                     "seed": charlm.EVAL_SEED},
            "figures": figures, "recipe": base.to_json(), "default": ours.to_json(),
            "longer": longer.to_json()}


BENCHES.add("charlm", Bench("charlm", "the app's default text run against nanoGPT's CPU recipe: held-out loss "
                                      "against training time, same corpus split, same process", _charlm_args, _charlm))


# ---------------------------------------------------------------------------------------------- training
def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch threads of the comparisons (each worker has one)")
    p.add_argument("--workers", type=int, default=2, help="data-parallel workers")
    p.add_argument("--quick", action="store_true", help="a few steps of each (for the tests)")


def _training(args) -> dict:
    """The Training page's method comparisons at their defaults: curriculum against fixed length,
    bf16 against fp32 (each one job, trained to the end in this process), and data-parallel workers
    against one worker and against single-process training."""
    from . import corpus, methods, train_ddp
    from .jobs import run_to_end

    torch.set_num_threads(args.threads)
    text = corpus.builtin()
    out = {"device": device_name(), "threads": args.threads, "quick": args.quick}
    for kind in (methods.CurriculumSettings, methods.PrecisionSettings):
        settings = kind(**({"steps": 30, "every": 10, "length": 32} if args.quick else {})).for_corpus(text)
        job = methods.job(settings, text)
        run = run_to_end(job)
        print(f"== {job.kind} ({settings.steps} steps each)")
        for line in run.findings():
            print("  -", line)
        t = run.common_seconds()
        out[job.kind] = {
            "settings": dataclasses.asdict(settings) | {"digest": settings.digest[:12]},
            "arms": {arm: {"ms_per_step": round(run.step_ms(arm), 1), "final_loss": round(recs[-1].loss, 4),
                           "seconds": round(recs[-1].seconds, 2), "tokens": recs[-1].tokens,
                           "loss_at_common_seconds": round(run.loss_at(arm, t), 4)}
                     for arm, recs in run.records.items()},
            "common_seconds": round(t, 2), "findings": run.findings()}
    ddp = train_ddp.DDPSettings(workers=args.workers, **({"steps": 5, "batch_size": 4} if args.quick else {}))
    c = train_ddp.compare(ddp)
    print(f"== data-parallel ({ddp.workers} workers, {ddp.steps} steps, global batch {ddp.batch_size})")
    for line in c.findings:
        print("  -", line)
    out["ddp"] = {"settings": dataclasses.asdict(ddp), "tokens_per_s": round(c.parallel.tokens_per_s),
                  "one_worker_tokens_per_s": round(c.single.tokens_per_s), "speedup": round(c.speedup, 3),
                  "workers": [{"rank": w.rank, "ms_per_step": round(w.step_s * 1e3, 1),
                               "tokens_per_s": round(w.tokens_per_s)} for w in c.parallel.workers],
                  "max_abs_param_diff": c.max_abs_diff, "load": c.load, "findings": c.findings}
    return out


BENCHES.add("training", Bench("training", "the Training page's comparisons: curriculum against fixed length, bf16 "
                                          "against fp32, data-parallel workers against one", _training_args, _training))


# ---------------------------------------------------------------------------------------------- safeguards
SAFEGUARDS = ("uncertainty", "feedback", "privacy", "bias")  # the Safeguards page's tabs, as bench sections


def _safeguards_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--only", nargs="+", choices=SAFEGUARDS, default=list(SAFEGUARDS), help="these tabs only")
    p.add_argument("--quick", action="store_true", help="tiny runs of each (for the tests)")


def _safeguards(args) -> dict:
    """The Safeguards page's figures, each from its module's ``bench_figures`` (real runs): ECE at
    temperatures 0.5/1/2 and after temperature scaling; the scripted preference's win rate before and
    after DPO and the KL at the end; canary exposure with and without DP, the ε and δ used, and both
    runs' held-out loss; the probe's skew against the data's, with and without augmentation."""
    from . import bias, dpo, privacy, uncertainty

    modules = {"uncertainty": uncertainty, "feedback": dpo, "privacy": privacy, "bias": bias}
    torch.set_num_threads(args.threads)
    out = {"device": device_name(), "threads": args.threads, "quick": args.quick}
    for name in args.only:
        out[name] = modules[name].bench_figures(quick=args.quick)
        print(f"== {name}")
        for key, value in out[name].items():
            print(f"  {key}: {value}")
    return out


BENCHES.add("safeguards", Bench("safeguards", "the Safeguards page's figures: calibration and temperature scaling, "
                                              "DPO's win rate and KL, DP-SGD's ε and a canary's exposure, the bias "
                                              "probe against the data", _safeguards_args, _safeguards))


# ---------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m explorer.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    for b in BENCHES.values():
        p = sub.add_parser(b.name, help=b.help, description=b.help)
        b.arguments(p)
        p.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    result = BENCHES[args.what].run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
