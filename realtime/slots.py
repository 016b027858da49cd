"""How many WebSockets one client address and one account hold open at once, across
every web process. Past either limit (WS_MAX_SOCKETS_PER_ADDRESS, _PER_ACCOUNT) a new
socket is refused: the consumer closes it with 4008, `TOO_MANY_SOCKETS`.

With Redis configured the count is shared: a sorted set per address and per account,
one member per socket (its channel name), scored by the time its lease ends. One script
drops the lapsed members, checks every limit and counts the socket, so two handshakes
racing for the last slot cannot both take it. Each process renews its own sockets'
leases every LEASE_SECONDS / 3, all in one pipeline; the slots of a process that died
without closing its sockets come free as their leases lapse. Without Redis (the
embedded run: one process) the count is this process's.

Each event loop has its own `SocketSlots` (asyncio Redis connections cannot cross
loops).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from django.conf import settings

from dexsite.redis_async import redis_async
from realtime.auth import header
from realtime.per_loop import PerLoop

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0

# KEYS: the sets to count the socket in. ARGV: now, the lease's end, the member, the
# sets' time to live, then each set's limit.
_CLAIM = """
local now, lease_end, member, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
for i, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then
        return i
    end
end
for _, key in ipairs(KEYS) do
    redis.call('ZADD', key, lease_end, member)
    redis.call('EXPIRE', key, ttl)
end
return 0
"""


def client_address(scope) -> str:
    """The client's address as the throttles take it: the peer of the socket or, behind
    NUM_PROXIES proxies, the entry of X-Forwarded-For the nearest of them wrote."""
    peer = (scope.get("client") or [None])[0] or "unknown"
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = header(scope, b"x-forwarded-for") if proxies else None
    if not forwarded:
        return peer
    addresses = forwarded.split(",")
    return addresses[-min(proxies, len(addresses))].strip()[:64] or peer


def _key(kind: str, value: object) -> str:
    # Per deployment (and test run), like the channel layer's groups. `{sockets}` is a
    # hash tag: on a Redis cluster every set lives in one slot, as one script needs.
    prefix = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi")
    return f"dex:{prefix}:{{sockets}}:{kind}:{value}"


def limits_for(scope, user) -> list[tuple[str, int, str]]:
    """(set, limit, what it counts) of each limit a socket of `user` from the
    address of `scope` falls under; a limit of 0 is none."""
    out = []
    per_address = settings.WS_MAX_SOCKETS_PER_ADDRESS
    if per_address > 0:
        out.append((_key("address", client_address(scope)), per_address, "client address"))
    per_account = settings.WS_MAX_SOCKETS_PER_ACCOUNT
    if per_account > 0 and user.is_authenticated:
        out.append((_key("account", user.pk), per_account, "account"))
    return out


class SocketSlots:
    """The slots of this event loop's sockets."""

    def __init__(self, url: str | None) -> None:
        self.redis = None
        if url:
            self.redis = redis_async(url)
            self.claim_script = self.redis.register_script(_CLAIM)
        self.held: dict[str, list[str]] = {}  # member -> its sets
        self.counts: dict[str, set[str]] = {}  # without Redis: set -> members
        self.renewer: asyncio.Task | None = None
        self.releasing: set[asyncio.Task] = set()

    async def claim(self, member: str, limits: list[tuple[str, int, str]]) -> tuple | None:
        """Count `member` in each limit's set; or, when one is full, count it nowhere
        and return that limit."""
        if not limits:
            return None
        keys = [key for key, _, _ in limits]
        if self.redis is None:
            full = next((i + 1 for i, lim in enumerate(limits) if self._count(lim[0]) >= lim[1]), 0)
            if not full:
                for key in keys:
                    self.counts.setdefault(key, set()).add(member)
        else:
            now = time.time()
            args = [now, now + LEASE_SECONDS, member, int(LEASE_SECONDS)]
            full = await self.claim_script(keys=keys, args=[*args, *(n for _, n, _ in limits)])
        if full:
            return limits[full - 1]
        self.held[member] = keys
        if self.redis is not None and self.renewer is None:
            self.renewer = asyncio.ensure_future(self._renew())
        return None

    def _count(self, key: str) -> int:
        return len(self.counts.get(key, ()))

    async def release(self, member: str) -> None:
        """Free the slots of a socket that has closed."""
        keys = self.held.pop(member, None)
        if not keys:
            return
        if not self.held and self.renewer is not None:
            self.renewer.cancel()
            self.renewer = None
        if self.redis is None:
            for key in keys:
                members = self.counts.get(key)
                if members is not None:
                    members.discard(member)
                    if not members:
                        del self.counts[key]
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, member)
                await pipe.execute()
        except Exception:
            # Its lease is no longer renewed: the slot comes free when it lapses.
            log.exception("socket slots of %s not released", member)

    def forget(self, member: str) -> None:
        """Free the slots of a socket that ended without `release`, in the background."""
        if member in self.held:
            task = asyncio.ensure_future(self.release(member))
            self.releasing.add(task)
            task.add_done_callback(self.releasing.discard)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            lease_end = time.time() + LEASE_SECONDS
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for member, keys in list(self.held.items()):
                        for key in keys:
                            pipe.zadd(key, {member: lease_end})
                            pipe.expire(key, int(LEASE_SECONDS))
                    await pipe.execute()
            except Exception:
                log.exception("socket leases not renewed")

    async def clear(self) -> None:
        """Forget every slot (tests) and close this loop's connection."""
        self.held.clear()
        self.counts.clear()
        if self.renewer is not None:
            self.renewer.cancel()
            self.renewer = None
        if self.redis is not None:
            keys = [k async for k in self.redis.scan_iter(_key("*", "*"))]
            if keys:
                await self.redis.delete(*keys)
            await self.redis.aclose()
        _slots.forget()


_slots: PerLoop[SocketSlots] = PerLoop(lambda: SocketSlots(getattr(settings, "REDIS_URL", None)))


def socket_slots() -> SocketSlots:
    """The running event loop's slots."""
    return _slots.get()
