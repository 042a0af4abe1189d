"""A name -> function table whose names fail loudly (unknown or duplicate names list the choices)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """`@REG.register("name", **facts)` adds a function with facts about it; `REG.get("name")` returns the function,
    `REG.facts("name")` the facts (a dict, as registered)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, F] = {}
        self._facts: dict[str, dict] = {}

    def register(self, name: str, **facts) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._fns:
                raise ValueError(f"{self.kind} {name!r} is already registered; registered: {', '.join(sorted(self))}")
            self._fns[name] = fn
            self._facts[name] = dict(facts)
            return fn

        return deco

    def facts(self, name: str) -> dict:
        self.get(name)  # an unknown name raises, listing the choices
        return self._facts[name]

    def get(self, name: str) -> F:
        if name not in self._fns:
            raise ValueError(f"unknown {self.kind} {name!r}; choices: {', '.join(sorted(self))}")
        return self._fns[name]

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self._fns)

    def __len__(self) -> int:
        return len(self._fns)

    def __getitem__(self, name: str) -> F:
        return self.get(name)
