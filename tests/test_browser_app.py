"""Every page in real Chromium: loads clean, draws its charts, follows controls, restores shared
links, and shows typed or linked text as text."""
import os
import re
import time
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from explorer.pages import PAGES
from scripts.appserver import app_server, axis_text_outside, offline_context, wait_for_charts, wait_until_idle


def grid_heads(page) -> int:
    """Heads in the attention grid, from its column titles as plotly drew them."""
    titles = page.locator("[data-testid='stPlotlyChart'] text.annotation-text").all_text_contents()
    return len({t for t in titles if re.fullmatch(r"head \d+", t)})


def expect_grid_heads(page, n: int, timeout_s: float = 20) -> None:
    """Wait until plotly has redrawn the grid with ``n`` heads (it draws after Streamlit is idle)."""
    for _ in range(int(timeout_s * 4)):
        if grid_heads(page) == n:
            return
        page.wait_for_timeout(250)
    assert grid_heads(page) == n


def pick(page, label: str, option: str) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).first
    box.evaluate("e => e.scrollIntoView({block: 'center'})")  # room below it for the list of options
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


@pytest.mark.parametrize("spec", PAGES.values(), ids=PAGES.names())
def test_every_page_loads_clean_and_draws_with_the_shell(page, server, spec):
    page.goto(server + spec.path)
    wait_until_idle(page)
    assert wait_for_charts(page, spec.charts) >= spec.charts
    sidebar = page.get_by_test_id("stSidebar")
    assert sidebar.get_by_text("Lessons", exact=True).count() == 1  # the shell, before anything is run
    assert sidebar.get_by_text("Presentation mode").count() == 1
    assert sidebar.get_by_role("button", name="Glossary").count() == 1
    assert not page.context.blocked, page.context.blocked  # nothing asked of the web: it works offline
    charts = page.locator("[data-testid='stPlotlyChart'][role='figure']")
    assert charts.count() >= 1 and all(charts.nth(i).get_attribute("aria-label") for i in range(charts.count()))
    assert axis_text_outside(page) == []  # every label fits the margins its figure set
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors


def test_changing_heads_redraws_the_grid(page, server):
    page.goto(server + "/")
    wait_until_idle(page)
    wait_for_charts(page, 2)
    expect_grid_heads(page, 4)
    pick(page, "Heads", "1")
    expect_grid_heads(page, 1)
    pick(page, "Heads", "8")
    expect_grid_heads(page, 8)
    assert "lab_heads=8" in page.url  # the link carries it


def test_a_copied_link_restores_the_view(browser, page, server):
    page.goto(server + "/")
    wait_until_idle(page)
    pick(page, "Heads", "2")
    pick(page, "Attention", "sliding_window")
    box = page.get_by_label("Your input", exact=True).and_(page.get_by_test_id("stTextInputField"))
    box.fill("banana")
    box.press("Enter")
    wait_until_idle(page)
    pick(page, "Head", "1")
    link = page.url
    assert "lab_heads=2" in link and "lab_input=banana" in link and "lab_head=1" in link
    # a fresh browser (no shared session) opens the copied link
    other = offline_context(browser, viewport={"width": 1400, "height": 1600})
    p2 = other.new_page()
    p2.goto(link)
    wait_until_idle(p2)
    wait_for_charts(p2, 2)
    expect(p2.get_by_test_id("stTextInputField")).to_have_value("banana")
    expect_grid_heads(p2, 2)
    assert p2.get_by_text("sliding_window: each token attends to the last w tokens").count() == 1
    assert "layer 0, head 1" in p2.locator("[data-testid='stPlotlyChart'] text.gtitle").all_text_contents()
    other.close()


HOSTILE = "<img src=x onerror=window.pwned=1><script>window.pwned=2</script>"


def test_typed_and_linked_markup_is_shown_as_text(page, server):
    page.goto(server + "/?lab_input=" + quote(HOSTILE))
    wait_until_idle(page)
    warning = page.get_by_test_id("stAlert").filter(has_text="vocabulary").inner_text()
    assert "'<'" in warning and "'>'" in warning and "'/'" in warning  # named, as text
    box = page.get_by_label("Your input", exact=True).and_(page.get_by_test_id("stTextInputField"))
    expect(box).to_have_value(HOSTILE)  # the frontend fills the field a moment after the run
    box.fill("<b onmouseover=window.pwned=3>bold</b>")
    box.press("Enter")
    wait_until_idle(page)
    assert page.locator("b[onmouseover]").count() == 0 and page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.pwned") is None
    assert not page.dialogs and not page.errors


def test_bad_parameters_are_noticed_on_a_page_before_anything_runs(page, server):
    page.goto(server + "/complexity?cx_max_n=3&cx_kinds=bogus&present=true")
    wait_until_idle(page)
    notice = page.get_by_test_id("stAlert").filter(has_text="ignored").inner_text()
    assert "cx_max_n=3" in notice and "cx_kinds=bogus" in notice
    assert page.get_by_role("switch", name="Presentation mode").is_checked()  # and the shell took ?present=true


def test_unknown_link_parameters_are_noticed(page, server):
    page.goto(server + "/?lab_heads=banana&nonsense=1")
    wait_until_idle(page)
    notice = page.get_by_test_id("stAlert").filter(has_text="ignored").inner_text()
    assert "nonsense" in notice and "lab_heads" in notice
    assert page.locator("[data-testid='stException']").count() == 0


STATUS = ("(() => { const m = Array.from(document.querySelectorAll(\"[data-testid='stMarkdownContainer']\"))"
          ".find(e => e.innerText.includes('trained ')); return m ? m.innerText : ''; })()")


def steps_seen(page, until, timeout_s=120):
    """Every distinct 'trained N of M steps' the status line showed until ``until(text)``."""
    seen = []
    for _ in range(int(timeout_s * 20)):
        text = page.evaluate(STATUS)
        m = re.search(r"trained (\d+) of (\d+) steps", text)
        if m and (not seen or seen[-1] != int(m.group(1))):
            seen.append(int(m.group(1)))
        if until(text):
            break
        page.wait_for_timeout(50)
    return seen, text


def test_training_redraws_live_and_stop_keeps_the_model(page, server):
    page.goto(server + "/?lab_seed=777&lab_until_learned=false&lab_steps=20000&lab_length=6")
    wait_until_idle(page)
    page.get_by_role("button", name="▶ Train").click()
    # Wait for three different step counts on screen, the last past step 60: on a quiet machine the
    # first redraw may already be past 60, so a threshold alone would not show that the view redraws.
    drawn = set()

    def redrawn(text):
        m = re.search(r"trained (\d+) of", text)
        if m and int(m.group(1)) > 0:
            drawn.add(int(m.group(1)))
        return len(drawn) >= 3 and max(drawn) > 60

    seen, _ = steps_seen(page, redrawn)
    assert len([s for s in seen if s > 0]) >= 3, seen  # the live view redrew while training
    assert page.locator("[data-testid='stException']").count() == 0
    page.get_by_role("button", name="■ Stop").click()
    _, text = steps_seen(page, lambda t: "Training" not in t and "trained" in t, timeout_s=60)
    assert "Training" not in text and "of 20000 steps" in text  # stopped, and the model it had is kept
    kept = int(re.search(r"trained (\d+)", text).group(1))
    assert 60 < kept < 20000
    page.wait_for_timeout(1000)
    assert int(re.search(r"trained (\d+)", page.evaluate(STATUS)).group(1)) == kept  # it really stopped
    assert not page.errors


def test_a_lesson_sets_the_whole_view_over_what_was_typed(page, server):
    page.goto(server + "/?lab_seed=5&lab_steps=40")
    wait_until_idle(page)
    box = page.get_by_label("Your input", exact=True).and_(page.get_by_test_id("stTextInputField"))
    box.fill("abcdefghijklmnop")  # 16 letters: too long for the lesson's length-12 model
    box.press("Enter")
    wait_until_idle(page)
    page.get_by_role("button", name="Reverse a sequence: anti-diagonal attention").click()
    wait_until_idle(page, timeout=120_000)
    assert "lesson=reverse" in page.url and "lab_length=12" in page.url
    assert len(box.input_value()) == 12  # the task's example again, not the teacher's 16 letters
    assert page.get_by_role("spinbutton", name="Seed").input_value() == "0"  # every control, not only some
    assert page.get_by_test_id("stAlert").filter(has_text="fits at most").count() == 0
    assert page.get_by_text("This lesson set task = reverse").count() == 1  # and it says so


def test_a_figure_exports_as_svg_for_slides(page):
    """On a server of its own: the suite's shared server may still be running other tests' long jobs
    (a student who leaves does not stop a shared run), and an export waits for room like any job."""
    with app_server() as server:
        page.goto(server + "/positions")
        wait_until_idle(page)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_text("Export figures").click()
        svg = sidebar.get_by_role("button", name="SVG", exact=True)
        failed = sidebar.get_by_text("The figure could not be rendered")
        rendering = sidebar.get_by_text("Rendering the figure")
        for _ in range(3):  # under load, a click on the fresh panel was sometimes never sent: the server logged
            sidebar.get_by_role("button", name="Make SVG and PNG").click()  # no run after it; a student clicks again
            try:
                rendering.or_(svg).or_(failed).first.wait_for(timeout=20_000)
                break
            except Exception:
                pass
        try:  # the render's own limit is two tries of 60 s
            svg.or_(failed).first.wait_for(timeout=150_000)
        except Exception as e:
            raise AssertionError("no files and no error; the sidebar said: " + sidebar.inner_text()) from e
        assert failed.count() == 0, failed.inner_text()
        with page.expect_download(timeout=60_000) as download:
            svg.click()
        path = download.value.path()
        head = open(path, "rb").read(200)
        assert head.startswith(b"<svg") and download.value.suggested_filename.endswith(".svg")


def test_the_page_benchmark_times_a_page_by_the_browsers_clock(browser, server):
    """``bench pages`` (scripts/bench_pages.py): the landing page, timed in the page itself: its
    first chart, then all its charts, then its last change, each after the one before; the
    watching that makes sure it is still comes after all of them."""
    from scripts.bench_pages import open_and_time

    spec = PAGES[next(n for n in PAGES.names() if PAGES[n].default)]
    t = open_and_time(browser, server + spec.path, spec.charts, timeout_s=120)
    assert 0 < t["first_chart_s"] <= t["charts_s"] <= t["idle_s"] < t["confirmed_s"], t
    assert t["exceptions"] == 0 and t["page_errors"] == 0, t


def test_an_attention_maps_hover_names_the_query_and_key_tokens(page, server):
    """The selected head's map: hovering a cell says which query looks at which key, by position
    and token (from the axes' categories: the labels the axes show), and the weight."""
    page.goto(server + "/")
    wait_until_idle(page)
    wait_for_charts(page, 2)
    chart = page.locator("[data-testid='stPlotlyChart']").filter(has_text="layer 0, head 0").first
    rows = chart.locator(".yaxislayer-above .ytick text").all_text_contents()  # top to bottom: query 0, 1, ...
    cols = chart.locator(".xaxislayer-above .xtick text").all_text_contents()
    assert len(rows) == len(cols) > 10
    chart.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(300)
    box = chart.locator(".nsewdrag").first.bounding_box()
    T = len(rows)
    for r, c in ((T - 1, 0), (T // 2, T // 3), (5, 5)):
        page.mouse.move(box["x"] + (c + 0.5) * box["width"] / T, box["y"] + (r + 0.5) * box["height"] / T)
        label = chart.locator(".hoverlayer .hovertext")
        expect(label).to_contain_text(f"query {r} ")  # plotly has moved its label here
        text = " ".join(label.all_text_contents())  # an svg text: its lines run together
        m = re.search(r"query (\d+) '(.+?)' → key (\d+) '(.+?)'\s*weight (\d\.\d{3})", text)
        assert m and (int(m[1]), int(m[3])) == (r, c), text
        assert (m[2], m[4]) == (rows[r], cols[c]), text
    page.mouse.move(box["x"] + (T - 1.5) * box["width"] / T, box["y"] + 0.5 * box["height"] / T)  # above the diagonal
    expect(chart.locator(".hoverlayer .hovertext")).to_contain_text("weight 0.000")


def cores_busy(pid: int, seconds: float = 2.0) -> float:
    """The cores a process kept busy over ``seconds`` (its CPU time from /proc, over the wall time)."""
    def cpu() -> float:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    before = cpu()
    time.sleep(seconds)
    return (cpu() - before) / seconds


def test_a_run_whose_student_closed_the_tab_stops_on_the_server(browser):
    """A student starts a long run and closes the tab. Once Streamlit lets the session go (after
    server.disconnectedSessionTTL; here 2 s, 120 s by default) and the server frees its state, the run
    nobody holds any more stops, instead of keeping a core busy to its 20,000th step."""
    env = {"STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "2", "TE_GONE_CHECK_S": "1"}
    with app_server(env=env) as server:
        ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
        page = ctx.new_page()
        page.goto(server + "/?lab_steps=20000&lab_until_learned=false&lab_seed=4242")
        wait_until_idle(page)
        page.get_by_role("button", name="▶ Train", exact=True).click()
        page.get_by_text("Training…").first.wait_for(timeout=30_000)
        assert cores_busy(server.pid) > 0.5  # the run holds a core
        ctx.close()
        time.sleep(3)  # past the TTL
        other = offline_context(browser)  # another student comes and goes: Streamlit drops expired sessions then
        visit = other.new_page()
        visit.goto(server + "/complexity")
        wait_until_idle(visit)
        other.close()
        deadline = time.monotonic() + 30
        while (busy := cores_busy(server.pid)) > 0.3:
            assert time.monotonic() < deadline, f"the run still keeps {busy:.2f} cores busy"
