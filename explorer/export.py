"""Figures as files for slides: SVG (vector) and PNG at projector resolution (1,920 pixels wide),
rendered from the same figure dicts the pages draw, by plotly's own exporter (Kaleido) driving the
machine's Chromium. Nothing is downloaded: with no Chromium the pages say so and offer the camera
button of each chart (a PNG at three times its size, drawn in the student's browser).

Kaleido runs in a child process of its own (``python -m explorer.export``), one Chromium for both
files. A Chromium that hangs while starting (it happens on a loaded machine, and Kaleido then waits
on its pipe for ever) is killed with its child process (the whole tree) after ``timeout_s`` and tried once more, so an
export never holds one of the server's cores for good."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PNG_WIDTH = 1920  # pixels: a projector's width
LAYOUT_WIDTH = 960  # pixels: the figure's own width in the files (the PNG is this, scaled up)
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FORMATS = ("svg", "png")
ROOT = Path(__file__).resolve().parents[1]  # where ``-m explorer.export`` is found


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


def options(figure: dict, fmt: str) -> dict:
    """Kaleido's options for one file: 960 layout pixels wide at the figure's own height; the PNG
    scaled to 1,920 pixels."""
    height = int((figure.get("layout") or {}).get("height") or 450)
    return {"format": fmt, "width": LAYOUT_WIDTH, "height": height,
            "scale": PNG_WIDTH / LAYOUT_WIDTH if fmt == "png" else 1}


def figure_files(fig, timeout_s: float = 60.0, tries: int = 2) -> dict[str, bytes]:
    """The figure as ``{"svg": …, "png": …}``, rendered in a child process; raises RuntimeError with a
    sentence for a learner when it cannot be (no Chromium, a crash, or ``tries`` runs each over
    ``timeout_s``)."""
    path = browser()
    if path is None:
        raise RuntimeError("no Chromium on this server to render figures with")
    import plotly.io as pio

    spec = pio.to_json(fig, validate=True)  # a figure dict or a plotly Figure; numpy arrays become lists
    env = dict(os.environ, BROWSER_PATH=path)
    for attempt in range(tries):
        child = subprocess.Popen([sys.executable, "-m", "explorer.export"], cwd=ROOT, env=env, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 start_new_session=True)
        try:
            out, err = child.communicate(spec, timeout=timeout_s)
        except BaseException as e:  # a hang (or the server stopping): nothing of it outlives the call
            _kill(child)
            if isinstance(e, subprocess.TimeoutExpired):
                continue
            raise
        if child.returncode != 0:
            last = (err.strip().splitlines() or ["it stopped without a message"])[-1]
            raise RuntimeError(f"the renderer failed ({last})")
        return {fmt: base64.b64decode(data) for fmt, data in json.loads(out).items()}
    raise RuntimeError(f"the renderer did not finish in {timeout_s:.0f} s, {tries} times; try again when the "
                       "server is less busy")


def _kill(child: subprocess.Popen) -> None:
    """Kill the child and everything it started (Chromium starts in a session of its own, so its process
    group is not enough: the tree is read from /proc before anything dies)."""
    for pid in [child.pid] + _descendants(child.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    child.wait()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux's /proc; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def _render(spec: str) -> dict[str, str]:
    """In the child: both files from one Chromium, base64 for the pipe."""
    import asyncio

    import kaleido

    figure = json.loads(spec)

    async def both():
        async with kaleido.Kaleido(n=1, timeout=None) as k:  # the parent's timeout kills a hang
            return {fmt: await k.calc_fig(figure, opts=options(figure, fmt)) for fmt in FORMATS}

    return {fmt: base64.b64encode(data).decode() for fmt, data in asyncio.run(both()).items()}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_render(sys.stdin.read())))
