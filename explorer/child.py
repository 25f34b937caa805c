"""Run functions in a child process with its own torch thread count.

The Complexity page measures in a child process: the server's own thread setting (one torch
thread per computation, set once by app.py) is never changed by one session's sweep, a point that
runs out of memory ends the child and not the server, and Stop ends the child at once.

``ChildWorker`` keeps one child alive for many calls; a function is named as
``"module:function"``. Arguments and results travel pickled between our own two processes over a
private pipe (nothing a user uploaded is ever unpickled).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]


class ChildFailed(RuntimeError):
    """The call raised in the child, or the child ended without an answer."""


class Cancelled(RuntimeError):
    """The caller asked to stop; the child was ended."""


class ChildWorker:
    """One child process (``threads`` torch threads) that runs calls one after another."""

    def __init__(self, threads: int = 1):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._log = tempfile.TemporaryFile()  # its stderr (a file: a full pipe would block it)
        self.proc = subprocess.Popen([sys.executable, "-m", "explorer.child", str(to_child_r), str(from_child_w),
                                      str(threads)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._log, pass_fds=(to_child_r, from_child_w))
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)

    def call(self, target: str, args: tuple = (), progress: Optional[Callable[[float, str], None]] = None,
             should_stop: Optional[Callable[[], bool]] = None, poll_s: float = 0.1):
        """``target(*args)`` in the child (with ``progress=`` when a callback is given)."""
        try:
            self._send.send((target, args, progress is not None))
        except OSError:
            raise ChildFailed(self._ended()) from None
        while True:
            if should_stop is not None and should_stop():
                self.close()
                raise Cancelled("stopped")
            if self._recv.poll(poll_s):
                try:
                    kind, payload = self._recv.recv()
                except EOFError:
                    raise ChildFailed(self._ended()) from None
                if kind == "progress" and progress is not None:
                    progress(*payload)
                elif kind == "result":
                    return payload
                elif kind == "error":
                    raise ChildFailed(payload)
            elif self.proc.poll() is not None and not self._recv.poll(0):
                raise ChildFailed(self._ended())

    def _ended(self) -> str:
        self.proc.wait(5)
        code = self.proc.returncode
        why = " (killed: often out of memory)" if code == -9 else ""
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode(errors="replace").splitlines() if not ln.startswith("USDT")]
        return f"the child process ended without an answer, exit code {code}{why}" + (
            ": " + " / ".join(lines[-3:]) if lines else "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        self._send.close()
        self._recv.close()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(in_fd: int, out_fd: int, threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    recv, send = Connection(in_fd, writable=False), Connection(out_fd, readable=False)
    while True:
        try:
            target, args, with_progress = recv.recv()
        except EOFError:
            return
        try:
            module, name = target.split(":")
            fn = getattr(importlib.import_module(module), name)
            kwargs = {"progress": lambda f, what: send.send(("progress", (f, what)))} if with_progress else {}
            send.send(("result", fn(*args, **kwargs)))
        except Exception as e:  # reported to the parent, which raises it there
            send.send(("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
