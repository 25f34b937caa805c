"""The Safeguards page's Bias tab in real Chromium: a link with tiny settings, Train pressed, the live view
redrawn while it trains and the finished view; a second student opening the copied link gets the same shared
run with no traceback; Stop keeps what was trained."""
import re

import pytest

from test_browser_students import visit
from scripts.appserver import DRAWN, steps_seen, wait_for_charts, wait_until_idle

TINY = "sg_tab=Bias&sg_bias_sentences=500&sg_bias_skew=0.9"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def body(page) -> str:
    return page.evaluate("document.body.innerText")


def findings(page) -> str:
    text = body(page)
    return text[text.index("What came out"):].split("One probe, read from the models")[0]


def clean(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors and not page.dialogs


def test_a_tiny_run_trains_live_and_a_second_student_gets_the_shared_result(browser, page, server):
    page.goto(server + f"/safeguards?{TINY}&sg_bias_steps=50")
    wait_until_idle(page, timeout=180_000)  # a fresh server's first run imports torch
    wait_for_charts(page, 1)  # the training text's skew, before any training
    assert "Not trained yet" in body(page)
    page.get_by_role("button", name="▶ Train").click()
    seen = steps_seen(page, r"Training… step (\d+) of 50", count=1)
    assert seen, "no live redraw seen"
    page.get_by_text("Finished after 50 of 50 steps each.").wait_for(timeout=120_000)
    wait_until_idle(page)
    page.get_by_text("What came out").wait_for()
    wait_for_charts(page, 3)
    link = page.url
    assert "sg_bias_done=1" in link
    first = (findings(page), page.evaluate(DRAWN))
    assert "probability of zim between the two averages" in first[0]

    other, p2, errors = visit(browser, link)  # a second student, in a fresh browser context
    p2.get_by_text("What came out").wait_for()
    wait_for_charts(p2, first[1])
    assert (findings(p2), p2.evaluate(DRAWN)) == first  # the same run, shared
    assert not errors and p2.locator("[data-testid='stException']").count() == 0
    other.close()
    clean(page)


def test_stop_keeps_what_was_trained(page, server):
    page.goto(server + f"/safeguards?{TINY}&sg_bias_steps=1500&sg_bias_augment=false")
    wait_until_idle(page, timeout=180_000)
    page.get_by_role("button", name="▶ Train").click()
    steps_seen(page, r"Training… step (\d+) of 1500", count=2)
    page.get_by_role("button", name="■ Stop").click()
    page.get_by_text("What came out").wait_for(timeout=60_000)
    wait_until_idle(page)
    kept = int(re.search(r"Stopped after (\d+) of 1500 steps\.", body(page)).group(1))
    assert 0 < kept < 1500
    assert "sg_bias_done" not in page.url
    clean(page)
