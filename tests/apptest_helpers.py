"""Helpers to drive pages with streamlit.testing.v1.AppTest and read back what they drew."""
import json
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str, timeout: float = 30) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    at.switch_page(page)
    at.run()
    assert_clean(at)
    return at


def opened_with(page: str, params: dict, timeout: float = 60) -> AppTest:
    """``page`` opened from a link with these parameters (its first run is the page's)."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.switch_page(page)
    at.query_params.update(params)
    at.run()
    assert_clean(at)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def plotly_specs(at: AppTest) -> list[dict]:
    """Every plotly figure the page drew, as the JSON the browser receives."""
    return [json.loads(e.proto.spec) for e in at.get("plotly_chart")]


def shown_table(at: AppTest, key: str):
    """The rows of the table the page drew under ``key`` (``ui.table``), as a pandas DataFrame; it
    fails unless the page shows them now, as its markdown table."""
    import pandas as pd

    from explorer.figures import markdown_table

    rows = at.session_state["_page_tables"][key]
    assert markdown_table(rows) in [m.value for m in at.markdown], f"table {key} is not on the page"
    return pd.DataFrame(rows)


def as_written(shown: str) -> str:
    """A text ``ui.text_box`` showed, without the zero-width spaces that keep its edges."""
    from ui import EDGE

    return shown.removeprefix(EDGE).removesuffix(EDGE)


def boxed_texts(at: AppTest) -> list[str]:
    """The texts ``ui.text_box`` showed, as written."""
    return [as_written(t.value) for t in at.text]


def iframes(at: AppTest) -> list[str]:
    return [e.proto.srcdoc for e in at.get("iframe")]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def run_until(at: AppTest, busy, timeout_s: float = 180.0, poll_s: float = 0.2) -> AppTest:
    """Rerun the page until ``busy(at)`` is false: AppTest has no browser to trigger the timed
    reruns of a live fragment, so a test reruns the page itself while a job runs."""
    deadline = time.monotonic() + timeout_s
    while busy(at):
        assert time.monotonic() < deadline, "the job did not finish in time"
        time.sleep(poll_s)
        at.run()
    at.run()  # the job may have finished while the last run drew its live view: draw the finished one
    return at


def multimodal_busy(at: AppTest) -> bool:
    """The Multimodal page has runs that are still training, or trained but not yet scored on the
    page (the scoring starts in the run after training ends)."""
    s = at.session_state
    handles = list(s["mm_handles"].values()) if "mm_handles" in s else []
    if any(h.active for h in handles):
        return True
    failed = any(h.status in ("failed", "refused") for h in handles) or at.error
    return bool(handles) and not failed and not any("What came out" in m.value for m in at.markdown)
