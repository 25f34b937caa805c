import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n N: the cores are shared out between the N workers
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread for the test (the cores are shared: more threads only contend). A test file
    takes it for every test with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def emma():
    """The built-in corpus (read once per process)."""
    from explorer.corpus import builtin

    return builtin()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium through Playwright, shared by every browser test."""
    from scripts.appserver import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def server():
    """The app served on a free local port, shared by every browser test."""
    from scripts.appserver import app_server

    with app_server() as base:
        yield base


@pytest.fixture
def page(browser):
    """A fresh browser context (a new student, offline) and its page; errors and dialogs recorded."""
    from scripts.appserver import offline_context

    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    p = ctx.new_page()
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.dialogs = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    yield p
    ctx.close()
