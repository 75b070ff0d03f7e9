"""One generic name -> spec registry with validated names and "did you mean" errors."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import EvalkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Specs by canonical name, plus aliases (display names people know), case-insensitive."""

    def __init__(self, kind: str, aliases_of: Callable[[T], tuple[str, ...]] = lambda spec: ()):
        self.kind = kind
        self._specs: dict[str, T] = {}
        self._lookup: dict[str, str] = {}
        self._aliases_of = aliases_of

    def add(self, name: str, spec: T) -> T:
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{self.kind} name {name!r} must be alphanumeric (it becomes part of file names)")
        self._specs[name] = spec
        for alias in (name, *self._aliases_of(spec)):
            self._lookup[_fold(alias)] = name
        return spec

    def remove(self, name: str) -> None:
        """Unregister `name` and its aliases (plugins and tests that register temporarily)."""
        spec = self._specs.pop(name)
        for alias in (name, *self._aliases_of(spec)):
            self._lookup.pop(_fold(alias), None)

    def get(self, name: str) -> T:
        canonical = self._lookup.get(_fold(name))
        if canonical is None:
            close = difflib.get_close_matches(_fold(name), list(self._lookup), n=1)
            hint = f"did you mean {self._lookup[close[0]]!r}? " if close else ""
            raise EvalkitError(
                f"unknown {self.kind} {name!r}: {hint}`evalkit {self.kind}s` lists them ({', '.join(self._specs)})"
            )
        return self._specs[canonical]

    def canonical(self, name: str) -> str:
        self.get(name)
        return self._lookup[_fold(name)]

    def __iter__(self) -> Iterator[T]:
        return iter(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)


def _fold(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())
