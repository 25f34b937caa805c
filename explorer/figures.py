"""Figure builders: plotly figures (as plain dicts, cheap to build and serialise) and small
HTML fragments. Every string that came from a user is escaped here: it is shown as text, never
interpreted as markup.
"""
from __future__ import annotations

import html
import math
import re
from typing import Sequence

import numpy as np

from .attention import ATTENTION, REFERENCES, Style

COLORSCALE = "Viridis"  # perceptually uniform, monotonic in grayscale, colour-blind safe


def md_escape(text: str) -> str:
    """Text for a markdown message, every punctuation character backslash-escaped (CommonMark),
    so that what a user typed is shown as typed and never becomes a link, image or emphasis."""
    return "".join("\\" + c if (c.isascii() and not c.isalnum() and not c.isspace()) else c for c in text)


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "—"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


_NUMBER = re.compile(r"[−+-]?[\d,]*\.?\d+(e[+-]?\d+)?\s?[%×]?|—")  # as tables write them: 1,024; 2.33; 12.5%; 3×


def _numeric(v) -> bool:
    if isinstance(v, str):
        return bool(_NUMBER.fullmatch(v.strip()))
    return v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool))


def markdown_table(rows: Sequence[dict]) -> str:
    """Rows (dicts, the first one's keys are the columns) as a markdown table: every cell escaped
    (shown as typed, never markup; a line break becomes a space), numbers formatted, columns of
    numbers right-aligned. A static table costs a browser nothing but text to lay out: the
    interactive grid (``st.dataframe``) loads 1.2 MB of scripts and draws on a canvas, 0.6–0.9 s
    before a page is still, measured on a page that holds nothing else."""
    if not rows:
        return ""
    columns = list(rows[0])
    align = ["---:" if all(_numeric(r.get(c)) for r in rows) else "---" for c in columns]

    def line(cells) -> str:
        return "| " + " | ".join(md_escape(" ".join(str(c).split("\n"))) or " " for c in cells) + " |"

    return "\n".join([line(columns), "| " + " | ".join(align) + " |"]
                     + [line(_cell(r.get(c)) for c in columns) for r in rows])


def token_label(tok: str) -> str:
    """A token as an axis label: spaces made visible, markup characters escaped."""
    return html.escape({" ": "␣", "\n": "⏎", "\t": "⇥"}.get(tok, tok), quote=True)


MAX_LABELS = 40  # token labels on an axis at most: past that every k-th token is labelled


def _axis(tokens: Sequence[str], domain, anchor, show: bool, reverse=False, size=11, names=None):
    """A token axis: every k-th token labelled; ``names`` when its coordinates are category names."""
    every = max(1, -(-len(tokens) // MAX_LABELS))
    ax = {
        "domain": [min(1.0, max(0.0, round(d, 6))) for d in domain], "anchor": anchor, "tickmode": "array",
        "tickvals": list(names or range(len(tokens)))[::every],
        "ticktext": [token_label(t) for t in tokens[::every]] if show else [],
        "showticklabels": show, "tickfont": {"size": size, "family": "monospace"}, "showgrid": False,
        "zeroline": False, "constrain": "domain",
    }
    if reverse:
        ax["autorange"] = "reversed"
    return ax


def weight_scale(weights: np.ndarray) -> dict:
    """The colour scale of attention weights: viridis on [0, 1]; a diverging scale centred on 0
    when some weights are negative (linear attention with RoPE's implied weights)."""
    lo = float(np.min(weights)) if np.size(weights) else 0.0
    if lo >= -1e-6:
        return {"zmin": 0.0, "zmax": 1.0, "colorscale": COLORSCALE}
    m = float(np.max(np.abs(weights)))
    return {"zmin": -m, "zmax": m, "zmid": 0.0, "colorscale": "RdBu"}


def attention_heatmap(weights: np.ndarray, tokens: Sequence[str], title: str = "", height: int = 520) -> dict:
    """One head's ``(T, T)`` attention: rows are queries (who looks), columns keys (looked at)."""
    # each position is a category named by its index and token, so the hover names both from the
    # axes alone (two strings per cell in ``customdata`` cost the browser more than the map itself)
    names = [f"{i} '{token_label(t)}'" for i, t in enumerate(tokens)]
    trace = {
        "type": "heatmap", "z": np.round(weights, 4).tolist(), "x": names, "y": names, **weight_scale(weights),
        "colorbar": {"title": {"text": "weight"}, "thickness": 12},
        "hovertemplate": "query %{y} → key %{x}<br>weight %{z:.3f}<extra></extra>",
    }
    layout = {
        "title": {"text": html.escape(title)}, "height": height, "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
        "xaxis": {**_axis(tokens, (0, 1), "y", True, names=names), "title": {"text": "key (attended to)"},
                  "side": "bottom", "type": "category"},
        "yaxis": {**_axis(tokens, (0, 1), "x", True, reverse=True, names=names), "title": {"text": "query"},
                  "scaleanchor": "x", "type": "category"},
    }
    return {"data": [trace], "layout": layout}


def attention_grid(attn: np.ndarray, tokens: Sequence[str], cell: int = 150, layers: Sequence[int] = ()) -> dict:
    """Every layer (rows) x head (columns) as small heatmaps sharing one colour scale; ``layers``
    names the rows' layers when they are not 0, 1, ... (a funnel's blocks at one level)."""
    n_layer, n_head = attn.shape[:2]
    names = list(layers) or list(range(n_layer))
    gap = 0.02
    w = (1 - gap * (n_head - 1)) / n_head
    h = (1 - gap * (n_layer - 1)) / n_layer
    data, layout = [], {}
    T = len(tokens)
    show_labels = T <= 24 and n_head <= 4
    scale = weight_scale(attn)
    for l in range(n_layer):
        for hd in range(n_head):
            n = l * n_head + hd + 1
            xa, ya = f"x{n}", f"y{n}"
            data.append({
                "type": "heatmap", "z": np.round(attn[l, hd], 3).tolist(), "xaxis": xa, "yaxis": ya,
                **scale, "showscale": n == 1,
                "colorbar": {"thickness": 10, "len": 0.5}, "name": f"layer {names[l]} head {hd}",
                "hovertemplate": f"layer {names[l]} head {hd}<br>query %{{y}} → key %{{x}}: %{{z:.3f}}<extra></extra>",
            })
            x0 = hd * (w + gap)
            y1 = 1 - l * (h + gap)
            suffix = "" if n == 1 else str(n)
            layout[f"xaxis{suffix}"] = _axis(tokens, (x0, x0 + w), ya, show_labels and l == n_layer - 1, size=9)
            layout[f"yaxis{suffix}"] = _axis(tokens, (y1 - h, y1), xa, show_labels and hd == 0, True, size=9)
            layout[f"yaxis{suffix}"]["scaleanchor"] = xa
    annotations = [
        {"text": f"head {hd}", "x": hd * (w + gap) + w / 2, "y": 1.0, "xref": "paper", "yref": "paper",
         "showarrow": False, "yanchor": "bottom", "font": {"size": 12}} for hd in range(n_head)
    ] + [
        {"text": f"layer {names[l]}", "x": -0.01, "y": 1 - l * (h + gap) - h / 2, "xref": "paper", "yref": "paper",
         "showarrow": False, "xanchor": "right", "textangle": -90, "font": {"size": 12}} for l in range(n_layer)
    ]
    layout.update({
        "height": max(220, int(cell * n_layer * max(1.0, 4 / max(n_head, 1)))) + 40,
        "margin": {"l": 60, "r": 10, "t": 30, "b": 45 if show_labels else 20}, "annotations": annotations,
    })
    return {"data": data, "layout": layout}


MAX_POINTS = 2000  # a curve longer than this is thinned for drawing (every k-th point, and the last)


def thin(history: Sequence, most: int = MAX_POINTS) -> list:
    """At most ``most`` evenly spread entries of ``history``, always keeping the last."""
    if len(history) <= most:
        return list(history)
    k = -(-len(history) // most)
    return list(history[::k]) + ([history[-1]] if (len(history) - 1) % k else [])


def loss_curve(history: Sequence[tuple[int, float, float]], height: int = 260, mark: int | None = None) -> dict:
    """Loss (log scale) and accuracy per step; ``mark`` draws a line at the step being shown."""
    history = thin(history)
    steps = [h[0] for h in history]
    losses = [max(h[1], 1e-6) for h in history]
    span = [math.log10(min(losses)) - 0.15, math.log10(max(losses)) + 0.15] if losses else None
    return {
        "data": [
            {"type": "scatter", "mode": "lines", "x": steps, "y": losses, "name": "loss",
             "line": {"color": "#1f77b4"}},
            {"type": "scatter", "mode": "lines", "x": steps, "y": [h[2] for h in history], "name": "accuracy",
             "yaxis": "y2", "line": {"color": "#ff7f0e", "dash": "dot"}},
        ],
        "layout": {
            "height": height, "margin": {"l": 60, "r": 60, "t": 10, "b": 40},
            "xaxis": {"title": {"text": "step"}},
            "yaxis": {"title": {"text": "loss (nats, log scale)"}, **log_ticks(min(losses, default=1),
                                                                                  max(losses, default=1)),
                      "range": span},
            "yaxis2": {"title": {"text": "token accuracy"}, "overlaying": "y", "side": "right", "range": [0, 1.02],
                       "tickmode": "linear", "tick0": 0, "dtick": 0.25, "tickformat": ".0%", "showgrid": False},
            "legend": {"orientation": "h", "y": -0.3, "x": 0},
            "shapes": mark_lines([] if mark is None else [mark]),
        },
    }


def mark_lines(xs: Sequence[float]) -> list[dict]:
    """Dotted vertical lines across a chart at ``xs`` (the step being shown)."""
    return [{"type": "line", "x0": x, "x1": x, "yref": "paper", "y0": 0, "y1": 1,
             "line": {"color": "#555", "dash": "dot", "width": 1.5}} for x in xs]


def log_ticks(lo: float, hi: float) -> dict:
    """A log axis whose labels are whole numbers with their decade (0.2, 0.5, 1, 2, 5): 1-2-5 ticks
    over a short range, one per decade (SI prefixes) over a long one."""
    if lo > 0 and hi / lo < 1e3:
        return {"type": "log", "dtick": "D2", "tickformat": ".2~g"}
    return {"type": "log", "dtick": 1, "exponentformat": "SI"}


def probability_html(text: str, probs: Sequence[float], expected: str | None = None) -> str:
    """The written answer, each character shaded by the probability the model gave it (darker is
    surer); characters that differ from the expected answer are underlined in red (``tokens_html``)."""
    return tokens_html(text, probs, expected=expected)


SHADES = {  # what tokens_html shades by -> (RGB of the shade, what a darker shade means)
    "probability": ((31, 119, 180), "surer"),  # blue: the probability the model gave the character
    "entropy": ((214, 39, 40), "less sure"),  # red: the entropy of the distribution it was drawn from
}


def tokens_html(tokens: Sequence[str], probs: Sequence[float], expected: str | None = None,
                entropies: Sequence[float] | None = None, by: str = "probability",
                flagged: Sequence[bool] | None = None) -> str:
    """Written tokens, each shaded by its probability (darker is surer) or, ``by="entropy"``, by the
    entropy of the distribution it was drawn from (darker is less sure; the darkest is the largest
    entropy of the text, at least 1 nat). Tokens that differ from ``expected`` are underlined in red;
    ``flagged`` tokens are outlined. Every token is escaped: shown as text, never read as markup."""
    if by not in SHADES:
        raise ValueError(f"shade by {by!r}: choose one of {', '.join(SHADES)}")
    if by == "entropy" and entropies is None:
        raise ValueError("shading by entropy needs each token's entropy")
    tokens, probs = list(tokens), list(probs)
    ents = list(entropies) if entropies is not None else None
    flags = list(flagged) if flagged is not None else [False] * len(tokens)
    if len(probs) != len(tokens) or (ents is not None and len(ents) != len(tokens)) or len(flags) != len(tokens):
        raise ValueError("give one probability (and entropy, flag) per token")
    (r, g, b), _ = SHADES[by]
    top = max([1.0] + (ents or []))
    spans = []
    for i, (ch, p) in enumerate(zip(tokens, probs)):
        level = p if by == "probability" else ents[i] / top
        wrong = expected is not None and (i >= len(expected) or expected[i] != ch)
        style = f"background: rgba({r}, {g}, {b}, {0.1 + 0.9 * level:.2f}); color: {'#fff' if level > 0.55 else '#000'};"
        if wrong:
            style += " text-decoration: underline wavy #d62728;"
        if flags[i]:
            style += " outline: 2px dashed #E69F00;"
        title = f"p = {p:.3f}" + (f", entropy = {ents[i]:.2f} nats" if ents is not None else "") + \
            (" (flagged)" if flags[i] else "")
        shown = token_label(ch)
        spans.append(f'<span class="tok" title="{title}" style="{style} padding: 2px 3px; '
                     f'margin: 1px; border-radius: 3px; font-family: monospace; font-size: 1.3em;">{shown}</span>')
    return ('<div class="generated" style="line-height: 2.2; word-break: break-all;">'  # long texts wrap anywhere
            + "".join(spans) + "</div>")


OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000"]  # colour-blind safe


def series_style(name: str, i: int) -> Style:
    """An attention kind's or reference kernel's own style (the same on every page); otherwise
    the i-th Okabe-Ito colour."""
    for registry in (ATTENTION, REFERENCES):
        if name in registry:
            return registry[name].style
    return Style(OKABE_ITO[i % len(OKABE_ITO)], "solid", "circle")


def lines_figure(series: dict, title: str, xtitle: str, ytitle: str, log_x: bool = False, log_y: bool = False,
                 height: int = 360, y_range=None, x_integer: bool = False, dashed: Sequence[str] = (),
                 marks: Sequence[float] = (), plain: Sequence[str] = ()) -> dict:
    """One line per named series, ``series = {name: (xs, ys)}`` or ``(xs, ys, (lows, highs))`` for
    whiskers (None in ys leaves a gap); names that are attention kinds keep their colour, dash and
    marker on every page; names in ``dashed`` (formulas beside measurements) are thin dashed lines
    without markers, names in ``plain`` (thousands of points) solid lines without markers; ``marks``
    are x values drawn as dotted vertical lines (the step being shown)."""
    data = []
    for i, (name, values) in enumerate(series.items()):
        xs, ys = values[0], values[1]
        if not xs:
            continue
        style = series_style(name, i)
        trace = {
            "type": "scatter", "mode": "lines+markers", "x": list(xs), "y": list(ys), "name": html.escape(str(name)),
            "line": {"color": style.color, "dash": style.dash, "width": 2},
            "marker": {"symbol": style.marker, "size": 7},
            "hovertemplate": f"{html.escape(str(name))}<br>%{{x:,}}: %{{y:.3~s}}<extra></extra>",
        }
        if name in dashed:
            trace.update(mode="lines", line={"color": style.color, "dash": "dash", "width": 1.5})
        elif name in plain:
            trace.update(mode="lines", line={"color": style.color, "width": 1.5})
        if len(values) > 2:
            lows, highs = values[2]
            trace["error_y"] = {"type": "data", "symmetric": False, "color": style.color, "thickness": 1.2,
                                "array": [h - y for h, y in zip(highs, ys)],
                                "arrayminus": [y - lo for lo, y in zip(lows, ys)]}
        data.append(trace)
    xaxis = {"title": {"text": xtitle}}
    if x_integer:
        xaxis.update(tickmode="linear", dtick=1, tick0=0)
    if log_x:
        xaxis.update(type="log", dtick=math.log10(2) * 2, tickformat=",d")
    yaxis = {"title": {"text": ytitle}}
    if log_y:
        values = [y for v in series.values() for y in v[1] if y is not None and y > 0]
        yaxis.update(log_ticks(min(values, default=1), max(values, default=1)))
    if y_range is not None:
        yaxis["range"] = list(y_range)
    return {"data": data, "layout": {
        "title": {"text": html.escape(title)}, "height": height, "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
        "xaxis": xaxis, "yaxis": yaxis, "legend": {"orientation": "h", "y": -0.25}, "shapes": mark_lines(marks),
    }}


def loglog_figure(series: dict, title: str, ytitle: str, height: int = 360) -> dict:
    """Lines on log-log axes against sequence length, one per attention kind."""
    return lines_figure(series, title, "sequence length N", ytitle, log_x=True, log_y=True, height=height)


def bars_figure(groups: Sequence[str], series: dict, title: str, ytitle: str, height: int = 360, y_range=None,
                marks: Sequence[float] = (), fmt: str = ".3f") -> dict:
    """Grouped bars: one bar per named series in every group, ``series = {name: values per group}``
    (None leaves a gap); ``marks`` are y values drawn as dotted horizontal lines (50 %, say)."""
    labels = [html.escape(str(g)) for g in groups]
    data = [{"type": "bar", "x": labels, "y": list(ys), "name": html.escape(str(name)),
             "marker": {"color": OKABE_ITO[i % len(OKABE_ITO)]},
             "hovertemplate": f"{html.escape(str(name))}<br>%{{x}}: %{{y:{fmt}}}<extra></extra>"}
            for i, (name, ys) in enumerate(series.items())]
    yaxis = {"title": {"text": ytitle}, **({"range": list(y_range)} if y_range is not None else {})}
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
               "line": {"dash": "dot", "width": 1, "color": "#888"}} for y in marks]
    return {"data": data, "layout": {
        "title": {"text": html.escape(title)}, "height": height, "barmode": "group", "yaxis": yaxis,
        "margin": {"l": 60, "r": 10, "t": 40, "b": 45}, "legend": {"orientation": "h", "y": -0.2}, "shapes": shapes,
    }}


def matrix_figure(z, title: str, xtitle: str, ytitle: str, colorscale: str = COLORSCALE, zmid=None,
                  height: int = 380, reverse_y: bool = True) -> dict:
    """A plain heatmap of a matrix with numeric axes (positions, dimensions)."""
    z = np.asarray(z, dtype=float)
    trace = {"type": "heatmap", "z": np.where(np.isnan(z), None, np.round(z, 4)).tolist(), "colorscale": colorscale,
             "colorbar": {"thickness": 12},
             "hovertemplate": f"{xtitle} %{{x}}, {ytitle} %{{y}}: %{{z:.3f}}<extra></extra>"}
    if zmid is not None:
        trace["zmid"] = zmid
    yaxis = {"title": {"text": ytitle}}
    if reverse_y:
        yaxis["autorange"] = "reversed"
    return {"data": [trace], "layout": {
        "title": {"text": html.escape(title)}, "height": height, "margin": {"l": 55, "r": 10, "t": 40, "b": 45},
        "xaxis": {"title": {"text": xtitle}}, "yaxis": yaxis}}


def planes_figure(q_planes, k_planes, title: str, height: int = 300) -> dict:
    """RoPE's planes side by side: the query and key of each 2-D plane as arrows from the origin."""
    n = len(q_planes)
    gap = 0.03
    w = (1 - gap * (n - 1)) / n
    lim = float(max(np.abs(q_planes).max(), np.abs(k_planes).max())) * 1.15
    data, layout = [], {}
    for i in range(n):
        ax = "" if i == 0 else str(i + 1)
        for name, vec, color in (("query", q_planes[i], "#D55E00"), ("key", k_planes[i], "#0072B2")):
            data.append({"type": "scatter", "mode": "lines+markers", "x": [0, float(vec[0])], "y": [0, float(vec[1])],
                         "xaxis": f"x{ax}", "yaxis": f"y{ax}", "name": name, "showlegend": i == 0,
                         "legendgroup": name, "line": {"color": color, "width": 3},
                         "marker": {"size": [0, 9], "color": color}})
        layout[f"xaxis{ax}"] = {"domain": [i * (w + gap), i * (w + gap) + w], "range": [-lim, lim], "zeroline": True,
                                "showticklabels": False, "title": {"text": f"plane {i}"}}
        layout[f"yaxis{ax}"] = {"range": [-lim, lim], "scaleanchor": f"x{ax}", "showticklabels": False,
                                "anchor": f"x{ax}"}
    layout.update({"title": {"text": html.escape(title)}, "height": height,
                   "margin": {"l": 10, "r": 10, "t": 40, "b": 40}, "legend": {"orientation": "h", "y": 1.12}})
    return {"data": data, "layout": layout}


def scatter_positions(points, title: str, height: int = 380) -> dict:
    """Positions as points in 2-D, coloured by position and labelled with it."""
    pts = np.asarray(points)
    T = len(pts)
    return {"data": [{
        "type": "scatter", "mode": "markers+text", "x": pts[:, 0].tolist(), "y": pts[:, 1].tolist(),
        "text": [str(i) for i in range(T)], "textposition": "top center",
        "marker": {"color": list(range(T)), "colorscale": COLORSCALE, "size": 9, "showscale": True,
                   "colorbar": {"title": {"text": "position"}, "thickness": 12}},
        "hovertemplate": "position %{text}<extra></extra>"}],
        "layout": {"title": {"text": html.escape(title)}, "height": height,
                   "margin": {"l": 40, "r": 10, "t": 40, "b": 40},
                   "xaxis": {"title": {"text": "component 1"}}, "yaxis": {"title": {"text": "component 2"}}}}


def logit_lens_figure(lens: dict, tokens: Sequence[str], decode, height: int = 300) -> dict:
    """The logit lens: for every layer (rows) and position (columns), the next token the model
    would predict from the residual stream there, written in the cell, shaded by its probability."""
    probs = np.asarray(lens["probs"])[..., 0]  # (L+1, T)
    guess = [[token_label(decode([int(t)])) for t in row] for row in np.asarray(lens["tokens"])[..., 0]]
    T = len(tokens)
    return {"data": [{
        "type": "heatmap", "z": np.round(probs, 3).tolist(), "x": list(range(T)), "y": list(lens["layers"]),
        "zmin": 0.0, "zmax": 1.0, "colorscale": COLORSCALE, "text": guess, "texttemplate": "%{text}",
        "textfont": {"family": "monospace"}, "colorbar": {"title": {"text": "probability"}, "thickness": 12},
        "hovertemplate": "%{y}, position %{x}: guesses '%{text}' with p = %{z:.2f}<extra></extra>"}],
        "layout": {"title": {"text": "logit lens: the next-token guess read from each layer's residual stream"},
                   "height": height, "margin": {"l": 110, "r": 20, "t": 40, "b": 40},
                   "xaxis": {**_axis(tokens, (0, 1), "y", T <= 48), "title": {"text": "position (input token)"}},
                   "yaxis": {"autorange": "reversed", "title": {"text": ""}}}}


def residual_norm_figure(lens: dict, tokens: Sequence[str], height: int = 300) -> dict:
    """The residual stream's norm at each position, one line per layer."""
    norms = np.asarray(lens["norm"])
    series = {name: (list(range(len(tokens))), np.round(norms[i], 3).tolist()) for i, name in enumerate(lens["layers"])}
    fig = lines_figure(series, "residual stream norm per layer", "position", "‖x‖", height=height)
    fig["layout"]["xaxis"].update(tickmode="array", tickvals=list(range(len(tokens))),
                                  ticktext=[token_label(t) for t in tokens] if len(tokens) <= 48 else [])
    return fig


def routing_figure(gates: np.ndarray, tokens: Sequence[str], chosen: np.ndarray, height: int = 420) -> dict:
    """A mixture's routing of one sequence in one layer: ``gates`` (T, E) router probabilities, one
    row per token, one column per expert; ``chosen`` (T, k) the experts each token went to (marked)."""
    T, E = gates.shape
    labels = [token_label(t) for t in tokens]
    trace = {"type": "heatmap", "z": np.round(gates, 4).tolist(), "x": list(range(E)), "y": list(range(T)),
             "zmin": 0.0, "zmax": 1.0, "colorscale": COLORSCALE, "colorbar": {"title": {"text": "gate"}, "thickness": 12},
             "customdata": [[labels[t]] * E for t in range(T)],
             "hovertemplate": "token %{y} '%{customdata}' → expert %{x}<br>router probability %{z:.3f}<extra></extra>"}
    marks = {"type": "scatter", "mode": "markers", "x": [int(e) for row in chosen for e in row],
             "y": [t for t, row in enumerate(chosen) for _ in row], "name": "chosen",
             "marker": {"symbol": "circle-open", "size": 12, "color": "#d55e00", "line": {"width": 2}},
             "hoverinfo": "skip", "showlegend": True}
    layout = {"height": height, "margin": {"l": 50, "r": 20, "t": 30, "b": 40},
              "legend": {"orientation": "h", "y": -0.12},
              "xaxis": {"title": {"text": "expert"}, "tickmode": "linear", "dtick": 1, "tick0": 0},
              "yaxis": {**_axis(tokens, (0, 1), "x", True, reverse=True), "title": {"text": "token"}}}
    return {"data": [trace, marks], "layout": layout}


HIGHLIGHT = [[0.0, "rgba(253,231,37,0)"], [1.0, "rgba(253,231,37,0.8)"]]  # viridis' yellow, clear to bright


def scene_figure(image: np.ndarray, weights: np.ndarray | None = None, title: str = "", height: int = 330) -> dict:
    """An RGB image (H, W, 3 uint8) with, optionally, one weight per patch (a (g, g) grid, row-major
    as the patches are cut) laid over it as a highlight: where a word's query looked. The scale
    tops out at the largest weight, or at four times an even spread if that is larger (so an even
    spread shows as a faint haze, never as a bright one)."""
    H, W = image.shape[:2]
    data = [{"type": "image", "z": image.tolist(), "hoverinfo": "skip"}]
    if weights is not None:
        g = weights.shape[0]
        p = H / g
        data.append({"type": "heatmap", "z": np.round(weights, 4).tolist(), "x0": p / 2 - 0.5, "dx": p,
                     "y0": p / 2 - 0.5, "dy": p, "colorscale": HIGHLIGHT, "zmin": 0.0,
                     "zmax": max(float(weights.max()), 4.0 * float(weights.sum()) / weights.size),
                     "colorbar": {"thickness": 10, "len": 0.8},
                     "hovertemplate": "patch at x %{x:.0f}, y %{y:.0f} px: weight %{z:.3f}<extra></extra>"})
    return {"data": data, "layout": {
        "title": {"text": html.escape(title)}, "height": height, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "xaxis": {"visible": False, "range": [-0.5, W - 0.5], "constrain": "domain"},
        "yaxis": {"visible": False, "range": [H - 0.5, -0.5], "scaleanchor": "x", "constrain": "domain"}}}


CACHE_COLOURS = [[0.0, "#eeeeee"], [0.33, "#eeeeee"], [0.34, "#9ecae1"], [0.66, "#9ecae1"], [0.67, "#08519c"],
                 [1.0, "#08519c"]]  # not held, summarised in a state, held token by token


def cache_figure(grid: np.ndarray, tokens: Sequence[str], written_from: int, title: str, height: int = 260) -> dict:
    """What each layer's cache holds: rows are layers, columns the text's positions; dark = the
    token's key and value are held, light = folded into a running state or a block summary, grey =
    not held (evicted, or not read yet). ``written_from``: the first written position (a line)."""
    grid = np.asarray(grid, dtype=float)
    names = ["not held", "summarised", "held"]
    labels = [token_label(t) for t in tokens]
    custom = [[[labels[j], names[int(v)]] for j, v in enumerate(row)] for row in grid]
    trace = {"type": "heatmap", "z": grid.tolist(), "x": list(range(grid.shape[1])),
             "y": [f"layer {i}" for i in range(grid.shape[0])], "zmin": 0, "zmax": 2, "colorscale": CACHE_COLOURS,
             "showscale": False, "xgap": 1, "ygap": 3, "customdata": custom,
             "hovertemplate": "%{y}, position %{x} '%{customdata[0]}': %{customdata[1]}<extra></extra>"}
    layout = {"title": {"text": html.escape(title)}, "height": height, "margin": {"l": 70, "r": 10, "t": 40, "b": 40},
              "xaxis": {**_axis(tokens, (0, 1), "y", True), "title": {"text": "position in the text"}},
              "yaxis": {"autorange": "reversed"},
              "shapes": [{"type": "line", "x0": written_from - 0.5, "x1": written_from - 0.5, "y0": -0.5,
                          "y1": grid.shape[0] - 0.5, "line": {"color": "#D55E00", "width": 2, "dash": "dot"}}]}
    return {"data": [trace], "layout": layout}


def reach_figure(reach: np.ndarray, change: np.ndarray, tokens: Sequence[str], title: str, height: int = 330) -> dict:
    """Top: for each layer, which characters can reach the last position's output (1) through
    stacked attention. Bottom: the measured change of the next prediction when each character
    alone is replaced (log scale; exactly 0 is drawn at the floor: forgotten)."""
    reach = np.asarray(reach, dtype=float)
    floor = 1e-7
    shown = np.maximum(np.asarray(change, dtype=float), floor)
    labels = [token_label(t) for t in tokens]
    heat = {"type": "heatmap", "z": reach.tolist(), "x": list(range(reach.shape[1])),
            "y": [f"layer {i} reaches" for i in range(reach.shape[0])], "zmin": 0, "zmax": 1,
            "colorscale": [[0, "#eeeeee"], [1, "#0072B2"]], "showscale": False, "xgap": 1, "ygap": 3,
            "xaxis": "x", "yaxis": "y", "customdata": [labels] * reach.shape[0],
            "hovertemplate": "%{y} position %{x} '%{customdata}': %{z}<extra></extra>"}
    bars = {"type": "bar", "x": list(range(len(shown))), "y": shown.tolist(), "xaxis": "x", "yaxis": "y2",
            "marker": {"color": ["#0072B2" if c >= 1e-6 else "#bbbbbb" for c in change]}, "customdata": labels,
            "hovertemplate": "position %{x} '%{customdata}': the next prediction moves by %{y:.2e}<extra></extra>"}
    layout = {"title": {"text": html.escape(title)}, "height": height, "showlegend": False,
              "margin": {"l": 110, "r": 10, "t": 40, "b": 40},
              "xaxis": {**_axis(tokens, (0, 1), "y2", True), "title": {"text": "position in the text"}},
              "yaxis": {"domain": [0.62, 1.0], "autorange": "reversed"},
              "yaxis2": {"domain": [0.0, 0.52], "type": "log", "title": {"text": "change"}, "exponentformat": "power"}}
    return {"data": [heat, bars], "layout": layout}


def memory_figure(rows: Sequence[dict], height: int = 380) -> dict:
    """Generation measured against context length, one figure with two panels: tokens per second
    (left) and the cache's memory (right), one line per kind cached (solid) and recomputed (dashed,
    speed only: without a cache there is nothing kept)."""
    data = []
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for i, kind in enumerate(kinds):
        style = series_style(kind, i)
        for cached in (True, False):
            pts = sorted((r["context"], r["tokens_per_s"], r["cache_bytes"]) for r in rows
                         if r["kind"] == kind and r["cached"] == cached)
            if not pts:
                continue
            name = html.escape(f"{kind}, {'cached' if cached else 'read again'}")
            line = {"color": style.color, "dash": "solid" if cached else "dash", "width": 2}
            data.append({"type": "scatter", "mode": "lines+markers", "x": [p[0] for p in pts], "y": [p[1] for p in pts],
                         "name": name, "legendgroup": name, "line": line, "marker": {"symbol": style.marker, "size": 7},
                         "xaxis": "x", "yaxis": "y", "hovertemplate": f"{name}<br>N %{{x:,}}: %{{y:,.0f}} tokens/s<extra></extra>"})
            if cached:
                data.append({"type": "scatter", "mode": "lines+markers", "x": [p[0] for p in pts],
                             "y": [p[2] / 1024 for p in pts], "name": name, "legendgroup": name, "showlegend": False,
                             "line": line, "marker": {"symbol": style.marker, "size": 7}, "xaxis": "x2", "yaxis": "y2",
                             "hovertemplate": f"{name}<br>N %{{x:,}}: %{{y:,.1f}} KiB<extra></extra>"})
    log_x = {"type": "log", "dtick": math.log10(2), "tickformat": ",d", "title": {"text": "context length N (tokens)"}}
    return {"data": data, "layout": {
        "title": {"text": "Writing a token: speed and what is kept, against the context"}, "height": height,
        "margin": {"l": 60, "r": 10, "t": 40, "b": 45}, "legend": {"orientation": "h", "y": -0.3},
        "xaxis": {**log_x, "domain": [0, 0.45]}, "xaxis2": {**log_x, "domain": [0.55, 1], "anchor": "y2"},
        "yaxis": {"type": "log", "title": {"text": "tokens per second"}, "exponentformat": "SI"},
        "yaxis2": {"type": "log", "title": {"text": "cache memory (KiB, all layers)"}, "anchor": "x2",
                   "exponentformat": "SI"}}}


def forgetting_html(turns: Sequence[str], forgot) -> str:
    """The conversation, one turn a line, each character coloured by what the next written
    character can depend on: dark = reached by the first layer, light = only through stacked
    layers, grey struck through = forgotten. Every character is escaped (it is what a user typed)."""
    first, last = forgot.reach[0], forgot.reach[-1]
    lines, pos = [], 0
    for turn in turns:
        spans = []
        for ch in turn + "\n":
            if first[pos]:
                style, what = "background: #0072B2; color: #fff;", "reached in layer 0"
            elif last[pos]:
                style, what = "background: #9ecae1; color: #000;", "reached through stacked layers"
            else:
                style, what = "color: #999; text-decoration: line-through;", "forgotten"
            shown = token_label(ch) if ch.isspace() else html.escape(ch)
            spans.append(f'<span class="mem-ch" title="{what}" style="{style} padding: 1px 1px; font-family: monospace; '
                         f'font-size: 1.15em;">{shown}</span>')
            pos += 1
        lines.append("".join(spans))
    return '<div class="mem-turns" style="line-height: 2.0;">' + "<br>".join(lines) + "</div>"


def reliability_figure(edges: Sequence[float], confidence: Sequence[float], accuracy: Sequence[float],
                       counts: Sequence[int], title: str, height: int = 380) -> dict:
    """A reliability diagram (Guo et al. 2017): one bar per equal-width confidence bin, as high as the
    share of its predictions that were right, against the diagonal a calibrated model sits on; each
    bin's mean confidence marked, its count written above it. Empty bins draw nothing."""
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    width = edges[1] - edges[0]
    full = [i for i, c in enumerate(counts) if c]
    bars = {"type": "bar", "x": [centres[i] for i in full], "y": [round(accuracy[i], 4) for i in full],
            "width": width * 0.95, "name": "accuracy in the bin", "marker": {"color": OKABE_ITO[3]},
            "text": [f"{counts[i]:,}" for i in full], "textposition": "outside", "cliponaxis": False,
            "customdata": [[edges[i], edges[i + 1], counts[i], confidence[i]] for i in full],
            "hovertemplate": "confidence in (%{customdata[0]:.1f}, %{customdata[1]:.1f}]: %{customdata[2]:,} "
                             "predictions<br>right %{y:.3f} of the time, mean confidence %{customdata[3]:.3f}"
                             "<extra></extra>"}
    marks = {"type": "scatter", "mode": "markers", "x": [centres[i] for i in full],
             "y": [round(confidence[i], 4) for i in full], "name": "mean confidence in the bin",
             "marker": {"symbol": "line-ew-open", "size": 18, "color": OKABE_ITO[4], "line": {"width": 3}},
             "hovertemplate": "mean confidence %{y:.3f}<extra></extra>"}
    diagonal = {"type": "scatter", "mode": "lines", "x": [0, 1], "y": [0, 1], "name": "calibrated (accuracy = confidence)",
                "line": {"color": "#555", "dash": "dash", "width": 1.5}, "hoverinfo": "skip"}
    return {"data": [bars, marks, diagonal], "layout": {
        "title": {"text": html.escape(title)}, "height": height, "margin": {"l": 60, "r": 10, "t": 40, "b": 45},
        "xaxis": {"title": {"text": "confidence (top-1 probability)"}, "range": [0, 1], "dtick": width},
        "yaxis": {"title": {"text": "accuracy"}, "range": [0, 1.08]}, "bargap": 0,
        "legend": {"orientation": "h", "y": -0.25}}}


def temperature_figure(temperatures: Sequence[float], eces: Sequence[float], nlls: Sequence[float],
                       fitted: float, title: str, height: int = 380) -> dict:
    """ECE (left axis) and NLL (right axis) of one split against the temperature the logits are
    divided by (log axis), the fitted temperature marked."""
    ticks = [t for t in (0.25, 0.5, 1, 2, 4) if temperatures[0] <= t <= temperatures[-1]]
    data = [{"type": "scatter", "mode": "lines+markers", "x": list(temperatures), "y": [round(e, 5) for e in eces],
             "name": "ECE", "line": {"color": OKABE_ITO[3], "width": 2}, "marker": {"size": 6},
             "hovertemplate": "T = %{x:.3g}: ECE %{y:.4f}<extra></extra>"},
            {"type": "scatter", "mode": "lines", "x": list(temperatures), "y": [round(v, 5) for v in nlls],
             "name": "NLL (right axis)", "yaxis": "y2", "line": {"color": OKABE_ITO[4], "dash": "dot", "width": 2},
             "hovertemplate": "T = %{x:.3g}: NLL %{y:.4f} nats<extra></extra>"}]
    shapes = mark_lines([fitted])
    return {"data": data, "layout": {
        "title": {"text": html.escape(title)}, "height": height, "margin": {"l": 60, "r": 60, "t": 40, "b": 45},
        "xaxis": {"type": "log", "title": {"text": "temperature T (logits divided by T)"}, "tickvals": ticks,
                  "ticktext": [f"{t:g}" for t in ticks]},
        "yaxis": {"title": {"text": "ECE"}, "rangemode": "tozero"},
        "yaxis2": {"title": {"text": "NLL (nats)"}, "overlaying": "y", "side": "right", "showgrid": False},
        "legend": {"orientation": "h", "y": -0.25}, "shapes": shapes,
        "annotations": [{"x": math.log10(fitted), "y": 1, "yref": "paper", "text": f"fitted T = {fitted:.3f}",
                         "showarrow": False, "xanchor": "left", "yanchor": "top", "font": {"size": 12}}]}}
