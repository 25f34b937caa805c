"""The Safeguards page's Privacy tab in real Chromium: a tiny comparison opened from a link, run with
the button to its finished view, then the same link (finished flag set) opened by a second student in
a fresh context, who gets the shared result at once, with no traceback; typed markup stays text."""
import re

import pytest

from scripts.appserver import offline_context, wait_for_charts, wait_until_idle

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "sg_tab=Privacy&sg_dp_steps=10&sg_dp_batch=8&sg_dp_seed=5"
HOSTILE = "<img src=x onerror=alert(1)> write to eve@example.org"


def body(page) -> str:
    return page.evaluate("document.body.innerText")


def exposures(page) -> list[str]:
    return re.findall(r"Exposure with(?:out)? DP\s*\n\s*([\d.]+ bits)", body(page))


def test_a_tiny_comparison_runs_and_a_second_student_gets_the_shared_result(page, server, browser):
    page.goto(server + f"/safeguards?{TINY}&sg_dp_text=" + HOSTILE.replace(" ", "+"))
    wait_until_idle(page)
    wait_for_charts(page, 1)  # the accountant's ε, before any training
    assert "Before any training" in body(page)
    page.get_by_role("button", name="▶ Compare").click()
    page.get_by_text("What came out").wait_for(timeout=120_000)
    wait_until_idle(page)
    assert wait_for_charts(page, 4) == 4
    first = exposures(page)
    assert len(first) == 2, body(page)[:2000]
    assert "Finished after 10 of 10 steps each." in body(page)
    assert HOSTILE.replace("eve@example.org", "[REDACTED]").replace("(1)", "([REDACTED])") in body(page)
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0 and not page.errors and not page.dialogs

    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    try:
        second = ctx.new_page()
        second.goto(server + f"/safeguards?{TINY}&sg_dp_done=1")
        second.get_by_text("What came out").wait_for(timeout=60_000)
        wait_until_idle(second)
        assert wait_for_charts(second, 4) == 4
        assert exposures(second) == first  # the same run, computed once
        assert second.locator("[data-testid='stException']").count() == 0
    finally:
        ctx.close()
