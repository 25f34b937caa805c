"""Streamlit helpers shared by the pages. The library (explorer/) stays free of any UI; this module
holds only what every page would otherwise repeat."""
from typing import Callable

import plotly.graph_objects as go
import streamlit as st


def ensure_navigation(page_file: str) -> None:
    """Make sure the page runs under app.py's navigation.

    The first request to a fresh server can run a ``pages/`` file without app.py (Streamlit's old
    pages-folder mode decides before app.py has ever run). Registering this page with the
    navigation API and rerunning switches the server to app.py's navigation for good, on the URL
    that was asked for."""
    if "app_shell" not in st.session_state:
        st.navigation([st.Page(lambda: None, title="shell", default=True), st.Page(page_file)], position="hidden")
        st.rerun()


def chart(fig: dict, key: str) -> None:
    """Draw a figure built by explorer.figures (a plain dict) as plotly."""
    st.plotly_chart(go.Figure(fig), key=key)


def run_with_progress(run: Callable, settings, state_key: str):
    """Run a long computation ``run(settings, _progress=...)`` under a progress bar and keep its
    result in the session under ``state_key`` (with the settings it belongs to)."""
    bar = st.progress(0.0, text="starting")
    result = run(settings, _progress=lambda f, what: bar.progress(min(f, 1.0), text=what))
    bar.empty()
    st.session_state[state_key] = (settings, result)
    return result


def kept_result(settings, state_key: str):
    """This session's last result for exactly these settings, or None."""
    kept = st.session_state.get(state_key)
    return kept[1] if kept is not None and kept[0] == settings else None
