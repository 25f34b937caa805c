"""Figures as files for slides (``explorer.export``): both files from one child process, and a
renderer that hangs is killed, with its Chromium, instead of holding a server core for ever."""
import struct
import subprocess
import uuid

import plotly.graph_objects as go
import pytest

from explorer import export

pytestmark = pytest.mark.skipif(not export.available(), reason="needs Chromium and kaleido")


def test_a_page_figure_exports_as_svg_and_a_1920_pixel_png():
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"height": 300})
    files = export.figure_files(fig)
    assert files["svg"].startswith(b"<svg") and b"</svg>" in files["svg"]
    assert files["png"][:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", files["png"][16:24])  # the IHDR chunk
    assert (width, height) == (export.PNG_WIDTH, 300 * export.PNG_WIDTH // export.LAYOUT_WIDTH)


def test_a_renderer_that_hangs_is_killed_and_said_so(tmp_path, monkeypatch):
    marker = uuid.uuid4().hex
    (tmp_path / marker).mkdir()
    fake = tmp_path / marker / "chromium"
    fake.write_text("#!/bin/sh\nwhile true; do sleep 1; done\n")  # a browser that starts and never answers
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    with pytest.raises(RuntimeError, match="did not finish in 3 s, 2 times"):
        export.figure_files(go.Figure(go.Scatter(y=[1, 2])), timeout_s=3, tries=2)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    assert left == ""  # the fake browser died with its child process
