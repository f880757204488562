"""Small name -> object registries (noise models, samplers, estimators, models).

A registry maps names to callables. ``get`` also accepts a callable, which is returned as
it is, so users can plug in their own component without registering it. An unknown name
raises ``ValueError`` listing the known ones.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named components of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator."""

        def add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name_or_obj: str | T) -> T:
        """The component called ``name_or_obj``, or ``name_or_obj`` itself if it is callable."""
        if isinstance(name_or_obj, str):
            try:
                return self._items[name_or_obj]
            except KeyError:
                raise ValueError(
                    f"unknown {self.kind} {name_or_obj!r}; known: {', '.join(sorted(self._items))}"
                ) from None
        if callable(name_or_obj):
            return name_or_obj
        raise ValueError(
            f"{self.kind} must be a name ({', '.join(sorted(self._items))}) or a callable, got {name_or_obj!r}"
        )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def name_of(obj: str | Callable) -> str:
    """A printable name for a registry entry or a user callable."""
    if isinstance(obj, str):
        return obj
    return getattr(obj, "name", None) or getattr(obj, "__name__", type(obj).__name__)
