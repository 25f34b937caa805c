"""Screenshot of the Attention Lab after training, for the README: docs/img/attention_lab.png

    python scripts/screenshot_lab.py
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.appserver import app_server, chromium, offline_context, wait_until_idle  # noqa: E402


def main() -> None:
    out = ROOT / "docs" / "img" / "attention_lab.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with app_server() as base, chromium() as browser:
        page = offline_context(browser, viewport={"width": 1400, "height": 1500}).new_page()
        page.goto(base + "/")
        wait_until_idle(page)
        page.get_by_role("button", name="Train").click()
        page.wait_for_selector("text=300 of 300 steps", timeout=120_000)
        wait_until_idle(page)
        page.screenshot(path=str(out), full_page=True)
    print(out)


if __name__ == "__main__":
    main()
