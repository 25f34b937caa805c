"""A tiny name -> object registry that fails loudly with the list of valid names.

Attention kinds, positional encodings, tasks, lessons and pages are each chosen once, by name,
through one of these (the x-transformers / TransformerLens habit), instead of string ``if``
branches spread over ``__init__`` and ``forward``. An entry knows everything about itself; code
elsewhere asks the entry, never its name.

``load_modules(package)`` imports every module of a package, so that a new kind is one new file:
its module registers it on import.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, Generic, Iterator, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str, order: Optional[Callable[[T], float]] = None):
        self.what = what  # e.g. "attention kind", used in error messages
        self._items: Dict[str, T] = {}
        self._order = order  # sort key for names(); registration order when None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.what} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(f"unknown {self.what} {name!r}; valid: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._items
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        names = list(self._items)
        if self._order is not None:
            names.sort(key=lambda n: self._order(self._items[n]))
        return names

    def values(self) -> list[T]:
        return [self._items[n] for n in self.names()]

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


def load_modules(package_name: str, package_path) -> None:
    """Import every module of a package (not starting with ``_``): each registers its entries."""
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
