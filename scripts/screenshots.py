"""Screenshot docs: every page's recipes (from the page list) and every lesson, from the app served
locally, in Debian's Chromium; and the reference of every attention kind and encoding, read from
the registries.

    python scripts/screenshots.py [--only NAME ...] [--reference-only]

Writes docs/img/<name>.png and docs/README.md (the gallery, then the reference). Each shot waits
until Streamlit has finished running (training, measuring and experiments included) and plotly has
drawn. Requests off this machine are blocked, as in an offline classroom.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.attention import ATTENTION, REFERENCES  # noqa: E402
from explorer.encodings import ENCODINGS  # noqa: E402
from explorer.lessons import LESSONS  # noqa: E402
from explorer.pages import PAGES, Shot  # noqa: E402

OUT = ROOT / "docs" / "img"


def shots() -> list[tuple[str, Shot]]:
    """``(path, shot)`` for every page's recipes, then one per lesson (opened from the landing page)."""
    out = [(page.path, shot) for page in PAGES.values() for shot in page.shots]
    out += [("/", Shot(f"lesson_{lid}", f"?lesson={lid}", 2, f"Lesson: {LESSONS[lid].title}."))
            for lid in LESSONS.names()]
    for page in PAGES.values():  # what a class sees: a projector in presentation mode, and a phone
        out += [(page.path, Shot(f"size_{page.id}_projector", "?present=true", page.charts,
                                 f"{page.title} at 1280×720 in presentation mode (the first screen).",
                                 {"viewport": {"width": 1280, "height": 720}})),
                 (page.path, Shot(f"size_{page.id}_400px", "", page.charts,
                                  f"{page.title} at 400 px wide (the first two screens).",
                                  {"viewport": {"width": 400, "height": 1600}}))]
    return out


def reference_markdown() -> str:
    """Every attention kind, reference kernel and positional encoding, from its registry entry."""
    lines = ["## Reference: attention kinds", "",
             "Each kind is one registry entry (`explorer/attention/`); every page, formula and benchmark reads it.",
             ""]
    for kind in ATTENTION.values():
        size = f" Size control: *{kind.size_control.label}*." if kind.size_control else ""
        lines += [f"- **{kind.name}** — {kind.summary}. {kind.theory}{size} ({kind.paper})"]
    for ref in REFERENCES.values():
        lines += [f"- {ref.theory} ({ref.paper})"]
    lines += ["", "## Reference: positional encodings", ""]
    for cls in ENCODINGS.values():
        past = "" if cls.extrapolates else " Cannot be evaluated past its training length."
        lines += [f"- **{cls.name}** — {cls.summary}.{past} ({cls.paper})"]
    return "\n".join(lines) + "\n"


def gallery_markdown() -> str:
    lines = ["# Screenshot gallery", "",
             "Made by `python scripts/screenshots.py` from the app itself, in headless Chromium, offline.", ""]
    for path, shot in shots():
        lines += [f"## {shot.name}", "", f"{shot.caption} (`{path.rstrip('/')}/{shot.query}`)".replace("//", "/"), "",
                  f"![{shot.name}](img/{shot.name}.png)", ""]
    return "\n".join(lines) + "\n" + reference_markdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="names of shots to retake")
    ap.add_argument("--reference-only", action="store_true", help="rewrite docs/README.md only, no browser")
    args = ap.parse_args()
    if not args.reference_only:
        from scripts.appserver import (app_server, axis_text_outside, chromium, offline_context, wait_for_charts,
                                       wait_until_idle)

        OUT.mkdir(parents=True, exist_ok=True)
        clipped = 0
        with app_server() as base, chromium() as browser:
            for path, shot in shots():
                if args.only and shot.name not in args.only:
                    continue
                ctx = offline_context(browser, **{"viewport": {"width": 1400, "height": 2000}, **shot.options})
                page = ctx.new_page()
                page.goto(base + path + shot.query)
                wait_until_idle(page, timeout=600_000)
                wait_for_charts(page, shot.charts)
                page.wait_for_timeout(800)
                page.screenshot(path=str(OUT / f"{shot.name}.png"))
                cut = axis_text_outside(page)  # a label past its figure's margins: the figure's builder needs more room
                ctx.close()
                print(shot.name + (f"  AXIS TEXT OUTSIDE ITS FIGURE: {cut}" if cut else ""))
                clipped += bool(cut)
        if clipped:
            raise SystemExit(f"{clipped} shots have axis text outside its figure (see above)")
    (ROOT / "docs" / "README.md").write_text(gallery_markdown())


if __name__ == "__main__":
    main()
