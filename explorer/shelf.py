"""Finished runs shipped with the app: the lessons' seeded trainings, computed once when the app is
built and read from disk by the server, so the first student to open a lesson sees its finished
picture in seconds instead of waiting minutes for a run everyone else would share anyway.

A shipped run is exactly what the server would compute: the same job (its key is the full run
description: settings, seed, steps), the same code, the same torch, one thread
(``scripts/shelf.py`` makes them by opening every lesson through the app and keeping each finished
training job's result). The scheduler asks the shelf before it queues a job whose class says it is
``shippable`` (seeded training: the same on any machine with this torch); a measurement of this
machine's speed or memory is never shipped. A run made by another torch, or under a key the code no
longer gives, is simply not found, and the server trains it as before.

Files are never unpickled: a result is written as a tree of plain containers and tensors
(``torch.save``) and read with ``torch.load(weights_only=True)``. Objects in the tree are rebuilt
only as dataclasses and ``nn.Module`` s defined in ``explorer`` (a module from its ``config`` and
its weights); anything else is refused by name when the shelf is made.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import hashlib
import importlib
import json
import math
import os
from pathlib import Path
from typing import Any, Hashable, Optional

import numpy as np
import torch
from torch import nn

DIRECTORY = Path(__file__).resolve().parent / "data" / "shelf"
INDEX = "index.json"


class NotShippable(TypeError):
    """A key or a result the shelf cannot hold (named in the message)."""


# ---------------------------------------------------------------------------------------------- keys
def key_text(key: Hashable) -> str:
    """A job key as text that is the same in every process (no addresses, no hash order)."""
    if key is None or isinstance(key, (bool, int, str)):
        return repr(key)
    if isinstance(key, float):
        return repr(key) if math.isfinite(key) else f"float('{key}')"
    if isinstance(key, enum.Enum):
        return f"{type(key).__qualname__}.{key.name}"
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        inner = ", ".join(f"{f.name}={key_text(getattr(key, f.name))}" for f in dataclasses.fields(key))
        return f"{type(key).__module__}.{type(key).__qualname__}({inner})"
    if isinstance(key, tuple):
        return "(" + ", ".join(key_text(k) for k in key) + ",)"
    if isinstance(key, list):
        return "[" + ", ".join(key_text(k) for k in key) + "]"
    if isinstance(key, (frozenset, set)):
        return "{" + ", ".join(sorted(key_text(k) for k in key)) + "}"
    if isinstance(key, dict):
        return "{" + ", ".join(sorted(f"{key_text(k)}: {key_text(v)}" for k, v in key.items())) + "}"
    raise NotShippable(f"a job key holds a {type(key).__qualname__}, which has no stable text")


def text_digest(text: str) -> str:
    """The name of a key's entry and file on the shelf (from ``key_text``)."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------------------------- results as trees
def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _explorer_class(path: str) -> type:
    module, _, name = path.partition(":")
    if not (module == "explorer" or module.startswith("explorer.")):
        raise NotShippable(f"{path} is not a class of the explorer library")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise NotShippable(f"{path} is not a class")
    return obj


def encode(obj: Any) -> Any:
    """``obj`` as plain containers and tensors (what ``torch.load(weights_only=True)`` reads back)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, np.ndarray):
        return {"__np__": torch.from_numpy(np.ascontiguousarray(obj)).clone(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return {"__npscalar__": obj.item(), "dtype": str(obj.dtype)}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return {"__tuple__": [encode(v) for v in obj]}
    if isinstance(obj, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in obj.items()]}
    if isinstance(obj, enum.Enum) and type(obj).__module__.startswith("explorer"):
        return {"__enum__": _path(type(obj)), "name": obj.name}
    if isinstance(obj, nn.Module):
        config = getattr(obj, "config", None)
        if config is None or not dataclasses.is_dataclass(config):
            raise NotShippable(f"a {type(obj).__qualname__} has no config dataclass to rebuild it from")
        _explorer_class(_path(type(obj)))
        params = list(obj.parameters())
        return {"__module__": _path(type(obj)), "config": encode(config), "state": encode(dict(obj.state_dict())),
                "training": obj.training, "requires_grad": bool(params and params[0].requires_grad)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _explorer_class(_path(type(obj)))
        return {"__dataclass__": _path(type(obj)),
                "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    raise NotShippable(f"a result holds a {type(obj).__module__}.{type(obj).__qualname__}, which the shelf "
                       "cannot write without pickling it")


def decode(tree: Any) -> Any:
    """The object ``encode`` was given (new objects; modules rebuilt from their config and weights)."""
    if isinstance(tree, list):
        return [decode(v) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tuple__" in tree:
        return tuple(decode(v) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {decode(k): decode(v) for k, v in tree["__dict__"]}
    if "__np__" in tree:
        return tree["__np__"].numpy().astype(tree["dtype"], copy=False)
    if "__npscalar__" in tree:
        return np.dtype(tree["dtype"]).type(tree["__npscalar__"])
    if "__enum__" in tree:
        return _explorer_class(tree["__enum__"])[tree["name"]]
    if "__module__" in tree:
        cls = _explorer_class(tree["__module__"])
        if not issubclass(cls, nn.Module):
            raise NotShippable(f"{tree['__module__']} is not a module")
        module = cls(decode(tree["config"]))
        module.load_state_dict(decode(tree["state"]))
        module.train(tree["training"])
        for p in module.parameters():
            p.requires_grad_(tree["requires_grad"])
        return module
    if "__dataclass__" in tree:
        cls = _explorer_class(tree["__dataclass__"])
        if not dataclasses.is_dataclass(cls):
            raise NotShippable(f"{tree['__dataclass__']} is not a dataclass")
        obj = object.__new__(cls)  # the fields as they were: no __post_init__ runs again
        for name, value in tree["fields"].items():
            object.__setattr__(obj, name, decode(value))
        return obj
    raise NotShippable(f"an unknown node in a shelf file: {sorted(tree)[:4]}")


TIMING = {"seconds", "train_seconds", "checkpoints"}  # wall times, and checkpoints taken where time slices ended


def untimed(tree: Any) -> Any:
    """An encoded result without what depends on the machine's timing (for comparing two runs)."""
    if isinstance(tree, list):
        return [untimed(v) for v in tree]
    if isinstance(tree, dict):
        if "fields" in tree:
            return {**tree, "fields": {k: untimed(v) for k, v in tree["fields"].items() if k not in TIMING}}
        if "__dict__" in tree:
            return {"__dict__": [[k, untimed(v)] for k, v in tree["__dict__"] if k not in TIMING]}
        return {k: untimed(v) for k, v in tree.items()}
    return tree


# What another CPU's arithmetic leaves of one run: the same seeded code sums in another order where
# the vectorised kernels differ (the reverse lesson's 100 steps, shelved on one Xeon and trained again
# on another: losses 3e-7 apart relatively, weights 5e-4, the same accuracies and learned step). A
# change to the code moves the first losses by far more.
ROUNDING = {"rtol": 1e-3, "atol": 5e-3}


def same_tree(a: Any, b: Any, rtol: float = 0.0, atol: float = 0.0) -> bool:
    """Two encoded results are equal: the same structure, the same numbers, tensors bit for bit;
    with ``rtol``/``atol`` (e.g. ``**ROUNDING``), floating-point numbers and tensors as close as that."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype):
            return False
        if (rtol or atol) and a.is_floating_point():
            return torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_tree(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_tree(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol) if (rtol or atol) else a == b
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------------- the shelf
class Shelf:
    """Finished results on disk, by job key. ``get`` returns a new copy of the result each time."""

    def __init__(self, directory: Path | str = DIRECTORY):
        self.directory = Path(directory)
        self._index: Optional[dict] = None

    @classmethod
    def from_env(cls) -> Optional["Shelf"]:
        """The app's shelf, unless ``TE_SHELF=off`` (train everything, as ``scripts/shelf.py`` does)."""
        if os.environ.get("TE_SHELF", "").lower() in ("off", "0", "no", "false"):
            return None
        return cls()

    def index(self) -> dict:
        """digest -> {"key", "file", "lessons" (that open it), "torch", "bytes", "title"}."""
        if self._index is None:
            try:
                self._index = json.loads((self.directory / INDEX).read_text())
            except (OSError, ValueError):
                self._index = {}
        return self._index

    def entry(self, key: Hashable) -> Optional[dict]:
        try:
            text = key_text(key)
        except NotShippable:
            return None
        entry = self.index().get(text_digest(text))
        if entry is None or entry["key"] != text or entry["torch"] != torch.__version__:
            return None
        return entry

    def get(self, key: Hashable) -> Any:
        """The shipped result of the job ``key`` describes, or None."""
        entry = self.entry(key)
        if entry is None:
            return None
        try:
            return decode(torch.load(self.directory / entry["file"], weights_only=True))
        except Exception:  # a missing or damaged file (any error of reading or rebuilding it): train it instead
            return None

    def lessons(self) -> set[str]:
        """The lessons whose runs are on the shelf (for this torch)."""
        return {name for e in self.index().values() if e["torch"] == torch.__version__ for name in e["lessons"]}

    def drop_lesson(self, lesson: str) -> None:
        """Take a lesson's runs off the shelf (before making them again)."""
        with self._editing() as index:
            for digest, entry in list(index.items()):
                if lesson in entry["lessons"]:
                    entry["lessons"] = [name for name in entry["lessons"] if name != lesson]
                    if not entry["lessons"]:  # no other lesson opens it
                        (self.directory / entry["file"]).unlink(missing_ok=True)
                        del index[digest]

    @contextlib.contextmanager
    def _editing(self):
        """The index as on disk now, to change in place and written back: several makers at once
        (``scripts/shelf.py`` in two processes) each change it under a file lock."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._index = None
            index = dict(self.index())
            yield index
            (self.directory / INDEX).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
            self._index = index

    def put(self, key: Hashable, result: Any, lesson: str, title: str) -> dict:
        """Write one finished result (``scripts/shelf.py``); its index entry."""
        text = key_text(key)
        digest = text_digest(text)
        tree = encode(result)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{digest}.pt"
        torch.save(tree, path)
        with self._editing() as index:
            lessons = sorted(set(index.get(digest, {}).get("lessons", [])) | {lesson})
            entry = index[digest] = {"key": text, "file": path.name, "lessons": lessons, "title": title,
                                     "torch": torch.__version__, "bytes": path.stat().st_size}
        return entry
