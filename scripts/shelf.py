"""Make the shelf: every lesson's seeded runs, trained once here and shipped with the app
(``explorer/data/shelf``), so the first student to open a lesson sees its finished picture at once.

    python scripts/shelf.py                 # every lesson that trains (about 15 minutes on 2 cores)
    python scripts/shelf.py reverse fusion  # some of them
    python scripts/shelf.py --check         # train them again and compare with what is shipped

Each lesson is opened through the app itself (AppTest, the shelf switched off), rerun until no job
of the server is left running, and every finished job that is ``shippable`` (seeded training; never a
measurement of this machine) is written by its key. Run it again after changing a lesson, a page's
defaults or the training code: ``tests/test_shelf.py`` fails when a lesson asks for a run the shelf
lacks, and when a shipped run differs from training it again here (the quickest ones).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["TE_SHELF"] = "off"  # train everything: this is where the shelf comes from


def open_lesson(lesson_id: str, timeout_s: float = 900.0) -> list:
    """Open the lesson in a fresh session and wait until the server is idle; the handles of the
    runs its session holds (finished or not; shared with another lesson's or not)."""
    from streamlit.testing.v1 import AppTest

    import ui

    scheduler = ui.scheduler()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["lesson"] = lesson_id
    at.run()
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 3:  # some pages start a second job when the first ends (scoring, calibration)
        if time.monotonic() > deadline:
            raise TimeoutError(f"lesson {lesson_id} still running after {timeout_s:.0f} s")
        time.sleep(0.5)
        at.run()
        snap = scheduler.snapshot()
        quiet = quiet + 1 if snap["running"] == 0 and snap["queued"] == 0 else 0
    if at.exception:
        raise RuntimeError(f"lesson {lesson_id}: {[e.value for e in at.exception]}")
    holder = at.session_state["_holder"]
    return [h for h in scheduler._by_key.values() if holder in h.holders]


def main(argv=None) -> int:
    import torch

    from explorer.lessons import LESSONS
    from explorer.shelf import ROUNDING, Shelf, decode, encode, same_tree, untimed

    torch.set_num_threads(1)  # as the app trains (app.py): the same sums in the same order
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lessons", nargs="*", help="lesson ids (default: every lesson that runs on arrival)")
    p.add_argument("--check", action="store_true", help="train again and compare with the shelf; write nothing")
    args = p.parse_args(argv)
    chosen = args.lessons or [name for name in LESSONS.names() if LESSONS[name].autorun]
    shelf, bad = Shelf(), 0
    for lesson_id in chosen:
        t0 = time.perf_counter()
        handles = open_lesson(lesson_id)
        took = time.perf_counter() - t0
        if not args.check:
            shelf.drop_lesson(lesson_id)  # what it shipped before, keys the code may no longer give included
        for h in handles:
            if not h.job.shippable:
                continue
            if not h.done:
                print(f"{lesson_id}: {h.job.title}: {h.status} {h.error}", file=sys.stderr)
                bad += 1
                continue
            result = h.result()
            if args.check:
                shipped = shelf.get(h.job.key)
                exact = close = False
                if shipped is not None:
                    a, b = untimed(encode(shipped)), untimed(encode(result))
                    exact = same_tree(a, b)
                    close = exact or same_tree(a, b, **ROUNDING)
                bad += not close
                print(f"{lesson_id}: {h.job.title}: " + ("same as shipped, bit for bit" if exact else
                      "same as shipped but for this CPU's rounding" if close else "DIFFERS from the shelf"))
                continue
            entry = shelf.put(h.job.key, result, lesson_id, h.job.title)
            again = Shelf().get(h.job.key)
            assert again is not None and same_tree(encode(again), encode(result)), f"{lesson_id}: round trip"
            assert same_tree(encode(decode(encode(result))), encode(result))
            print(f"{lesson_id}: {h.job.title}: {entry['bytes'] / 1e6:.2f} MB ({took:.0f} s)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
