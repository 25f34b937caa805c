"""A page section described as data: the controls it needs and the blocks it shows.

The library describes what a section shows (markdown, figures as plain dicts, columns) and which
controls it reads; ``ui.render`` draws it with Streamlit, every control bound to the URL. Tests
and scripts read the same description without a browser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union


@dataclass(frozen=True)
class Slider:
    key: str  # session and URL key
    label: str
    lo: int
    hi: int
    default: int
    help: str = ""


@dataclass(frozen=True)
class Choice:
    key: str
    label: str
    options: tuple
    default: Any
    help: str = ""
    widget: str = "select_slider"  # or "selectbox"


Control = Union[Slider, Choice]


@dataclass(frozen=True)
class Markdown:
    text: str


@dataclass(frozen=True)
class Caption:
    text: str


@dataclass(frozen=True)
class Note:
    text: str  # an info box
    icon: str = ":material/info:"


@dataclass(frozen=True)
class Figure:
    figure: dict  # a plotly figure as a dict (explorer.figures)
    key: str  # widget key
    description: str = ""  # what the figure shows, in words (its accessible name)


@dataclass(frozen=True)
class Table:
    rows: list  # list of dicts
    key: str


@dataclass(frozen=True)
class Columns:
    columns: Sequence[Sequence["Block"]]


Block = Union[Markdown, Caption, Note, Figure, Table, Columns]


@dataclass(frozen=True)
class Section:
    """A titled section: its controls and a function from their values to blocks."""
    title: str
    controls: Sequence[Control] = ()
    build: Optional[Callable[..., list]] = None  # (values: dict, **context) -> list[Block]
    context: tuple = field(default=())  # names of context the build needs (e.g. "experiment")

    def defaults(self) -> dict:
        return {c.key: c.default for c in self.controls}

    def blocks(self, values: Optional[dict] = None, **context) -> list:
        merged = {**self.defaults(), **(values or {})}
        return self.build(merged, **context) if self.build else []


def walk(blocks: Sequence) -> list:
    """Every block, columns opened up, in order (for tests and scripts)."""
    out = []
    for b in blocks:
        if isinstance(b, Columns):
            for col in b.columns:
                out += walk(col)
        else:
            out.append(b)
    return out
