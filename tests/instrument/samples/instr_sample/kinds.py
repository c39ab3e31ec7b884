"""Every kind of callable a module can define."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

dumps = json.dumps  # imported from elsewhere: not ours to wrap


class Declined(Exception):
    pass


def add(a: int, b: int = 2, *rest: int, scale: int = 1) -> int:
    """Add numbers."""
    return (a + b + sum(rest)) * scale


def fail(message: str) -> None:
    raise Declined(message)


def _private() -> str:
    return "private"


async def fetch(x: int) -> int:
    """Fetch x."""
    await asyncio.sleep(0)
    return x * 10


def count(n: int) -> Iterator[int]:
    """Count to n."""
    for i in range(n):
        received = yield i
        if received == "stop":
            return


async def acount(n: int) -> AsyncIterator[int]:
    """Count to n, asynchronously."""
    for i in range(n):
        await asyncio.sleep(0)
        yield i


class Cart:
    """A cart."""

    kind = "cart"

    def __init__(self, items: list[int]) -> None:
        self._items = list(items)

    def total(self) -> int:
        """The total."""
        return sum(self._items)

    @classmethod
    def empty(cls) -> Cart:
        """An empty cart."""
        return cls([])

    @staticmethod
    def tax(amount: int) -> float:
        """Tax on amount."""
        return amount * 0.2

    @property
    def size(self) -> int:
        """How many items."""
        return len(self._items)

    @size.setter
    def size(self, value: int) -> None:
        self._items = self._items[:value]

    def __repr__(self) -> str:
        return f"Cart({self._items})"

    class Line:
        """A nested class."""

        def price(self) -> int:
            return 5
