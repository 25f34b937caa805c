"""The Safeguards page's Feedback tab in real Chromium: a link with tiny settings, DPO run on the
half-trained reverse model to its finished view, and a second student opening the same link who
gets the shared run at once, without a traceback."""
import pytest

from scripts.appserver import DRAWN, offline_context, wait_for_charts, wait_until_idle

pytestmark = pytest.mark.usefixtures("one_thread")

QUERY = "?sg_tab=Feedback&sg_fb_mode=Correct+reversal+(reverse+task)&sg_fb_steps=5&sg_fb_seed=2"


def body(page) -> str:
    return page.evaluate("document.body.innerText")


def finished_view(page) -> str:
    page.get_by_text("DPO ran 5 of 5 steps.").wait_for(timeout=120_000)
    wait_until_idle(page)
    page.get_by_text("What came out").wait_for()
    assert wait_for_charts(page, 3) == 3
    assert page.locator("[data-testid='stException']").count() == 0
    return body(page)


def test_a_run_from_a_link_and_a_second_student_shares_it(page, server, browser):
    page.goto(server + "/safeguards" + QUERY)
    wait_until_idle(page)
    assert "Not run yet" in body(page) and page.evaluate(DRAWN) == 0
    page.get_by_role("button", name="▶ Run DPO").click()
    first = finished_view(page)
    assert "sg_fb_done=1" in page.url
    assert "Correct reversal" in first and "before (reference)" in first
    assert not page.errors and not page.dialogs

    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    try:
        second = ctx.new_page()
        errors = []
        second.on("pageerror", lambda e: errors.append(str(e)))
        second.goto(server + "/safeguards" + QUERY + "&sg_fb_done=1")  # the copied link: the shared run
        wait_until_idle(second, timeout=120_000)
        shared = finished_view(second)
        findings = lambda text: text[text.index("What came out"):text.index("Definitions")]  # noqa: E731
        assert findings(shared) == findings(first) and not errors
    finally:
        ctx.close()
