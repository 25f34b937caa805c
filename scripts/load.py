"""Many students, one server: concurrent sessions changing controls on the Attention Lab.

    python scripts/load.py --sessions 20 [--changes 6] [--json load.json]

Starts the app on a free local port, then opens N sessions at once with a light client that
speaks Streamlit's own websocket protocol (protobuf BackMsg / ForwardMsg, as the browser's
frontend does, without drawing anything). Each session types its own input, then changes the head
count and attention kind a few times. Reported: sessions that completed without an error, p50 and
p95 of the time from a control change to the server's "script finished", the server's peak
memory (VmHWM of its process), and whether any session ever received another session's input.
Traffic goes only to 127.0.0.1; every loop is bounded.
"""
import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from scripts.appserver import app_server  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def word(i: int, n: int = 6) -> str:
    """A distinct lowercase input for session i."""
    out = ""
    for _ in range(n):
        out += LETTERS[i % 26]
        i = i // 26 + 7
    return out


class Session:
    def __init__(self, url: str, index: int, timeout: float):
        self.url, self.index, self.timeout = url, index, timeout
        self.ids: dict[str, str] = {}  # widget key -> widget id
        self.states: dict[str, tuple[str, object]] = {}  # widget id -> (field, value)
        self.times: list[float] = []
        self.error: str | None = None
        self.saw_other_input = False
        self.saw_own_input = False
        self.grid_traces = 0  # heatmaps in the last attention grid received (layers x heads)
        self.grids: list[int] = []

    async def rerun(self, ws) -> float:
        msg = BackMsg()
        msg.rerun_script.query_string = ""
        for wid, (field, value) in self.states.items():
            w = msg.rerun_script.widget_states.widgets.add()
            w.id = wid
            setattr(w, field, value)
        t0 = time.perf_counter()
        await ws.send(msg.SerializeToString())
        deadline = t0 + self.timeout
        while True:
            raw = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.perf_counter()))
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                self.read_element(fwd.delta.new_element)
            elif kind == "script_finished":
                if fwd.script_finished != ForwardMsg.FINISHED_SUCCESSFULLY:
                    self.error = f"script finished with status {fwd.script_finished}"
                return time.perf_counter() - t0

    def read_element(self, el) -> None:
        kind = el.WhichOneof("type")
        if kind == "exception":
            self.error = f"exception in page: {el.exception.message[:200]}"
        elif kind in ("selectbox", "text_input", "slider", "number_input", "select_slider"):
            wid = getattr(el, kind).id
            self.ids[wid.rsplit("-", 1)[-1]] = wid
        elif kind == "plotly_chart" and '"layer 0 head 0"' in el.plotly_chart.spec:
            self.grid_traces = len(json.loads(el.plotly_chart.spec)["data"])
        elif kind == "plotly_chart" and '"query"' in el.plotly_chart.spec:
            spec = json.loads(el.plotly_chart.spec)
            tokens = "".join(spec["layout"]["xaxis"]["ticktext"])
            mine = word(self.index)
            if tokens.startswith(mine):
                self.saw_own_input = True
            elif any(tokens.startswith(word(j)) for j in range(200) if j != self.index):
                self.saw_other_input = True

    def set(self, key: str, field: str, value) -> None:
        self.states[self.ids[key]] = (field, value)

    async def run(self, changes: int) -> None:
        try:
            async with websockets.connect(self.url, subprotocols=["streamlit"], max_size=2**26,
                                          open_timeout=self.timeout) as ws:
                await self.rerun(ws)  # first page load
                self.set("lab_input", "string_value", word(self.index))
                await self.rerun(ws)
                plan = [("lab_heads", "string_value", h) for h in ("1", "2", "8", "4")] + \
                       [("lab_attention", "string_value", a) for a in ("sliding_window", "linear", "softmax")]
                for step in range(changes):
                    key, field, value = plan[(step + self.index) % len(plan)]
                    self.set(key, field, value)
                    self.times.append(await self.rerun(ws))
                    self.grids.append(self.grid_traces)
                    if self.error:
                        return
        except Exception as e:  # a session that fails is counted, not fatal
            self.error = f"{type(e).__name__}: {e}"


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def main_async(args, base: str, pid: int) -> dict:
    url = base.replace("http://", "ws://") + "/_stcore/stream"
    sessions = [Session(url, i, args.timeout) for i in range(args.sessions)]
    t0 = time.perf_counter()
    await asyncio.gather(*(s.run(args.changes) for s in sessions))
    wall = time.perf_counter() - t0
    times = sorted(t for s in sessions for t in s.times)
    # a session completed if every change rendered, showed its own input, and drew the heads it asked for
    ok = [s for s in sessions if s.error is None and len(s.times) == args.changes and s.saw_own_input
          and all(g > 0 for g in s.grids)]
    q = statistics.quantiles(times, n=20, method="inclusive") if len(times) >= 2 else [float("nan")] * 19
    return {
        "sessions": args.sessions, "completed": len(ok), "changes_per_session": args.changes,
        "p50_s": round(statistics.median(times), 3) if times else None, "p95_s": round(q[18], 3),
        "max_s": round(max(times), 3) if times else None, "wall_s": round(wall, 1),
        "server_peak_bytes": peak_rss(pid), "cross_session_leaks": sum(s.saw_other_input for s in sessions),
        "errors": [s.error for s in sessions if s.error][:5], "grid_sizes_session0": sessions[0].grids,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--changes", type=int, default=6, help="control changes per session")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one rerun may take")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    with app_server() as base:
        pid = base.pid
        result = asyncio.run(main_async(args, base, pid))
    print(f"{result['completed']}/{result['sessions']} sessions completed without an error; control change -> render "
          f"done: p50 {result['p50_s']} s, p95 {result['p95_s']} s, max {result['max_s']} s; server peak memory "
          f"{result['server_peak_bytes'] / 2**30:.2f} GiB; sessions that saw another's input: "
          f"{result['cross_session_leaks']}")
    if result["errors"]:
        print("errors:", *result["errors"], sep="\n  ")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
