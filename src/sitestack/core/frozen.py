"""Frozen result and record classes without dataclasses.

`import dataclasses` costs 10-12 ms of start-up here (it imports inspect, with ast, dis and
tokenize), and each frozen class it makes ~1 ms more: more than `sitestack venv` may spend
beyond `uv venv` (bench/venv.py). The few classes on that path derive from `Frozen` instead.
"""

from __future__ import annotations


class Frozen:
    """Equality, repr and immutability of a frozen dataclass; the fields are `__slots__`, set
    once by `_init(*values)` in the subclass's `__init__`."""

    __slots__: tuple[str, ...] = ()

    def _init(self, *values: object) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # as a dataclass with a dict field: unhashable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"
