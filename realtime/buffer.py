"""A bounded buffer of each book's recent depth deltas, for `sinceSeq` resume.

With Redis configured the buffer lives there (a sorted set per book, scored by seq),
shared by every web process; otherwise in this process's memory. A delta is stored
before it is published, so a subscriber that joins the group and then reads the buffer
misses nothing: what it did not receive through the group is already in the buffer.
"""

from __future__ import annotations

import os
import threading
from collections import deque

from django.conf import settings

KEEP = 2000


def _prefix() -> str:
    # Per deployment (and test run), like the channel layer's groups.
    return f"dex:{os.environ.get('CHANNEL_LAYER_PREFIX', 'asgi')}:deltas:"


class MemoryBuffer:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._books: dict[str, deque[tuple[int, str]]] = {}
        self._lock = threading.Lock()

    async def add(self, book: str, seq: int, text: str) -> None:
        with self._lock:
            q = self._books.setdefault(book, deque(maxlen=self.keep))
            q.append((seq, text))

    async def since(self, book: str, after: int, upto: int) -> list[str] | None:
        """The deltas with after < seq <= upto in order, or None if any is gone."""
        with self._lock:
            q = list(self._books.get(book, ()))
        wanted = {seq: text for seq, text in q if after < seq <= upto}
        if len(wanted) != upto - after:
            return None
        return [wanted[s] for s in range(after + 1, upto + 1)]

    async def clear(self) -> None:
        with self._lock:
            self._books.clear()


class RedisBuffer:
    def __init__(self, url: str, keep: int = KEEP) -> None:
        self.url = url
        self.keep = keep
        self._clients: dict[int, object] = {}
        self._blocking = None  # a blocking client, made on first use

    def _client(self):
        import asyncio

        from dexsite.redis_async import redis_async

        # One client per event loop: asyncio connections cannot cross loops.
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.get(loop_id)
        if client is None:
            client = self._clients[loop_id] = redis_async(self.url)
        return client

    async def add(self, book: str, seq: int, text: str) -> None:
        key = _prefix() + book
        async with self._client().pipeline(transaction=False) as pipe:
            pipe.zadd(key, {text: seq})
            pipe.zremrangebyrank(key, 0, -self.keep - 1)
            await pipe.execute()

    def add_many_blocking(self, deltas: list[tuple[str, int, str]]) -> None:
        """`add` of each (book, seq, text) in one blocking round trip, from any thread
        (the publishing thread of a process without a server)."""
        if not deltas:
            return
        if self._blocking is None:
            import redis

            self._blocking = redis.Redis.from_url(self.url)
        pipe = self._blocking.pipeline(transaction=False)
        for book, seq, text in deltas:
            pipe.zadd(_prefix() + book, {text: seq})
        for book in {book for book, _, _ in deltas}:
            pipe.zremrangebyrank(_prefix() + book, 0, -self.keep - 1)
        pipe.execute()

    async def since(self, book: str, after: int, upto: int) -> list[str] | None:
        if upto <= after:
            return []
        rows = await self._client().zrangebyscore(
            _prefix() + book, after + 1, upto, withscores=True
        )
        if len(rows) != upto - after:
            return None
        return [text.decode() for text, _ in rows]

    async def clear(self) -> None:
        """Drop every buffered delta (tests) and this loop's connection."""
        import asyncio

        client = self._client()
        keys = [k async for k in client.scan_iter(_prefix() + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        self._clients.pop(id(asyncio.get_running_loop()), None)


_buffer: MemoryBuffer | RedisBuffer | None = None


def delta_buffer() -> MemoryBuffer | RedisBuffer:
    global _buffer
    if _buffer is None:
        url = getattr(settings, "REDIS_URL", None)
        _buffer = RedisBuffer(url) if url else MemoryBuffer()
    return _buffer
