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


@contextlib.contextmanager
def app_server(port: int | None = None, timeout: float = 60.0, quiet: bool = True):
    """Start ``streamlit run app.py`` on 127.0.0.1 and yield its base URL; stop it afterwards."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--global.developmentMode", "false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL if quiet else subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    app_server.last_pid = proc.pid  # for callers that watch the server (memory)
    base = f"http://127.0.0.1:{port}"
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


def wait_until_idle(page, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script and drawn what it sent."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    page.wait_for_timeout(300)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)


def wait_for_charts(page, count: int = 1, timeout: float = 30_000) -> int:
    """Wait until plotly has drawn at least ``count`` charts (it draws after Streamlit is idle)."""
    selector = "[data-testid='stPlotlyChart'] .main-svg"
    page.wait_for_function(f"document.querySelectorAll(\"{selector}\").length >= {count}", timeout=timeout)
    return page.locator(selector).count()
