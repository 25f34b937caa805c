"""Screenshot docs: every page and every lesson, from the app served locally, in Debian's Chromium.

    python scripts/screenshots.py [--only NAME ...]

Writes docs/img/<page-or-lesson>.png and docs/README.md (the gallery). Each shot waits until
Streamlit has finished running (training, measuring and experiments included) and plotly has
drawn. Requests off this machine are blocked, as in an offline classroom.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.lessons import LESSONS  # noqa: E402
from scripts.appserver import app_server, chromium, offline_context, wait_for_charts, wait_until_idle  # noqa: E402

OUT = ROOT / "docs" / "img"

# name, path + query, charts to wait for, one line for the gallery, browser options
SHOTS = [
    ("attention_lab", "/?lab_trained=1", 3,
     "Attention Lab after training on reverse: the loss curve, the output shaded by probability, the anti-diagonal.", {}),
    ("attention_lab_untrained", "/", 2, "Attention Lab on first open: an untrained model's attention is a blur.", {}),
    ("attention_lab_presentation", "/?lab_trained=1&present=true", 3,
     "Presentation mode: bigger text for a projector, sidebar collapsed.", {}),
    ("attention_lab_dark", "/?lab_trained=1", 3, "The dark theme (the viewer's system setting, or the settings menu).",
     {"color_scheme": "dark"}),
    ("complexity", "/complexity", 2, "Complexity: attention FLOPs and memory in theory, before measuring.", {}),
    ("positions", "/positions", 6, "Positional encodings: sinusoidal table and similarity, RoPE, ALiBi.", {}),
] + [
    (f"lesson_{lid}", f"/?lesson={lid}", 2, f"Lesson: {LESSONS[lid].title}.", {}) for lid in LESSONS.names()
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="names of shots to retake")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    with app_server() as base, chromium() as browser:
        for name, path, charts, _, options in SHOTS:
            if args.only and name not in args.only:
                continue
            ctx = offline_context(browser, viewport={"width": 1400, "height": 2000}, **options)
            page = ctx.new_page()
            page.goto(base + path)
            wait_until_idle(page, timeout=300_000)
            wait_for_charts(page, charts)
            page.wait_for_timeout(800)
            page.screenshot(path=str(OUT / f"{name}.png"))
            ctx.close()
            print(name)
    lines = ["# Screenshot gallery", "",
             "Made by `python scripts/screenshots.py` from the app itself, in headless Chromium, offline.", ""]
    for name, path, _, line, _ in SHOTS:
        lines += [f"## {name}", "", f"{line} (`{path}`)", "", f"![{name}](img/{name}.png)", ""]
    (ROOT / "docs" / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
