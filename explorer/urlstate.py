"""Shareable state: which URL parameters a page run took, ignored, or did not know.

Every widget is bound to a URL parameter named by its key (Streamlit's
``bind="query-params"``), which drops values the widget cannot take without a word. The app
compares the parameters before and after a page run to tell the user what was ignored and why.
"""
from __future__ import annotations

from typing import Any, Mapping

from .pages import reserved_params


def _applied(raw: list[str], value: Any) -> bool:
    """Whether the widget's value is what the URL asked for (a default is removed from the URL)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] == raw
    if len(raw) != 1:
        return False
    text = raw[0]
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return str(value) == text


def notices(before: Mapping[str, list[str]], after: Mapping[str, list[str]], state: Mapping[str, Any]):
    """``(messages, unknown)``: a message for each parameter that was ignored, and the names that
    match no control (to remove from the URL)."""
    messages, unknown = [], []
    reserved = reserved_params()
    for name, raw in before.items():
        if name in reserved:
            continue
        shown = ", ".join(raw)
        if len(shown) > 40:
            shown = shown[:40] + "…"
        if name not in state:
            unknown.append(name)
            messages.append(f"unknown parameter '{name[:40]}' (no such control on this page)")
        elif name not in after and not _applied(raw, state[name]):
            messages.append(f"'{name}={shown}' is not a value this control can take; kept {state[name]!r}")
    return messages, unknown
