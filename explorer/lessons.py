"""Lessons: named presets, each a small declarative structure: which page, which control values,
what to do on arrival (train, measure, run), and what to look at. Reachable from every page's
sidebar and by URL (``?lesson=<id>``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import Registry


@dataclass(frozen=True)
class Lesson:
    id: str  # the URL's lesson=<id>
    title: str
    page: str  # file of the page it opens, e.g. "pages/attention_lab.py"
    settings: dict = field(default_factory=dict)  # widget key -> value
    autorun: str = ""  # session flag the page acts on at once ("lab_autorun": train, ...), or ""
    explanation: str = ""  # markdown: what to look at


LESSONS: Registry[Lesson] = Registry("lesson")


def _add(lesson: Lesson) -> None:
    LESSONS.register(lesson.id)(lesson)


_add(Lesson(
    "reverse", "Reverse a sequence: anti-diagonal attention", "pages/attention_lab.py",
    {"lab_task": "reverse", "lab_length": 12, "lab_attention": "softmax", "lab_encoding": "learned",
     "lab_heads": 4, "lab_layers": 2},
    autorun="lab_autorun",
    explanation="The model trains as you watch. To write the answer backwards, the position that writes answer "
                "character *t* must read input character *L − 1 − t*: watch the layer-0 maps turn from a blur into "
                "an **anti-diagonal** (bottom-left to the middle) as the accuracy curve jumps. Then switch **Heads** "
                "to 1: the same weights, read as one head, still find it.",
))
_add(Lesson(
    "quadratic", "Why attention is quadratic", "pages/complexity.py",
    {"cx_kinds": ["softmax", "sliding_window", "linear", "sdpa"], "cx_max_n": 8192},
    autorun="cx_autorun",
    explanation="Each doubling of N quadruples full softmax's time and memory: on the log-log plots its line climbs "
                "with **slope 2**, the windowed and linear kinds with slope 1. Read the crossover column: below it, "
                "fixed overheads make the clever kernels *slower*.",
))
_add(Lesson(
    "windows", "Windows and sparsity", "pages/attention_lab.py",
    {"lab_task": "copy", "lab_length": 8, "lab_attention": "sliding_window", "lab_window": 4, "lab_heads": 4},
    autorun="lab_autorun",
    explanation="Each token may look only **4** tokens back: the maps are a **band**. Copying needs to look back "
                "L + 1 = 9 tokens, so watch the model fail. Now raise the window to 9, or pick **block_sparse** "
                "(its strided hops reach further), and train again.",
))
_add(Lesson(
    "extrapolation", "Train short, test long", "pages/positions.py",
    {"pe_task": "copy", "pe_train_len": 8},
    autorun="pe_autorun",
    explanation="Five models, one per positional encoding, trained on inputs of length 4–8 and tested on 8, 16 "
                "and 32. Look at which lines stay up at 16 and 32, and at the **learned** line that stops: a learned "
                "table has no rows past its training context.",
))
_add(Lesson(
    "induction", "Watch an induction head form", "pages/attention_lab.py",
    {"lab_task": "induction", "lab_length": 12, "lab_attention": "softmax", "lab_encoding": "learned",
     "lab_layers": 2, "lab_heads": 4},
    autorun="lab_autorun",
    explanation="A random sequence, then the same again. Once the repeat starts, a token can be predicted by "
                "finding its earlier copy and reading **what came next**: look in layer 1 for a stripe parallel "
                "to the diagonal, 11 positions to its left — the induction head.",
))
