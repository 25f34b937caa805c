"""The Complexity page's words and tables, computed from the registry, the formulas and the
measurements: the page only draws them. Nothing here states a number that is not computed."""
from __future__ import annotations

from typing import Optional

from .attention import ATTENTION
from .attention.window import dynamic_window_size
from .measure import SweepResult, SweepSettings, entry, loglog_slope, theory_curves


def theory_markdown(s: SweepSettings) -> str:
    """What the theory plots show, kind by kind (each kind's own sentence), at these settings."""
    n = s.max_n
    lines = [
        "For one layer with $h$ heads of size $d_h$ ($d = h\\,d_h$), each query is scored against $S$ keys and the "
        "scores weight $S$ values: $4\\,N\\,S\\,d$ FLOPs (a multiply-add counts 2), and $h\\,N\\,S$ scores held at "
        "once. **FLOPs** here count the matrix products each kernel really runs, masked-out scores and the padding "
        "of the last block included — the tests count them with PyTorch's `FlopCounterMode` and compare."
    ]
    for name in s.kinds:
        e = entry(name)
        if name in ATTENTION:
            useful = e.useful_fraction(s.config(name, n), n)
            lines.append(f"- **{name}**: {e.theory} At N = {n:,}, {useful:.0%} of that work is inside the causal "
                         "pattern.")
        else:
            lines.append(f"- {e.theory}")
    return "\n".join(lines)


def _dynamic_sentence(s: SweepSettings, lo: int) -> Optional[str]:
    if "dynamic_window" not in s.kinds:
        return None
    ns = [n for n in s.lengths() if n >= lo] or s.lengths()
    w_lo, w_hi = dynamic_window_size(ns[0], s.window), dynamic_window_size(ns[-1], s.window)
    slope = loglog_slope(*theory_curves(s)[0]["dynamic_window"], ns[0], ns[-1])
    edge = s.window ** 2 / 4
    if w_lo == w_hi:
        regime = f"the window stays at w_min = {s.window} over the whole range (it grows only past N = {edge:,.0f})"
    else:
        regime = (f"the window grows from {w_lo} to {w_hi} keys (⌈2√N⌉ passes w_min = {s.window} at N = "
                  f"{edge:,.0f})")
    return (f"**dynamic_window**: between N = {ns[0]:,} and {ns[-1]:,} {regime}, so its theory slope there is "
            f"{slope:.2f} — linear while w_min wins, approaching 1.5 only for N ≫ w_min²/4.")


def reading_markdown(result: SweepResult, table: list[dict], lo: int) -> str:
    """What the measured plots show this time, in sentences computed from the numbers."""
    s = result.settings
    rows = {r["kind"]: r for r in table}
    out = ["**Reading the plots.** On log-log axes a cost $c\\,N^p$ is a straight line of slope $p$: slope 2 is "
           f"quadratic, slope 1 linear. Fitted from N = {lo:,} up, this time:"]
    for kind, r in rows.items():
        if r["time_slope"] is None:
            continue
        out.append(f"- {kind}: time slope **{r['time_slope']:.2f}** (theory {r['theory_slope']:.2f}), memory slope "
                   f"{'—' if r['memory_slope'] is None else format(r['memory_slope'], '.2f')}"
                   + (f"; {r['noisy_points']} point(s) noisy (whiskers show the fastest and slowest call)"
                      if r["noisy_points"] else ""))
    dyn = _dynamic_sentence(s, lo)
    if dyn:
        out.append("\n" + dyn)
    if "softmax" in rows and rows["softmax"]["time_slope"] and rows["softmax"]["time_slope"] > 2.1:
        out.append("\nExplicit softmax measures *steeper* than 2: at large N its matrix no longer fits the CPU's "
                   "caches, so each score costs more memory traffic than at small N.")
    sdpa = result.sdpa_causal
    if sdpa is not None:
        mem = rows.get("sdpa", {}).get("memory_slope")
        out.append(
            f"\n**sdpa** never stores the N × N matrix: its measured memory slope is "
            f"{'—' if mem is None else format(mem, '.2f')}, the inputs and output growing with N. Its time is still "
            f"quadratic, but with the causal mask it ran in **{sdpa['ratio']:.0%}** of the time it needs without a "
            f"mask at N = {sdpa['n']:,} ({sdpa['causal_ms']:.1f} ms against {sdpa['full_ms']:.1f} ms): PyTorch's "
            "CPU kernel skips the key tiles above the diagonal — at most half the work, and less at short lengths, "
            "where per-call costs hide part of the saving — while the explicit kernels (and the FLOP counts above) "
            "compute those scores and then mask them.")
    out.append(
        "\nAt small N every kind is dominated by fixed overheads (Python, kernel launches, padding to a block), so "
        "the curves are flat there and a sub-quadratic kind can be *slower* than full attention: the crossover "
        "column says from where it is faster at every longer length measured (points whose spreads overlap "
        "count as undecided).\n\n"
        "**Why masking would not have saved anything.** A sliding window written as full attention with a band mask "
        "still forms all $N^2$ scores and then throws most away: same time, same memory. The kernels here compute "
        "only their own pattern, so the work itself shrinks.")
    return "\n".join(out)


def table_rows(table: list[dict]) -> list[dict]:
    fmt = lambda v, f: "—" if v is None else format(v, f)  # noqa: E731
    return [{"kind": r["kind"], "points": r["points"], "time slope": fmt(r["time_slope"], ".2f"),
             "theory slope": fmt(r["theory_slope"], ".2f"), "memory slope": fmt(r["memory_slope"], ".2f"),
             "faster than softmax from N ≈": fmt(r["crossover_vs_softmax"], ",.0f"),
             "noisy points": r["noisy_points"]} for r in table]


def skipped_markdown(result: SweepResult) -> str:
    return "Skipped to stay inside the budgets:\n" + "\n".join(
        f"- {sk.kind} at N = {sk.n:,}: {sk.reason}" for sk in result.skipped)


URL_CONTROLS = {  # the page's URL key -> (SweepSettings field, how the control shows it, the control's label)
    "cx_kinds": ("kinds", list, "Attention kinds"), "cx_max_n": ("max_n", int, "Longest sequence N"),
    "cx_width": ("n_embd", int, "Width d"), "cx_heads": ("n_head", int, "Heads"),
    "cx_window": ("window", int, "Window / block size w"), "cx_pass": ("pass_", str, "Pass"),
    "cx_repeats": ("repeats", int, "Timed repeats"), "cx_time_budget": ("time_budget_s", float, "Time budget per point"),
    "cx_mem_budget": ("memory_budget_bytes", lambda b: b / 1e9, "Memory budget per point (GB)"),
}


def size_help() -> str:
    """The Complexity page's one size control, described by every kind that reads it."""
    uses = "; ".join(f"{kind.name}: {kind.size_control.label[0].lower()}{kind.size_control.label[1:]}"
                     for kind in ATTENTION.values() if kind.size_control)
    return f"One size for every kind that has one ({uses})."


def funnel_job(s: SweepSettings):
    """The whole-model comparison beside the sweep: a 3-block model flat and as a funnel (pooled
    before block 1), at the sweep's width and heads, timed per training step at its lengths (from
    256 up to ``funnel.MODEL_MAX_N``)."""
    from . import funnel

    lengths = [n for n in s.lengths() if 256 <= n <= min(s.max_n, funnel.MODEL_MAX_N)] or [256]
    return funnel.cost_job(funnel.FunnelSettings(n_embd=s.n_embd, n_head=s.n_head), lengths)


def url_defaults() -> dict:
    """Every control of the page at its default (what a lesson starts from)."""
    d = SweepSettings()
    return {key: shown(getattr(d, field)) for key, (field, shown, _) in URL_CONTROLS.items()}


def fit_from(s: SweepSettings) -> int:
    """Where the slopes are fitted from: 1,024, or a quarter of the longest length for short sweeps."""
    return min(1024, max(s.min_n, s.max_n // 4))
