"""Serve the app on a free local port and drive it with Debian's Chromium (Playwright for Python).

Used by the browser tests and the scripts that take screenshots or load the server. Chromium is
``/usr/bin/chromium`` (``apt-get install -y chromium``); ``playwright install`` is never needed.
Every request that does not go to the local server is blocked, as in an offline classroom.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import re
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(str):
    """The base URL of a running app server (a string), with its process id for callers that watch it."""
    pid: int = 0


@contextlib.contextmanager
def app_server(port: int | None = None, timeout: float = 120.0, quiet: bool = True, env: dict | None = None):
    """Start ``streamlit run app.py`` on 127.0.0.1 and yield its base URL (a ``Server``: ``.pid``
    is the server's process); stop it afterwards."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--global.developmentMode", "false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = Server(f"http://127.0.0.1:{port}")
    base.pid = proc.pid
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"the app server did not start (exit {proc.poll()}):\n{out}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def chromium():
    """A headless Chromium browser (Playwright), with every non-local request blocked."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def offline_context(browser, **kw):
    """A browser context that lets through only requests to this machine (and inline data)."""
    context = browser.new_context(**kw)
    context.set_default_timeout(60_000)  # Playwright's 30 s assumes an idle machine; the tests may share two cores
    blocked: list[str] = []

    def route(r):
        url = r.request.url
        if url.startswith(("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "data:", "blob:", "about:")):
            r.continue_()
        else:
            blocked.append(url)
            r.abort()

    context.route("**/*", route)
    context.blocked = blocked  # type: ignore[attr-defined]
    return context


IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def wait_until_idle(page, timeout: float = 120_000) -> None:
    """Wait until Streamlit has finished running the script and drawn what it sent, and no job is
    running behind a live view (no progress bar: training, measuring and experiments show one)."""
    deadline = time.time() + timeout / 1000
    calm = 0
    while calm < 4:  # idle and no progress bar for four checks in a row (a lesson may switch pages first)
        page.wait_for_selector(IDLE, timeout=max(1, (deadline - time.time()) * 1000))
        busy = page.locator("[data-testid='stProgress']").count() > 0
        calm = 0 if busy else calm + 1
        if time.time() > deadline:
            raise TimeoutError("the page did not become idle in time")
        page.wait_for_timeout(300)


DRAWN = ("Array.from(document.querySelectorAll(\"[data-testid='stPlotlyChart']\"))"
         ".filter(c => c.querySelector('.main-svg') && c.offsetParent !== null).length")


# Every axis text plotly drew (tick labels, axis titles, colour bars, legend entries) that reaches more
# than a pixel past its figure's edge, as [figure title, kind, text, pixels past]: the figures set their
# own margins (ui.plotly_figure turns plotly's automatic margins off), so a label that does not fit is cut.
AXIS_TEXT_OUTSIDE = """(() => { const out = [];
  document.querySelectorAll("[data-testid='stPlotlyChart']").forEach((chart, i) => {
    const svg = chart.querySelector('.main-svg');
    if (!svg || chart.offsetParent === null) return;
    const box = svg.getBoundingClientRect();
    const title = (chart.querySelector('.gtitle') || {}).textContent || ('chart ' + i);
    chart.querySelectorAll('text').forEach(t => {  // every subplot's: xtick, x2tick, ..., g-xtitle, g-x2title, ...
      const g = t.parentNode.getAttribute('class') || '';
      if (!(/^[xy][0-9]*tick$/.test(g) || /^g-[xy][0-9]*title$/.test(g) || t.classList.contains('legendtext')
            || t.closest('.colorbar'))) return;
      const r = t.getBoundingClientRect();
      if (!r.width) return;
      const past = Math.max(box.left - r.left, r.right - box.right, box.top - r.top, r.bottom - box.bottom);
      if (past > 1) out.push([title.slice(0, 60), g, t.textContent.slice(0, 30), Math.round(past)]);
    });
  });
  return out; })()"""


def axis_text_outside(page) -> list:
    """The axis texts drawn past their figure's edge (``AXIS_TEXT_OUTSIDE``); empty when all fit."""
    return page.evaluate(AXIS_TEXT_OUTSIDE)


def wait_for_charts(page, count: int = 1, timeout: float = 60_000) -> int:
    """Wait until plotly has drawn at least ``count`` visible charts (it draws after Streamlit is
    idle); returns how many are drawn."""
    page.wait_for_function(f"{DRAWN} >= {count}", timeout=timeout)
    return page.evaluate(DRAWN)


def steps_seen(page, pattern: str, count: int = 3, charts: int = 0, tries: int = 600) -> set:
    """Read the page's text every 100 ms while a job runs and collect the step numbers ``pattern``
    (a regex with one group) shows, until ``count`` different ones were seen and at least ``charts``
    charts are drawn (or ``tries`` reads): the live view redrawing as the job goes on."""
    seen = set()
    for _ in range(tries):
        m = re.search(pattern, page.evaluate("document.body.innerText"))
        if m:
            seen.add(int(m.group(1)))
        if len(seen) >= count and page.evaluate(DRAWN) >= charts:
            break
        page.wait_for_timeout(100)
    return seen
