"""bertviz's head view and model view, drawn offline and safely from weights we computed.

bertviz 1.4.1's own ``head_view``/``model_view`` load require.js, d3 and jQuery from a CDN (blank
in an offline classroom) and write token strings raw into a ``<script>`` (a token such as
``</script><script>...`` would run). Here we keep bertviz's JavaScript (``head_view.js``,
``model_view.js``, read from the installed package) and:
- inline d3 5.7.0 (the version bertviz asks for, read from the installed ``mpld3`` package) and
  jQuery 3.7.1 (from ``XStatic-jQuery``), and replace the require.js loader by a two-line shim that
  hands bertviz those two libraries;
- encode the parameters as JSON with ``<``, ``>``, ``&`` and the JS line separators escaped, so
  no token can close the script or open a tag. bertviz itself draws tokens with d3's ``.text()``.

Only files are read from bertviz and mpld3; neither is imported (no IPython, matplotlib or
transformers needed).
"""
from __future__ import annotations

import importlib.util
import json
import re
import uuid
from functools import lru_cache
from pathlib import Path

import numpy as np

REQUIRE_SHIM = (
    "var require = {config: function () {}};\n"
    "function requirejs(deps, callback) { callback(window.jQuery, window.d3); }\n"
)


class AssetMissing(RuntimeError):
    """A JavaScript file bertviz needs is not installed."""


def _find(package: str, rel: str) -> Path:
    """``rel`` inside an installed package, found without importing it (``xstatic`` is a
    namespace package and may span several folders)."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / rel).exists():
            return Path(folder) / rel
    raise AssetMissing(f"{package}/{rel} is not installed: run python -m pip install --no-deps -r "
                       "requirements-assets.txt (see README)")


@lru_cache(maxsize=None)
def asset(which: str) -> str:
    """The text of one JavaScript asset: 'd3', 'jquery', 'head_view' or 'model_view'."""
    paths = {
        "d3": ("mpld3", "js/d3.v5.min.js"),
        "jquery": ("xstatic", "pkg/jquery/data/jquery.min.js"),
        "head_view": ("bertviz", "head_view.js"),
        "model_view": ("bertviz", "model_view.js"),
    }
    text = _find(*paths[which]).read_text(encoding="utf-8")
    if which in ("head_view", "model_view"):  # drop the CDN paths; the shim supplies the libraries
        text = re.sub(r"require\.config\(\{.*?\}\);", "", text, count=1, flags=re.S)
    return text


def safe_json(obj) -> str:
    """JSON that is safe inside an HTML ``<script>``: no ``<``, ``>``, ``&`` or U+2028/9 raw."""
    text = json.dumps(obj)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _page(view: str, params: dict, body: str, dark: bool = False) -> str:
    script = asset(view).replace("PYTHON_PARAMS", safe_json(params))
    colors = "background:#0e1117;color:#f5f5f5" if dark else "background:#fff;color:#000"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<script>{asset('jquery')}</script>\n<script>{asset('d3')}</script>\n<script>{REQUIRE_SHIM}</script>"
        + ("<style>svg text:not([fill]) {fill: #f5f5f5;} select {background:#1f2430;color:#f5f5f5;}</style>"
           if dark else "")
        + f"</head><body style='{colors}'>"
        f"{body}<script>{script}</script></body></html>"
    )


def _params(attentions: np.ndarray, tokens: list[str], vis_id: str, layer=None, heads=None) -> dict:
    n_layer = attentions.shape[0]
    return {
        "attention": [{"name": None, "attn": np.round(attentions, 4).tolist(), "left_text": tokens,
                       "right_text": tokens}],
        "default_filter": "0", "root_div_id": vis_id, "layer": layer, "heads": heads,
        "include_layers": list(range(n_layer)),
    }


def head_view_height(T: int) -> int:
    """Pixels bertviz's head view takes for ``T`` tokens (its rows are 22.5 px; measured in Chromium)."""
    return int(22.5 * T + 60)


def model_view_height(n_layer: int, n_head: int, T: int) -> int:
    """Pixels bertviz's model view takes: its own layout rules (model_view.js: thumbnails of
    ``7 * 12 / heads`` px per token row, one row of thumbnails per layer, or the detail panel)."""
    thumbnail = T * 7 * 12 / n_head + 2 * 5
    return int(max(n_layer * thumbnail + 38, T * 18 + 55) + 20)


def head_view_html(attentions: np.ndarray, tokens: list[str], layer: int | None = None, dark: bool = False) -> str:
    """bertviz's head view of ``attentions`` (n_layer, nh, T, T) as a self-contained HTML page."""
    vis_id = f"bertviz-{uuid.uuid4().hex}"
    body = (f"<div id='{vis_id}' style=\"font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;\">"
            "<span style='user-select:none'>Layer: <select id='layer'></select></span><div id='vis'></div></div>")
    return _page("head_view", _params(attentions, tokens, vis_id, layer), body, dark)


def model_view_html(attentions: np.ndarray, tokens: list[str], dark: bool = False) -> str:
    """bertviz's model view (every layer x head) as a self-contained HTML page."""
    vis_id = f"bertviz-{uuid.uuid4().hex}"
    params = _params(attentions, tokens, vis_id)
    n_head = attentions.shape[1]
    params.update(display_mode="dark" if dark else "light", include_heads=list(range(n_head)), total_heads=n_head)
    del params["layer"], params["heads"]
    body = (f"<div id='{vis_id}' style=\"font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;\">"
            "<div id='vis'></div></div>")
    return _page("model_view", params, body, dark)
