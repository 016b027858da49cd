"""One object per running event loop: asyncio connections, futures and tasks cannot cross
loops (a test run starts a loop per test; a server has one)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self.make = make
        # id(loop) -> (the loop, its object): the loop kept to tell a new loop that took a
        # closed one's id from it.
        self._of: dict[int, tuple[asyncio.AbstractEventLoop, T]] = {}

    def get(self) -> T:
        """The running loop's object, made on first use; those of closed loops dropped."""
        loop = asyncio.get_running_loop()
        found = self._of.get(id(loop))
        if found is None or found[0] is not loop:
            for key in [k for k, (lp, _) in self._of.items() if lp.is_closed()]:
                del self._of[key]
            found = self._of[id(loop)] = (loop, self.make())
        return found[1]

    def forget(self) -> None:
        """Drop the running loop's object: the next `get` makes a new one."""
        self._of.pop(id(asyncio.get_running_loop()), None)
