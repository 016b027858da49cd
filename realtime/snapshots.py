"""What a socket reads from the database as it subscribes, shared by the sockets that
subscribe at once.

Every read of a consumer goes through the one thread that serves their database work,
one after another: hundreds of sockets subscribing together (a reconnect storm after a
deploy) each read the market list and a depth snapshot there, and opened at ~70 a
second.

- **Depth snapshots** (`depth_shared`): a socket joins the book's group, then reads a
  snapshot; a delta committed after the read reaches it through the group. The sockets
  that ask while a read of that book is in flight share the *next* read, which begins
  once that one has ended: every socket's snapshot is read after it asked, so after it
  joined the group, and none misses a delta; a storm costs a few reads.
- **Market symbols** (`market_known`): a market is never deleted (a delisted one keeps
  its symbol), so the symbols seen are kept and the list read again only for one not
  seen yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async

from realtime.per_loop import PerLoop

SNAPSHOT_LEVELS = 500


@database_sync_to_async
def _depth_read(symbol: str, mode: str) -> dict[str, Any]:
    from trading.selectors import depth_get

    return depth_get(symbol=symbol, mode=mode, levels=SNAPSHOT_LEVELS)


@database_sync_to_async
def _market_symbols() -> set[str]:
    from trading.models import Market

    return set(Market.objects.values_list("symbol", flat=True))


_symbols: set[str] = set()


async def market_known(symbol: str) -> bool:
    if symbol not in _symbols:
        _symbols.update(await _market_symbols())
    return symbol in _symbols


class SharedReads:
    """One event loop's reads in flight (of `read(*key)`), and the next read of each key
    that its askers wait for."""

    def __init__(self, read: Callable[..., Awaitable[Any]]) -> None:
        self.read = read
        # key -> the future of its next read, not begun yet.
        self.waiting: dict[tuple, asyncio.Future] = {}
        self.reading: set[tuple] = set()
        self.tasks: set[asyncio.Task] = set()

    async def get(self, key: tuple) -> Any:
        """What a read of `key` begun after this call returns (or raises)."""
        future = self.waiting.get(key)
        if future is None:
            future = self.waiting[key] = asyncio.get_running_loop().create_future()
            # Retrieved here too: a read whose askers have all gone logs no warning.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            if key not in self.reading:
                self._begin(key)
        # Shielded: a socket that closes while it waits does not cancel the others' read.
        return await asyncio.shield(future)

    def _begin(self, key: tuple) -> None:
        future = self.waiting.pop(key)
        self.reading.add(key)
        task = asyncio.ensure_future(self._read(key, future))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read(self, key: tuple, future: asyncio.Future) -> None:
        try:
            future.set_result(await self.read(*key))
        except BaseException as e:
            future.set_exception(e)
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            self.reading.discard(key)
            if key in self.waiting:
                self._begin(key)


_reads: PerLoop[SharedReads] = PerLoop(lambda: SharedReads(_depth_read))


async def depth_shared(symbol: str, mode: str) -> dict[str, Any]:
    """A depth snapshot of the book read after this call began (`depth_get`)."""
    return await _reads.get().get((symbol, mode))
