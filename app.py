"""Transformer Explorer: the entry point. ``streamlit run app.py``

Runs before every page: navigation (from the page list, ``explorer.pages``), lessons
(``?lesson=<id>``), the presentation toggle, and a notice for URL parameters the page could not
take. The shell (lessons, presentation toggle, notices) is drawn in every state of every page.
"""
import streamlit as st
import torch

from explorer import glossary, lessons, urlstate
from explorer.pages import PAGES
import ui

# One intra-op thread per computation: the server's cores are shared by every session's script
# thread and the scheduler's workers (and often by a browser on the same machine). With torch's
# default of one OpenMP thread per core, training under that contention ran ~15x slower (measured:
# 51 steps in 25 s instead of 400 in 15 s with Chromium drawing the live charts on this 2-core machine).
torch.set_num_threads(1)
ui.import_table_libraries()

S = st.session_state
S.app_shell = True  # pages check this: they were opened through this navigation
present = bool(S.get("present", st.query_params.get("present", "").lower() == "true"))
st.set_page_config(page_title="Transformer Explorer", page_icon=ui.app_icon(), layout="wide",
                   initial_sidebar_state="collapsed" if present else "auto")

NAV = {spec.id: st.Page(spec.file, title=spec.title, icon=spec.icon, url_path=spec.id, default=spec.default)
       for spec in PAGES.values()}
page = st.navigation(list(NAV.values()))


def query_snapshot() -> dict[str, list[str]]:
    """Every URL parameter with all its values."""
    return {k: st.query_params.get_all(k) for k in st.query_params}


# ---------------------------------------------------------------------------------------------- lessons
url_notices = []
lesson_id = st.query_params.get("lesson")
lesson = None
if lesson_id is not None:
    if lesson_id in lessons.LESSONS:
        lesson = lessons.LESSONS[lesson_id]
        if S.get("lesson_applied") != lesson_id:  # arriving: set the whole view (an explicit URL value wins)
            S.lesson_applied = lesson_id
            for key, value in lessons.view(lesson).items():
                if key in st.query_params:
                    continue
                if value is None:  # e.g. the input: follow the task's example again
                    S.pop(key, None)
                else:
                    S[key] = value
            if lesson.autorun:
                S[PAGES[lesson.page].prefix + "autorun"] = True
        if NAV[lesson.page] is not page:
            st.switch_page(NAV[lesson.page], query_params=query_snapshot())
    else:
        url_notices.append(f"unknown lesson '{lesson_id[:40]}'; the lessons are: {', '.join(lessons.LESSONS.names())}")
        del st.query_params["lesson"]
        S.pop("lesson_applied", None)
else:
    S.pop("lesson_applied", None)

with st.sidebar:  # the shell, drawn before the page so that every state of every page has it
    st.divider()
    st.markdown("**Lessons**")
    for item in lessons.LESSONS.names():  # buttons, not page links: only the open lesson is marked
        lesson_item = lessons.LESSONS[item]
        if st.button(lesson_item.title, key=f"lesson_link_{item}", type="primary" if item == lesson_id else "tertiary",
                     help=f"Open the lesson on the {PAGES[lesson_item.page].title} page: it sets the controls and says "
                          "what to look at."):
            st.switch_page(NAV[lesson_item.page], query_params={"lesson": item})
    with st.popover("Glossary", icon=":material/menu_book:", help="The words this app uses, explained."):
        st.markdown(glossary.markdown())
    st.toggle("Presentation mode", key="present", bind="query-params",
              help="Bigger text and figures for a projector; the sidebar starts collapsed.")
if S.get("present"):
    st.html("<style>"
            "[data-testid='stMain'] .stMarkdown p, [data-testid='stMain'] li, [data-testid='stCaptionContainer'] "
            "{font-size: 1.35rem !important;} h1 {font-size: 3.2rem !important;} "
            "h2, h3 {font-size: 2.2rem !important;} [data-testid='stMetricValue'] {font-size: 3rem !important;} "
            ".js-plotly-plot .main-svg text {font-size: 15px !important;}"
            "</style>")

notice_slot = st.empty()
if lesson is not None:
    with st.container(border=True):
        c1, c2 = st.columns([6, 1])
        c1.markdown(f"**Lesson: {lesson.title}**\n\n{lesson.explanation}")
        c1.caption(lessons.set_by(lesson))
        if lesson.id in ui.shipped_lessons():
            c1.caption(lessons.SHIPPED)
        if c2.button("Leave lesson", key="leave_lesson"):
            del st.query_params["lesson"]
            st.rerun()

before = query_snapshot()
S._page_figures = {}  # what ui.chart draws in this run, for the export panel
S._page_tables = {}  # what ui.table draws in this run
try:
    page.run()
finally:
    with st.sidebar:
        ui.export_panel()
    after = query_snapshot()
    messages, unknown = urlstate.notices(before, after, S)
    for name in unknown:
        del st.query_params[name]
    messages = url_notices + messages
    if messages:
        notice_slot.warning("Some of this link's settings were ignored:\n" + "\n".join(f"- {m}" for m in messages),
                            icon=":material/link_off:")
