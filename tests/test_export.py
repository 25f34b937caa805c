"""Figures as files for slides (``explorer.export``): both files from one child process, and a
renderer that hangs is killed, with its Chromium, instead of holding a server core for ever."""
import struct
import subprocess
import time
import uuid

import plotly.graph_objects as go
import pytest

from explorer import export
from explorer.jobs import CANCELLED, Scheduler

pytestmark = pytest.mark.skipif(not export.available(), reason="needs Chromium and kaleido")


def test_a_page_figure_exports_as_svg_and_a_1920_pixel_png():
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"height": 300})
    files = export.figure_files(fig)
    assert files["svg"].startswith(b"<svg") and b"</svg>" in files["svg"]
    assert files["png"][:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", files["png"][16:24])  # the IHDR chunk
    assert (width, height) == (export.PNG_WIDTH, 300 * export.PNG_WIDTH // export.LAYOUT_WIDTH)


def hanging_browser(tmp_path, monkeypatch) -> str:
    """A browser that starts and never answers, found by a marker in its path; returns the marker."""
    marker = uuid.uuid4().hex
    (tmp_path / marker).mkdir()
    fake = tmp_path / marker / "chromium"
    fake.write_text("#!/bin/sh\nwhile true; do sleep 1; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    return marker


def running(marker: str) -> str:
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout


def test_a_renderer_that_hangs_is_killed_and_said_so(tmp_path, monkeypatch):
    marker = hanging_browser(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="did not finish in 3 s, 2 times"):
        export.figure_files(go.Figure(go.Scatter(y=[1, 2])), timeout_s=3, tries=2)
    assert running(marker) == ""  # the fake browser died with its child process


def test_stop_ends_the_renderer_and_its_browser_at_once(tmp_path, monkeypatch):
    """Stop on the server's scheduler: the export job is cancelled at the end of its slice, and its
    close kills the child process and the browser it started (not 60 s later, at its timeout)."""
    marker = hanging_browser(tmp_path, monkeypatch)
    scheduler = Scheduler(memory_budget_bytes=100, workers=1, slice_s=0.05)
    try:
        job = export.ExportJob(go.Figure(go.Scatter(y=[1, 2])), timeout_s=60)
        handle = scheduler.submit(job, "student")
        deadline = time.monotonic() + 30
        while running(marker) == "":  # the child has started its browser
            assert time.monotonic() < deadline, "the export never started its browser"
            time.sleep(0.05)
        handle.release("student")  # what the panel's Stop does
        while handle.status != CANCELLED:
            assert time.monotonic() < deadline, handle.status
            time.sleep(0.05)
        assert running(marker) == "" and job.child is None and job._dir is None
    finally:
        scheduler.shutdown()
