"""Figures as files for slides: SVG (vector) and PNG at projector resolution (1,920 pixels wide),
rendered from the same figure dicts the pages draw, by plotly's own exporter (Kaleido) driving the
machine's Chromium. Nothing is downloaded: with no Chromium the pages say so and offer the camera
button of each chart (a PNG at three times its size, drawn in the student's browser)."""
from __future__ import annotations

import os
import shutil

PNG_WIDTH = 1920  # pixels: a projector's width
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def browser() -> str | None:
    """The Chromium the exporter drives, if this machine has one."""
    for path in (os.environ.get("BROWSER_PATH"),) + CHROMIUM:
        if path and shutil.which(path):
            return path
    return None


def available() -> bool:
    if browser() is None:
        return False
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def figure_bytes(fig, fmt: str = "svg") -> bytes:
    """The figure as an SVG, or a PNG 1,920 pixels wide (its own aspect)."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"format {fmt!r}: choose svg or png")
    path = browser()
    if path is None:
        raise RuntimeError("no Chromium on this server to render figures with")
    os.environ.setdefault("BROWSER_PATH", path)
    import plotly.graph_objects as go
    import plotly.io as pio

    figure = go.Figure(fig)  # a figure dict, or a plotly Figure
    width = 960
    height = int(figure.layout.height or 450)
    scale = PNG_WIDTH / width if fmt == "png" else 1
    return pio.to_image(figure, format=fmt, width=width, height=height, scale=scale)
