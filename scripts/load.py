"""Many students, one server, through Streamlit's own websocket protocol (protobuf BackMsg /
ForwardMsg, as the browser's frontend speaks it, without drawing anything).

    python scripts/load.py --sessions 20 [--changes 6] [--json load.json]
    python scripts/load.py --scenario classroom --sessions 30 [--measurers 5 --changers 5] [--distinct-seeds]
    python scripts/load.py --scenario experts --sessions 10 [--steps 100] [--distinct-seeds]
    python scripts/load.py --scenario multimodal --sessions 10 [--steps 100] [--distinct-seeds]
    python scripts/load.py --scenario incontext --sessions 10 --steps 250 [--distinct-seeds]
    python scripts/load.py --scenario memory --sessions 10 [--distinct-seeds]
    python scripts/load.py --scenario training --sessions 10 --steps 100 [--distinct-seeds]
    python scripts/load.py --scenario safeguards --sessions 10 --steps 50 [--distinct-seeds]

``controls`` (the default): N sessions open the Attention Lab at once; each types its own input,
then changes the head count and attention kind a few times. Reported: completions, p50/p95 of the
time from a control change to the server's "script finished", the server's peak memory, and
whether any session ever received another session's input.

``classroom``: N sessions open the Lab and press **Train** with the Lab's defaults at the same
moment (``--distinct-seeds`` gives each its own seed, so nothing is shared); each then follows its
live view as a browser does (the fragment's timed reruns) until its page shows the finished run.
Meanwhile ``--measurers`` sessions (of those that finished training) open the Complexity page and
press **Measure** with the largest settings the page allows (each a different sweep, so the server
must queue them), watch for ``--measure-seconds`` and press Stop; ``--changers`` other sessions keep
changing controls on the Lab. Reported: training completion times (p50/p95/max), queue waits,
control-change p95 while the others train, the server's peak resident memory and the machine's
lowest free memory against the scheduler's budget, errors, and sessions that lost their trained
model (each training session reopens the Lab at the end and must still show its run).

Traffic goes only to 127.0.0.1; every loop is bounded in count and time, and the script stops by
itself.
"""
import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402
from streamlit.proto.BackMsg_pb2 import BackMsg  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

from explorer.jobs import default_budget  # noqa: E402
from scripts.appserver import app_server  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WIDGETS = ("selectbox", "text_input", "text_area", "slider", "number_input", "select_slider", "button", "multiselect",
           "radio", "toggle", "checkbox")
# the largest sweep the Complexity page allows (its controls' maxima), forward and backward
BIGGEST_SWEEP = {"cx_max_n": "65536", "cx_width": "256", "cx_heads": "16", "cx_pass": "forward+backward",
                 "cx_time_budget": "120.0", "cx_mem_budget": "16.0"}


def word(i: int, n: int = 6) -> str:
    """A distinct lowercase input for session i."""
    out = ""
    for _ in range(n):
        out += LETTERS[i % 26]
        i = i // 26 + 7
    return out


def quantile(xs: list[float], q: float):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


class Session:
    """One student: a websocket, the widgets the server drew, and what the page said."""

    def __init__(self, url: str, index: int, timeout: float):
        self.url, self.index, self.timeout = url, index, timeout
        self.ids: dict[str, str] = {}  # widget key -> widget id
        self.states: dict[str, tuple[str, object]] = {}  # widget id -> (field, value)
        self.query = ""
        self.page = ""
        self.fragment: tuple[str, float] | None = None  # (fragment id, interval) of a live view
        self.times: list[float] = []
        self.error: str | None = None
        self.saw_other_input = False
        self.saw_own_input = False
        self.grid_traces = 0
        self.grids: list[int] = []
        self.texts: list[str] = []  # markdown, alert and code bodies of the last run
        self.ws = None

    async def rerun(self, fragment: bool = False, trigger: str | None = None) -> float:
        msg = BackMsg()
        msg.rerun_script.query_string = self.query
        msg.rerun_script.page_name = self.page
        if fragment and self.fragment:
            msg.rerun_script.fragment_id = self.fragment[0]
            msg.rerun_script.is_auto_rerun = True
        for wid, (field, value) in self.states.items():
            w = msg.rerun_script.widget_states.widgets.add()
            w.id = wid
            setattr(w, field, value)
        if trigger is not None:
            w = msg.rerun_script.widget_states.widgets.add()
            w.id = self.ids[trigger]
            w.trigger_value = True
        if not fragment:
            self.texts = []
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        deadline = t0 + self.timeout
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout=max(0.1, deadline - time.perf_counter()))
            fwd = ForwardMsg()
            fwd.ParseFromString(raw)
            kind = fwd.WhichOneof("type")
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                self.read_element(fwd.delta.new_element)
            elif kind == "auto_rerun":
                self.fragment = (fwd.auto_rerun.fragment_id, fwd.auto_rerun.interval)
            elif kind == "stop_auto_rerun":
                self.fragment = None
            elif kind == "page_info_changed":
                self.query = fwd.page_info_changed.query_string
            elif kind == "script_finished":
                if fwd.script_finished not in (ForwardMsg.FINISHED_SUCCESSFULLY,
                                               ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                    if fwd.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                        self.error = f"script finished with status {fwd.script_finished}"
                    continue  # a rerun follows (st.rerun): wait for its end
                return time.perf_counter() - t0

    def read_element(self, el) -> None:
        kind = el.WhichOneof("type")
        if kind == "exception":
            self.error = f"exception in page: {el.exception.message[:200]}"
        elif kind in WIDGETS:
            wid = getattr(el, kind).id
            self.ids[wid.rsplit("-", 1)[-1]] = wid
        elif kind == "markdown":
            self.texts.append(el.markdown.body)
        elif kind == "alert":
            self.texts.append(el.alert.body)
        elif kind == "code":  # written text (a sample)
            self.texts.append(el.code.code_text)
        elif kind == "progress":
            self.texts.append(el.progress.text)
        elif kind == "plotly_chart" and re.search(r"\"type\": ?\"image\"", el.plotly_chart.spec):  # a picture: its title
            self.texts.append(json.loads(el.plotly_chart.spec)["layout"]["title"]["text"])
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

    def status(self) -> str:
        return next((t for t in reversed(self.texts) if re.search(r"trained \d+ of \d+ steps", t)), "")

    async def open(self, query: str = "", page: str = "") -> None:
        self.query, self.page, self.states, self.fragment = query, page, {}, None
        await self.rerun()

    # ------------------------------------------------------------------------------------------ scenarios
    async def change_controls(self, changes: int, think_s: float = 0.0) -> None:
        plan = [("lab_heads", "string_value", h) for h in ("1", "2", "8", "4")] + \
               [("lab_attention", "string_value", a) for a in ("sliding_window", "linear", "softmax")]
        for step in range(changes):
            key, field, value = plan[(step + self.index) % len(plan)]
            self.set(key, field, value)
            self.times.append(await self.rerun())
            self.grids.append(self.grid_traces)
            if self.error:
                return
            await asyncio.sleep(think_s)

    async def train(self, start: asyncio.Event, limit_s: float) -> dict:
        """Press Train when ``start`` fires; follow the live view until the run is finished."""
        await start.wait()
        t0 = time.perf_counter()
        await self.rerun(trigger="lab_train")
        first_live = None
        while time.perf_counter() - t0 < limit_s:
            status = self.status()
            if "trained" in status and first_live is None:
                first_live = time.perf_counter() - t0
            if status and "Training" not in status and "waiting" not in status:
                return {"finished_s": time.perf_counter() - t0, "first_live_s": first_live, "status": status}
            await asyncio.sleep(self.fragment[1] if self.fragment else 0.25)
            await self.rerun(fragment=self.fragment is not None)
            if self.error:
                break
        return {"finished_s": None, "first_live_s": first_live, "status": self.status()}

    async def measure(self, repeats: int, watch_s: float) -> dict:
        """Open the Complexity page with the largest settings, press Measure, watch, press Stop."""
        query = "&".join(f"{k}={v}" for k, v in {**BIGGEST_SWEEP, "cx_repeats": str(repeats)}.items())
        await self.open(query, page="complexity")
        t0 = time.perf_counter()
        await self.rerun(trigger="cx_measure")
        admitted, waited, refused = None, None, None
        while time.perf_counter() - t0 < watch_s:
            body = " ".join(self.texts)
            if "Waiting for room" in body and waited is None:
                waited = time.perf_counter() - t0
            if "could not run" in body:
                refused = body[body.index("could not run"):][:200]
                break
            if "measuring" in body and "Waiting for room" not in body and admitted is None:
                admitted = time.perf_counter() - t0
            await asyncio.sleep(self.fragment[1] if self.fragment else 0.5)
            await self.rerun(fragment=self.fragment is not None)
        if "cx_stop" in self.ids:
            await self.rerun(trigger="cx_stop")
        return {"queued": waited is not None, "admitted_after_s": admitted, "refused": refused}

    async def lab_still_trained(self) -> bool:
        await self.open("", page="")
        return bool(re.search(r"trained \d+ of \d+ steps", self.status())) and "untrained" not in self.status()


async def connect(session: Session):
    return await websockets.connect(session.url, subprotocols=["streamlit"], max_size=2**27,
                                    open_timeout=session.timeout)


async def controls_scenario(args, url: str) -> dict:
    sessions = [Session(url, i, args.timeout) for i in range(args.sessions)]

    async def one(s: Session):
        try:
            s.ws = await connect(s)
            await s.open()
            s.set("lab_input", "string_value", word(s.index))
            await s.rerun()
            await s.change_controls(args.changes)
        except Exception as e:  # a session that fails is counted, not fatal
            s.error = f"{type(e).__name__}: {e}"
        finally:
            if s.ws is not None:
                await s.ws.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in sessions))
    times = sorted(t for s in sessions for t in s.times)
    ok = [s for s in sessions if s.error is None and len(s.times) == args.changes and s.saw_own_input
          and all(g > 0 for g in s.grids)]
    return {
        "scenario": "controls", "sessions": args.sessions, "completed": len(ok), "changes_per_session": args.changes,
        "p50_s": quantile(times, 0.5), "p95_s": quantile(times, 0.95), "max_s": round(max(times), 3) if times else None,
        "wall_s": round(time.perf_counter() - t0, 1), "cross_session_leaks": sum(s.saw_other_input for s in sessions),
        "errors": [s.error for s in sessions if s.error][:5],
    }


async def classroom_scenario(args, url: str) -> dict:
    n = args.sessions
    changers = set(range(n - args.changers, n))  # the last ones change controls instead of training
    trainers = [i for i in range(n) if i not in changers]
    measurers = set(trainers[: args.measurers])
    sessions = [Session(url, i, args.timeout) for i in range(n)]
    start = asyncio.Event()
    results: dict[int, dict] = {}
    measures: dict[int, dict] = {}
    lost: list[int] = []
    changing_done = asyncio.Event()

    async def one(s: Session):
        try:
            s.ws = await connect(s)
            await s.open(f"lab_seed={s.index + 1}" if args.distinct_seeds else "")
            if s.index in changers:
                await start.wait()
                while not changing_done.is_set():
                    await s.change_controls(7, think_s=args.think)
                    if s.error:
                        break
                return
            results[s.index] = await s.train(start, args.train_limit)
            if s.index in measurers:
                rank = sorted(measurers).index(s.index)  # a different sweep each (20, 19, ... repeats)
                measures[s.index] = await s.measure(repeats=20 - rank, watch_s=args.measure_seconds)
            if not await s.lab_still_trained():
                lost.append(s.index)
        except Exception as e:  # a session that fails is counted, not fatal
            s.error = f"{type(e).__name__}: {e}"
        finally:
            if s.ws is not None:
                await s.ws.close()

    async def conductor():
        await asyncio.sleep(2.0)  # every session has its page open
        start.set()
        while len(results) + len([s for s in sessions if s.error and s.index not in changers]) < len(trainers):
            await asyncio.sleep(0.5)
        while len(measures) < len(measurers) and not all(sessions[i].error for i in measurers - set(measures)):
            await asyncio.sleep(0.5)
        changing_done.set()

    t0 = time.perf_counter()
    await asyncio.gather(conductor(), *(one(s) for s in sessions))
    finished = [r["finished_s"] for r in results.values() if r["finished_s"] is not None]
    first_live = [r["first_live_s"] for r in results.values() if r["first_live_s"] is not None]
    control = [t for i in changers for t in sessions[i].times]
    return {
        "scenario": "classroom", "sessions": n, "trainers": len(trainers), "measurers": len(measurers),
        "changers": len(changers), "distinct_seeds": args.distinct_seeds,
        "training_finished": len(finished),
        "train_p50_s": quantile(finished, 0.5), "train_p95_s": quantile(finished, 0.95),
        "train_max_s": round(max(finished), 2) if finished else None,
        "first_live_p95_s": quantile(first_live, 0.95),
        "measure": list(measures.values()),
        "control_change_p50_s": quantile(control, 0.5), "control_change_p95_s": quantile(control, 0.95),
        "control_changes": len(control), "lost_sessions": lost,
        "errors": [f"session {s.index}: {s.error}" for s in sessions if s.error][:10],
        "wall_s": round(time.perf_counter() - t0, 1),
    }


@dataclass(frozen=True)
class TrainPage:
    """A page whose scenario is: open it, press Train together, follow the live view to the
    finished view, then change one control and see the view answer."""
    page: str  # its URL path
    link: str  # its parameters, with {steps} and {seed}
    train: str  # the Train button's key
    finished: str  # text of the finished view ({steps} filled in)
    change: tuple  # (widget key, protobuf field, value) changed afterwards
    answer: str  # text the changed view shows


TRAIN_PAGES = {
    "experts": TrainPage("experts", "moe_steps={steps}&moe_seed={seed}", "moe_train", "Trained {steps} of {steps} steps",
                         ("moe_input", "string_value", "abcdef"), "Answer:"),
    "incontext": TrainPage("incontext", "icl_steps={steps}&icl_seed={seed}", "icl_train",
                           "Trained {steps} of {steps} steps", ("icl_ablate", "string_value", "L0 H1"),
                           "With L0 H1 ablated"),
    "memory": TrainPage("memory", "mem_tab=Speed+and+memory&mem_max_n=256&mem_seed={seed}", "mem_measure",
                        "Measured 18 points on this server", ("mem_attention", "string_value", "softmax"),
                        "Full softmax attention lets every token"),  # --steps unused: Measure, not Train
    "multimodal": TrainPage("multimodal", "mm_steps={steps}&mm_seed={seed}&mm_until_learned=false", "mm_train",
                            "What came out", ("mm_head", "string_value", "2"), "head 2"),
    "training": TrainPage("training", "tr_layers=1&tr_heads=2&tr_width=32&tr_context=16&tr_batch=16&tr_steps={steps}"
                          "&tr_seed={seed}", "tr_train", "Trained {steps} of {steps} steps",
                          ("tr_prompt", "string_value", "Harriet said"), "Harriet said"),  # --steps: 100, 250, 500, ...
    "safeguards": TrainPage("safeguards", "sg_tab=Privacy&sg_dp_steps={steps}&sg_dp_batch=8&sg_dp_seed={seed}",
                            "sg_dp_go", "Finished after {steps} of {steps} steps each.",
                            ("sg_dp_text", "string_value", "write to ann@example.org"), "[REDACTED]"),
    # DP-SGD against plain training on the Privacy tab, then the output filter; --steps: 10, 25, 50, 100, ...
}


async def train_page_scenario(args, url: str) -> dict:
    """N sessions open a training page (``TRAIN_PAGES``), press Train at once (``--steps``;
    ``--distinct-seeds`` gives each its own run), follow the live view to the end, then change one
    control and read the answer."""
    spec = TRAIN_PAGES[args.scenario]
    sessions = [Session(url, i, args.timeout) for i in range(args.sessions)]
    start = asyncio.Event()
    steps = args.steps

    async def one(s: Session) -> dict:
        try:
            s.ws = await connect(s)
            seed = s.index if args.distinct_seeds else 0
            await s.open(spec.link.format(steps=steps, seed=seed), page=spec.page)
            await start.wait()
            t0 = time.perf_counter()
            await s.rerun(trigger=spec.train)
            while time.perf_counter() - t0 < args.train_limit:
                if any(spec.finished.format(steps=steps) in t for t in s.texts):
                    finished = time.perf_counter() - t0
                    s.set(*spec.change)
                    await s.rerun()
                    return {"finished_s": finished, "answered": any(spec.answer in t for t in s.texts)}
                await asyncio.sleep(s.fragment[1] if s.fragment else 0.25)
                await s.rerun()  # a full rerun of this page (a fragment's own rerun of the app would need
                if s.error:      # the page's script hash, which this client does not keep)
                    break
        except Exception as e:  # a session that fails is counted, not fatal
            s.error = f"{type(e).__name__}: {e}"
        finally:
            if s.ws is not None:
                await s.ws.close()
        return {"finished_s": None, "answered": False}

    async def go():
        await asyncio.sleep(2.0)  # everyone connected: press Train together
        start.set()

    t0 = time.perf_counter()
    results = (await asyncio.gather(go(), *(one(s) for s in sessions)))[1:]
    done = sorted(r["finished_s"] for r in results if r["finished_s"] is not None)
    return {"scenario": args.scenario, "sessions": args.sessions, "distinct_seeds": args.distinct_seeds, "steps": steps,
            "finished": len(done), "answered": sum(r["answered"] for r in results),
            "finish_p50_s": quantile(done, 0.5), "finish_p95_s": quantile(done, 0.95),
            "wall_s": round(time.perf_counter() - t0, 1), "errors": [s.error for s in sessions if s.error][:5]}


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


async def with_memory_watch(coro):
    """Run ``coro`` while sampling the machine's available memory (the measuring children count too)."""
    lowest = [available_bytes()]

    async def watch():
        while True:
            lowest[0] = min(lowest[0], available_bytes())
            await asyncio.sleep(0.2)

    task = asyncio.create_task(watch())
    try:
        return await coro, lowest[0]
    finally:
        task.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=["controls", "classroom", *TRAIN_PAGES], default="controls")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--changes", type=int, default=6, help="control changes per session (controls)")
    ap.add_argument("--measurers", type=int, default=5, help="classroom: sessions that then start Measure")
    ap.add_argument("--changers", type=int, default=5, help="classroom: sessions that keep changing controls")
    ap.add_argument("--distinct-seeds", action="store_true", help="classroom: every session its own run")
    ap.add_argument("--measure-seconds", type=float, default=40.0, help="classroom: how long a Measure is watched")
    ap.add_argument("--train-limit", type=float, default=300.0, help="classroom: give up on a run after this")
    ap.add_argument("--think", type=float, default=1.0, help="classroom: seconds a changer waits between changes")
    ap.add_argument("--steps", "--experts-steps", type=int, default=100,
                    help="experts, multimodal, incontext, training: training steps of each model (incontext: 250, 500, "
                         "1000, ...; training: 100, 250, 500, ...)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one rerun may take")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    free_before = available_bytes()
    with app_server() as base:
        url = base.replace("http://", "ws://") + "/_stcore/stream"
        scenario = {"controls": controls_scenario, "classroom": classroom_scenario,
                    **{name: train_page_scenario for name in TRAIN_PAGES}}[args.scenario]
        result, lowest = asyncio.run(with_memory_watch(scenario(args, url)))
        result["server_peak_bytes"] = peak_rss(base.pid)
    result["budget_bytes"] = default_budget()
    result["machine_lowest_available_bytes"] = lowest
    result["machine_available_before_bytes"] = free_before
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
