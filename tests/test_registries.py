"""One place per idea: every registered kind, encoding and page shows up everywhere it should,
with nothing else changed. A new kind or page that breaks this is not plugged in."""
import subprocess
import sys

from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_clean, open_page, plotly_specs
from explorer import urlstate
from explorer.attention import ATTENTION, REFERENCES
from explorer.encodings import ENCODINGS
from explorer.lessons import LESSONS
from explorer.pages import PAGES
from scripts import screenshots


def test_every_kind_is_in_the_bench_cli_help():
    out = subprocess.run([sys.executable, "-m", "explorer.bench", "complexity", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ATTENTION.names() + REFERENCES.names():
        assert name in out, name


def test_every_kind_is_on_the_lab_and_the_complexity_page():
    lab = open_page("pages/attention_lab.py")
    assert lab.sidebar.selectbox(key="lab_attention").options == ATTENTION.names()
    cx = open_page("pages/complexity.py")
    assert cx.sidebar.multiselect(key="cx_kinds").options == ATTENTION.names() + REFERENCES.names()
    theory = next(m.value for m in cx.markdown if m.value.startswith("For one layer"))
    for kind in ATTENTION.values():
        assert f"**{kind.name}**: {kind.theory}" in theory
    flops = next(s for s in plotly_specs(cx) if s["layout"]["title"]["text"] == "Attention FLOPs (theory)")
    assert [t["name"] for t in flops["data"]] == ATTENTION.names() + REFERENCES.names()
    for trace in flops["data"]:  # each kind's own style
        entry = ATTENTION[trace["name"]] if trace["name"] in ATTENTION else REFERENCES[trace["name"]]
        assert trace["line"]["color"] == entry.style.color and trace["marker"]["symbol"] == entry.style.marker
    size = cx.sidebar.number_input(key="cx_window").help
    assert all(f"{k.name}: " in size for k in ATTENTION.values() if k.size_control)  # the size control's help


def test_every_encoding_is_on_the_lab_the_positions_page_and_the_experiment():
    lab = open_page("pages/attention_lab.py")
    assert lab.sidebar.selectbox(key="lab_encoding").options == ENCODINGS.names()
    pe = open_page("pages/positions.py")
    assert pe.multiselect(key="pe_encodings").options == ENCODINGS.names()
    tabbed = [c.title for c in ENCODINGS.values() if c.section() is not None]
    assert [t.label for t in pe.tabs] == tabbed


def test_every_kind_and_encoding_is_in_the_docs_reference():
    text = screenshots.reference_markdown()
    for name in ATTENTION.names() + ENCODINGS.names():
        assert f"**{name}**" in text


def test_every_page_has_its_file_keys_screenshots_and_lessons():
    for page in PAGES.values():
        assert (screenshots.ROOT / page.file).is_file()
        assert any(path == page.path for path, _ in screenshots.shots()), page.id
        assert all(r.startswith(page.prefix) for r in page.reserved)
        assert all(r in urlstate.reserved_params() for r in page.reserved)
    for lesson in LESSONS.values():
        assert lesson.page in PAGES and all(k.startswith(PAGES[lesson.page].prefix) for k in lesson.settings)
    prefixes = [p.prefix for p in PAGES.values()]
    assert len(set(prefixes)) == len(prefixes)


def test_every_page_opens_through_the_navigation():
    for page in PAGES.values():
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        if not page.default:
            at.switch_page(page.file)
            at.run()
        assert_clean(at)
        assert len(plotly_specs(at)) >= page.charts, page.id


def test_pages_never_stop_the_script():
    """st.stop() would skip the shell and the link notices that app.py draws after the page."""
    for page in PAGES.values():
        assert "st.stop(" not in (screenshots.ROOT / page.file).read_text(), page.file


def test_the_glossary_explains_every_kind_encoding_and_the_words_the_pages_use():
    from explorer import glossary

    text = glossary.markdown()
    for name in ATTENTION.names() + ENCODINGS.names():
        assert f"**{name}" in text
    for word in ("head size", "nats", "FLOPs", "sdpa", "window", "w_min", "φ", "residual stream", "token"):
        assert f"**{word}" in text, word
