import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


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
