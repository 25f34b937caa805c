"""Real Chromium (Debian's /usr/bin/chromium through Playwright) against the app served locally,
with every request off this machine blocked, as in an offline classroom."""
import numpy as np
import pytest

from explorer.bertviz_views import head_view_html, model_view_html
from scripts.appserver import offline_context, wait_for_charts, wait_until_idle


def bertviz_frames(page, expect=2, timeout_s=20):
    """The iframes holding a bertviz view, once ``expect`` of them have loaded."""
    for _ in range(int(timeout_s * 4)):
        frames = [f for f in page.frames if f is not page.main_frame and f.locator("#vis").count()]
        if len(frames) >= expect:
            return frames
        page.wait_for_timeout(250)
    return frames


def test_lab_draws_charts_and_bertviz_offline(browser, server):
    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    wait_until_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    assert wait_for_charts(page, 2) >= 2
    page.get_by_role("tab", name="bertviz head view").click()
    wait_until_idle(page)
    head = bertviz_frames(page, expect=1)[0]
    head.wait_for_selector("#vis svg text", timeout=15_000)
    assert head.locator("#vis svg text").count() >= 2 * 33  # 33 tokens drawn on each side
    assert head.locator("#layer option").count() == 2  # bertviz filled the layer menu with jQuery
    page.get_by_role("tab", name="bertviz model view").click()
    wait_until_idle(page)
    model = bertviz_frames(page, expect=1)[0]
    model.wait_for_selector("#vis svg text", timeout=15_000)
    assert model.locator("#vis svg text").count() >= 8  # layer and head labels around the thumbnails
    assert not errors, errors
    ctx.close()


HOSTILE = ["</script><script>window.pwned=1</script>", "<img src=x onerror=window.pwned=2>", "a&amp;b", "\u2028"]


@pytest.mark.parametrize("build", [head_view_html, model_view_html])
def test_bertviz_shows_hostile_tokens_as_text(browser, build):
    ctx = offline_context(browser)
    page = ctx.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    T = len(HOSTILE)
    attn = np.tril(np.ones((1, 2, T, T)))
    attn /= attn.sum(-1, keepdims=True)
    page.set_content(build(attn, HOSTILE))
    page.wait_for_selector("#vis svg text")
    if build is model_view_html:  # tokens show in the detail of a clicked head thumbnail
        page.locator("#vis svg rect[style*='opacity: 0']").first.click(force=True)
        page.wait_for_selector("#vis svg .detail text", state="attached")
    shown = page.locator("#vis svg text").all_text_contents()
    assert HOSTILE[0] in shown and HOSTILE[1] in shown and "a&amp;b" in shown  # verbatim, as text
    assert page.evaluate("window.pwned") is None
    assert page.locator("img").count() == 0
    assert not dialogs
    ctx.close()
