"""The Safeguards page's Uncertainty tab in real Chromium: a student opens a link with a tiny model,
presses Train, and sees the finished view; markup typed as a prompt is named as characters,
never drawn; a second student opening the copied link gets the same shared result at once."""
import pytest

from test_browser_students import visit
from scripts.appserver import DRAWN, wait_for_charts, wait_until_idle

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = "sg_unc_steps=10&sg_unc_windows=32&sg_unc_chars=50"
HOSTILE = "<img src=x onerror=alert(1)>"


def body(page) -> str:
    return page.evaluate("document.body.innerText")


def finished_part(page) -> str:
    text = body(page)
    return text[text.index("Trained 10 of 10 steps"):].split("Definitions")[0]  # its training seconds included


def test_a_student_trains_and_calibrates_and_a_second_gets_the_shared_result(browser, page, server):
    page.goto(server + f"/safeguards?{TINY}")
    wait_until_idle(page)
    wait_for_charts(page, 2)  # the untrained model's diagram and curve, before any run
    assert "Not trained yet" in body(page)
    page.get_by_role("button", name="▶ Train").click()
    page.get_by_text("and calibrated: the views below").wait_for(timeout=120_000)
    wait_until_idle(page)
    wait_for_charts(page, 2)
    titles = " ".join(page.locator("[data-testid='stPlotlyChart'] text.gtitle").all_text_contents())
    assert "reliability at T = 1 (after 10 steps)" in titles, titles
    link = page.url
    assert "sg_unc_done=1" in link
    first = (finished_part(page), page.evaluate(DRAWN))

    box = page.get_by_label("Prompt", exact=True)
    box.fill(HOSTILE)
    box.press("Enter")
    wait_until_idle(page)
    warning = page.get_by_test_id("stAlert").filter(has_text="Nothing written").inner_text()
    assert "'<'" in warning and "never uses" in warning, warning
    assert page.locator("img[src=x]").count() == 0 and not page.dialogs

    other, p2, errors = visit(browser, link)  # a second student, in a fresh browser context
    p2.get_by_text("and calibrated: the views below").wait_for(timeout=30_000)
    wait_for_charts(p2, first[1])
    assert (finished_part(p2), p2.evaluate(DRAWN)) == first  # the same run and calibration, not a second one
    assert p2.locator("[data-testid='stException']").count() == 0 and not errors
    other.close()
    assert page.locator("[data-testid='stException']").count() == 0 and not page.errors
