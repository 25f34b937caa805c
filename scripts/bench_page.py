"""Server-side timings of the Attention Lab page, through streamlit.testing.v1.AppTest (the same
script runner the server uses, without a browser). Prints one JSON object.

    python scripts/bench_page.py [--repeats 5]

Measured: the server time of a rerun (script start to end, as the page records it) after a
control change that needs no training (attention kind, window, heads, selected head, input text)
at default settings, and the interval between redraws of the loss curve and attention maps
while training.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    changes = [
        ("attention=sliding_window", lambda: at.sidebar.selectbox(key="lab_attention").set_value("sliding_window")),
        ("window=4", lambda: at.sidebar.number_input(key="lab_window").set_value(4)),
        ("attention=block_sparse", lambda: at.sidebar.selectbox(key="lab_attention").set_value("block_sparse")),
        ("attention=linear", lambda: at.sidebar.selectbox(key="lab_attention").set_value("linear")),
        ("attention=softmax", lambda: at.sidebar.selectbox(key="lab_attention").set_value("softmax")),
        ("heads=1", lambda: at.sidebar.selectbox(key="lab_heads").set_value(1)),
        ("heads=4", lambda: at.sidebar.selectbox(key="lab_heads").set_value(4)),
        ("head=2", lambda: at.selectbox(key="lab_head").set_value(2)),
        ("input=abcdefgh", lambda: at.text_input(key="lab_input").set_value("abcdefgh")),
    ]
    times: dict[str, list[float]] = {}
    # untrained model first, then the same changes on a trained one
    for phase in ("untrained", "trained"):
        if phase == "trained":
            t0 = time.perf_counter()
            at.button(key="lab_train").click().run()
            while at.session_state["lab_run"].training:  # AppTest has no browser to rerun the live fragment
                time.sleep(0.5)
                at.run()
            train_s = time.perf_counter() - t0
            learned_at = at.session_state["lab_run"].current().learned_at
        for r in range(args.repeats):
            for name, change in changes:
                change()
                at.run()
                times.setdefault(f"{phase}:{name}", []).append(at.session_state["lab_render_s"])
                assert not at.exception, [e.value for e in at.exception]
            at.text_input(key="lab_input").set_value(at.session_state["lab_input_auto"]).run()
    all_ms = [t * 1000 for v in times.values() for t in v]
    print(json.dumps({
        "control_change_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in times.items()},
        "control_change_ms_median": round(statistics.median(all_ms), 1),
        "control_change_ms_max": round(max(all_ms), 1),
        "train_to_learned_s": round(train_s, 2),
        "learned_at": learned_at,
    }, indent=1))


if __name__ == "__main__":
    main()
