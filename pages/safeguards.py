"""Safeguards: what the claims "the model flags its uncertainty, learns from feedback, protects private
data, mitigates bias" come to at small scale, each run live on a model trained here, with what it
does and what it cannot do."""
import streamlit as st

from explorer import safeguards
from explorer.figures import md_escape
import ui

S = st.session_state
PAGE = ui.ensure_navigation(__file__)
DEFAULTS = safeguards.url_defaults()


# ---------------------------------------------------------------------------------------------- uncertainty
def uncertainty_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def uncertainty_tab() -> None:
    st.info("Uncertainty: coming in this issue.")


# ---------------------------------------------------------------------------------------------- feedback
def feedback_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def feedback_tab() -> None:
    st.info("Feedback: coming in this issue.")


# ---------------------------------------------------------------------------------------------- privacy
def privacy_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def privacy_tab() -> None:
    st.info("Privacy: coming in this issue.")


# ---------------------------------------------------------------------------------------------- bias
def bias_controls() -> None:
    """This tab's controls (drawn even while another tab is open: a link's values are kept)."""


def bias_tab() -> None:
    st.info("Bias: coming in this issue.")


# ---------------------------------------------------------------------------------------------- the page
st.title("Safeguards")
st.caption("Four claims made for language models, each tried on a small model trained here: that it flags its "
           "own uncertain statements, learns from human feedback, protects private data, and mitigates bias. "
           "Each tab runs the real technique and measures what it does, and what it cannot do.")

VIEWS = dict(zip(safeguards.TABS, (uncertainty_tab, feedback_tab, privacy_tab, bias_tab)))  # tab title -> its view
CONTROLS = dict(zip(safeguards.TABS, (uncertainty_controls, feedback_controls, privacy_controls, bias_controls)))
tabs = dict(zip(VIEWS, st.tabs(list(VIEWS), key="sg_tab", on_change="rerun", bind="query-params")))
for title, view in VIEWS.items():
    with tabs[title]:
        if tabs[title].open:
            view()
        else:
            CONTROLS[title]()  # a closed tab's controls are still drawn, so a link's values are kept
