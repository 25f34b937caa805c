"""Two students, one server: one lesson of every page (its runs from the shelf, as they come with the
app, or made quick through its link) opened in one browser context, then in a second fresh one after the first has computed it (pages whose own browser tests
already do this for a shared run are left to them: ``OWN_SECOND_STUDENT``). Shared results replay
in the second, and that is where cached work used to break: no traceback, the same finished picture.
Every lesson (each one's settings, and that its page finishes cleanly) is opened through AppTest in
tests/test_shareable.py; here each page's replay is checked once, in real Chromium."""
import pytest

from explorer.lessons import LESSONS
from explorer.pages import PAGES
from explorer.shelf import Shelf
from scripts.appserver import DRAWN, axis_text_outside, offline_context, wait_until_idle

QUICK = {"complexity": "&cx_max_n=1024&cx_repeats=1", "positions": "&pe_steps=50&pe_train_len=4",
         "attention_lab": "&lab_steps=60", "experts": "&moe_steps=50&moe_res_steps=20", "multimodal": "&mm_steps=100",
         "incontext": "&icl_steps=250", "memory": "",
         # a tiny model on the first tab's keys, and a short curriculum comparison (lesson ``curriculum``)
         "training": "&tr_layers=1&tr_heads=2&tr_width=32&tr_context=16&tr_batch=16&tr_steps=100"
                     "&tr_cur_steps=30&tr_cur_length=32&tr_cur_start=8",
         "safeguards": "&sg_unc_steps=10&sg_unc_windows=32&sg_unc_chars=50&sg_dp_steps=10&sg_dp_batch=8"
                       "&sg_bias_steps=50&sg_bias_sentences=500&sg_fb_steps=2"}
FINISHED = {"complexity": 4, "positions": 4, "attention_lab": 3, "experts": 4, "multimodal": 3, "incontext": 5,
            "memory": 3, "training": 4, "safeguards": 2}  # charts of each page's finished view
FINISHED_LESSON = {"residuals": 4, "curriculum": 2, "privacy": 4, "bias": 3}  # a lesson that opens another tab of its page
# The lesson a page is checked with: its first lesson unless named here (the quickest of its page).
CHEAPEST = {"attention_lab": "windows", "experts": "residuals"}
# Pages whose own browser tests already open a finished, shared run for a second student in a fresh context
# (that page's lessons still open through AppTest in tests/test_shareable.py).
OWN_SECOND_STUDENT = {
    "training": "test_browser_training.py::test_a_copied_link_reopens_the_view_two_students_share_a_run_but_not_their_texts",
    "safeguards": "test_browser_safeguards_*.py: every tab's run, then a second student on its link",
}


def one_lesson_per_page() -> list[str]:
    """One lesson for every page that has lessons (in the order of LESSONS)."""
    chosen = {}
    for name in LESSONS.names():
        if LESSONS[name].page not in OWN_SECOND_STUDENT:
            chosen.setdefault(LESSONS[name].page, CHEAPEST.get(LESSONS[name].page, name))
    assert all(LESSONS[n].page == p for p, n in chosen.items()), chosen  # CHEAPEST names a lesson of its page
    return list(chosen.values())


def visit(browser, url):
    ctx = offline_context(browser, viewport={"width": 1400, "height": 1600})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    wait_until_idle(page, timeout=180_000)
    return ctx, page, errors


@pytest.mark.parametrize("lesson_id", one_lesson_per_page())
def test_a_second_student_gets_the_lesson_without_a_traceback(browser, server, lesson_id):
    lesson = LESSONS[lesson_id]
    shipped = lesson_id in Shelf().lessons()  # its runs came with the app: opened as a student opens it
    url = server + PAGES[lesson.page].path + f"?lesson={lesson_id}" + ("" if shipped else QUICK[lesson.page])
    pictures = []
    for student in ("first", "second"):
        ctx, page, errors = visit(browser, url)
        charts = FINISHED_LESSON.get(lesson_id, FINISHED[lesson.page])
        page.wait_for_function(f"{DRAWN} >= {charts}", timeout=60_000)
        if lesson.page == "multimodal":  # its scores come after training, from a shared job
            page.get_by_text("What came out").wait_for(timeout=120_000)
        assert page.locator("[data-testid='stException']").count() == 0, (student, lesson_id)
        assert page.get_by_text(f"Lesson: {lesson.title}").count() == 1
        assert page.get_by_text("This lesson's runs came with the app").count() == int(shipped), (student, lesson_id)
        assert not errors, errors
        assert axis_text_outside(page) == [], student  # every label fits the margins its figure set
        pictures.append(page.evaluate(DRAWN))
        ctx.close()
    assert pictures[0] == pictures[1]
