"""How fast each page shows its first picture, in real Chromium: cold server and warm server; and each
lesson's promised picture for a first and a second student (fresh browser contexts, one server).
Prints one JSON object.

    python scripts/bench_pages.py [--lessons] [--repeats 2] [--stops 10] [--only-stops]

- page, cold: a fresh server, a fresh browser context opens the page; seconds, on the browser's own
  clock from the start of the navigation, to the first plotly chart drawn, to the page's charts all
  drawn, and to the last change before the page was still (the script finished, no job running,
  nothing changing: the finished picture). ``confirmed_s`` adds the watching that makes sure of it.
- page, warm: the same server, another fresh context (so nothing of the first session is reused but
  what the server shares).
- lesson: a fresh server per lesson; the first student opens ``?lesson=<id>`` and waits until the
  lesson's picture is there (its charts drawn; then idle, no job running); then a second student in a
  fresh context opens the same link. The lessons' runs come from the shelf (``explorer/data/shelf``)
  unless the server runs with ``TE_SHELF=off``. ``--opened-server``: the landing page is visited
  once before the first student (a server that has served a page: its imports done).
- redraws while training: the Lab's live view, counted in the browser (the training status line
  changes each time the fragment redraws) during one default training run.
- Stop (``--stops N``): N times, start a long training run, wait for it to be drawing, click Stop and
  time until the status line says it stopped; then check that the step count stays where it stopped.
Requests off this machine are blocked, as in an offline classroom.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explorer.lessons import LESSONS  # noqa: E402
from explorer.pages import PAGES  # noqa: E402
from scripts.appserver import DRAWN, app_server, chromium, offline_context, wait_until_idle  # noqa: E402

LESSON_CHARTS = {"attention_lab": 3, "complexity": 4, "positions": 4, "multimodal": 3, "incontext": 5, "memory": 3}  # charts of a lesson's finished view


# Installed in the page before any of its own scripts, on the browser's clock (ms since the navigation
# started): when the DOM last changed, and when the page first held 1, 2, ... drawn charts (a plot's
# svg inside a chart: a check that forces no layout, which would slow the page it measures).
WATCH = ("window.__te = {last: 0, charts: {}};"
         "new MutationObserver(() => { const t = performance.now(); window.__te.last = t;"
         " const n = Array.from(document.querySelectorAll(\"[data-testid='stPlotlyChart']\"))"
         ".filter(c => c.querySelector('.main-svg')).length;"
         " for (let k = 1; k <= n; k++) if (!(k in window.__te.charts)) window.__te.charts[k] = t; })"
         ".observe(document, {subtree: true, childList: true, attributes: true, characterData: true});")


def open_and_time(browser, url: str, charts: int, timeout_s: float = 300) -> dict:
    """Open ``url`` in a fresh context and time it by the browser's own clock, from the start of the
    navigation: ``first_chart_s`` when the first chart was drawn, ``charts_s`` when ``charts`` of them
    were, ``idle_s`` when the page last changed before it was still (the script not running, no job's
    progress bar, ``charts`` charts drawn, and nothing changed for the four checks of
    ``wait_until_idle``). ``confirmed_s``: when this script had seen it still (the watching, about
    two seconds, included)."""
    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    ctx.add_init_script(WATCH)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function(f"{DRAWN} >= 1", timeout=timeout_s * 1000)
    while True:
        wait_until_idle(page, timeout=timeout_s * 1000)
        page.wait_for_function(f"{DRAWN} >= {charts}", timeout=timeout_s * 1000)
        before = page.evaluate("window.__te.last")
        wait_until_idle(page, timeout=timeout_s * 1000)  # still nothing changed: the picture is final
        if page.evaluate("window.__te.last") == before:
            break
    confirmed = time.perf_counter() - t0
    te = page.evaluate("window.__te")
    exceptions = page.locator("[data-testid='stException']").count()
    ctx.close()
    return {"first_chart_s": round(te["charts"]["1"] / 1000, 2), "charts_s": round(te["charts"][str(charts)] / 1000, 2),
            "idle_s": round(te["last"] / 1000, 2), "confirmed_s": round(confirmed, 2), "exceptions": exceptions,
            "page_errors": len(errors)}


def redraw_rate(browser, base: str) -> dict:
    """Train the Lab's defaults (a fresh seed, so the run is not shared) and count the redraws."""
    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    page = ctx.new_page()
    page.goto(base + "/?lab_seed=4242&lab_until_learned=false&lab_steps=300")
    wait_until_idle(page)
    page.get_by_role("button", name="▶ Train").click()
    seen, times, first_loss = None, [], None
    t_click = time.perf_counter()
    deadline = t_click + 240
    status = ("(() => { const m = Array.from(document.querySelectorAll(\"[data-testid='stMarkdownContainer']\"))"
              ".find(e => e.innerText.includes('trained ')); return [m ? m.innerText : '', " + DRAWN + "]; })()")
    while time.perf_counter() < deadline:
        text, drawn = page.evaluate(status)
        if first_loss is None and drawn >= 3:  # the loss chart joined the two maps
            first_loss = time.perf_counter() - t_click
        if text != seen:
            seen = text
            times.append(time.perf_counter())
        if "trained 300 of 300" in text and "Training" not in text:
            break
        page.wait_for_timeout(20)
    gaps = [b - a for a, b in zip(times, times[1:])]
    ctx.close()
    return {"redraws": len(times), "redraws_per_second": round(1 / statistics.median(gaps), 2) if gaps else None,
            "redraw_interval_s_median": round(statistics.median(gaps), 3) if gaps else None,
            "redraw_interval_s_max": round(max(gaps), 3) if gaps else None,
            "train_300_steps_s": round(times[-1] - t_click, 2) if times else None,
            "first_loss_point_s": None if first_loss is None else round(first_loss, 2)}


STATUS = ("(() => { const m = Array.from(document.querySelectorAll(\"[data-testid='stMarkdownContainer']\"))"
          ".find(e => e.innerText.includes('trained ')); return m ? m.innerText : ''; })()")


def stop_latency(browser, base: str, tries: int) -> dict:
    """Seconds from a Stop click until the page says training stopped, over ``tries`` runs."""
    import re

    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    page = ctx.new_page()
    latencies, moved_after = [], 0
    for i in range(tries):
        page.goto(base + f"/?lab_seed={9000 + i}&lab_until_learned=false&lab_steps=20000&lab_length=6")
        wait_until_idle(page)
        page.get_by_role("button", name="▶ Train").click()
        page.wait_for_function(STATUS + ".includes('Training') && /trained [1-9]/.test(" + STATUS + ")",
                               timeout=120_000)
        page.wait_for_timeout(1500)  # let it draw a few times
        # a person's click: at the button, at once (a locator's click first waits until the button has
        # not moved for two animation frames, which a page redrawing four times a second rarely grants)
        box = page.get_by_role("button", name="■ Stop").bounding_box()
        t0 = time.perf_counter()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("!" + STATUS + ".includes('Training') && " + STATUS + ".includes('trained')",
                               timeout=120_000, polling=20)
        latencies.append(time.perf_counter() - t0)
        kept = re.search(r"trained (\d+)", page.evaluate(STATUS)).group(1)
        page.wait_for_timeout(1000)
        moved_after += re.search(r"trained (\d+)", page.evaluate(STATUS)).group(1) != kept
    ctx.close()
    ordered = sorted(latencies)
    return {"tries": tries, "median_s": round(statistics.median(latencies), 3),
            "p95_s": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 3),
            "max_s": round(max(latencies), 3), "kept_training_after_stop": moved_after}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lessons", action="store_true", help="also time every lesson for two students")
    ap.add_argument("--repeats", type=int, default=2, help="warm visits per page")
    ap.add_argument("--stops", type=int, default=0, help="time this many Stop clicks on the Lab")
    ap.add_argument("--only-stops", action="store_true", help="skip the page and lesson timings")
    ap.add_argument("--only-lessons", action="store_true", help="time the lessons only")
    ap.add_argument("--opened-server", action="store_true",
                    help="before a lesson's first student, one visit to the landing page (a server a teacher has "
                         "opened once: its imports done, no lesson run yet)")
    args = ap.parse_args()
    out = {"pages": {}, "lessons": {}}
    with chromium() as browser:
        if args.stops:
            with app_server() as base:
                out["stop"] = stop_latency(browser, base, args.stops)
        for spec in ([] if args.only_stops or args.only_lessons else PAGES.values()):
            with app_server() as base:
                cold = open_and_time(browser, base + spec.path, spec.charts)
                warm = [open_and_time(browser, base + spec.path, spec.charts) for _ in range(args.repeats)]
                out["pages"][spec.id] = {"cold": cold, "warm": warm}
                if spec.default:
                    out["lab_live"] = redraw_rate(browser, base)
        if (args.lessons or args.only_lessons) and not args.only_stops:
            for lid in LESSONS.names():
                lesson = LESSONS[lid]
                with app_server() as base:
                    url = base + PAGES[lesson.page].path + f"?lesson={lid}"
                    if args.opened_server:
                        open_and_time(browser, base + "/", 2)
                    first = open_and_time(browser, url, LESSON_CHARTS.get(lesson.page, 2))
                    second = open_and_time(browser, url, LESSON_CHARTS.get(lesson.page, 2))
                    out["lessons"][lid] = {"first_student": first, "second_student": second}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
