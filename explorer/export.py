"""Figures as files for slides: SVG (vector) and PNG at projector resolution (1,920 pixels wide),
rendered from the same figure dicts the pages draw, by plotly's own exporter (Kaleido) driving the
machine's Chromium. Nothing is downloaded: with no Chromium the pages say so and offer the camera
button of each chart (a PNG at three times its size, drawn in the student's browser).

Kaleido runs in a child process of its own (``python -m explorer.export``), one Chromium for both
files. A Chromium that hangs while starting (it happens on a loaded machine, and Kaleido then waits
on its pipe for ever) is killed with its child process (the whole tree) after ``timeout_s`` and tried once more, so an
export never holds one of the server's cores for good. On the server the export is a job (``ExportJob``) that
waits for its child in slices: Stop ends the child and its Chromium at once."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from .jobs import Job, run_to_end

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


class ExportJob(Job):
    """Both files of one figure, as a job the server's scheduler runs in slices: the first slice starts
    the child process, later ones wait for it. ``close`` (Stop, or the job's end however it ends)
    kills the child and its Chromium, so a stopped export leaves nothing running. A child that takes
    longer than ``timeout_s`` is killed and tried again, ``tries`` times in all; then the job fails
    with a sentence for a learner."""

    title = "exporting a figure"

    def __init__(self, fig, timeout_s: float = 60.0, tries: int = 2, peak_bytes: float = 0.0):
        self.fig, self.timeout_s, self.tries, self.peak_bytes = fig, timeout_s, tries, peak_bytes
        self.key = None  # never shared: a figure may hold what a student typed
        self.attempts = 0
        self.child: Optional[subprocess.Popen] = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        self._started = 0.0
        self._files: Optional[dict[str, bytes]] = None

    def step(self, slice_s: float) -> bool:
        if self.child is None:
            self._start()
        try:
            code = self.child.wait(timeout=max(0.01, min(slice_s, self._started + self.timeout_s - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() - self._started < self.timeout_s:
                return False
            self._stop_child()  # a hang: killed, with its Chromium, and tried again
            if self.attempts >= self.tries:
                raise RuntimeError(f"the renderer did not finish in {self.timeout_s:.0f} s, {self.tries} times; "
                                   "try again when the server is less busy")
            return False
        self.child = None  # exited and reaped: its process id may be another's by now, never to be killed
        out, err = Path(self._dir.name) / "out.json", Path(self._dir.name) / "err.txt"
        if code != 0:
            last = (err.read_text(errors="replace").strip().splitlines() or ["it stopped without a message"])[-1]
            raise RuntimeError(f"the renderer failed ({last})")
        self._files = {fmt: base64.b64decode(data) for fmt, data in json.loads(out.read_text()).items()}
        self.close()
        return True

    def _start(self) -> None:
        path = browser()
        if path is None:
            raise RuntimeError("no Chromium on this server to render figures with")
        import plotly.io as pio

        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="te-export-")
            spec = pio.to_json(self.fig, validate=True)  # a figure dict or a plotly Figure; arrays become lists
            (Path(self._dir.name) / "figure.json").write_text(spec)
        work = Path(self._dir.name)
        with open(work / "err.txt", "wb") as err:
            self.child = subprocess.Popen([sys.executable, "-m", "explorer.export", str(work / "figure.json"),
                                           str(work / "out.json")], cwd=ROOT, env=dict(os.environ, BROWSER_PATH=path),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                          start_new_session=True)
        self.attempts += 1
        self._started = time.monotonic()

    def _stop_child(self) -> None:
        if self.child is not None:
            _kill(self.child)
            self.child = None

    def result(self) -> Optional[dict[str, bytes]]:
        return self._files

    def progress(self) -> tuple[float, str]:
        return 0.0, "rendering" + (f" (try {self.attempts} of {self.tries})" if self.attempts > 1 else "")

    def close(self) -> None:
        self._stop_child()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def figure_files(fig, timeout_s: float = 60.0, tries: int = 2) -> dict[str, bytes]:
    """The figure as ``{"svg": …, "png": …}``, rendered in a child process (``ExportJob``, run here to
    its end); raises RuntimeError with a sentence for a learner when it cannot be (no Chromium, a
    crash, or ``tries`` runs each over ``timeout_s``)."""
    job = ExportJob(fig, timeout_s, tries)
    try:
        return run_to_end(job)
    finally:
        job.close()


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


if __name__ == "__main__":  # python -m explorer.export FIGURE_JSON OUT_JSON
    Path(sys.argv[2]).write_text(json.dumps(_render(Path(sys.argv[1]).read_text())))
