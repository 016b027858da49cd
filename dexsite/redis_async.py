"""asyncio Redis clients whose commands wait for a free connection rather than fail.

redis-py's asyncio pool holds at most 100 connections and raises `MaxConnectionsError`
at once past them. A WebSocket server does a round trip per socket that opens or closes
(its slot, its resume buffer): hundreds of sockets closing together (a network blip, a
load balancer's restart) failed to free their slots, and their clients, reconnecting at
once, were refused for a minute as holding too many sockets. A blocking pool bounds the
connections to Redis and queues the rest for a free one.
"""

from __future__ import annotations

import redis.asyncio as aioredis

# Connections per client (one client per event loop and purpose): round trips of a
# fraction of a millisecond, so a queue of thousands drains in well under a second.
MAX_CONNECTIONS = 50
# How long a command waits for a free connection before it fails.
WAIT_SECONDS = 20


def redis_async(url: str) -> aioredis.Redis:
    """A client for the running event loop (asyncio connections cannot cross loops);
    closing it closes its pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS
    )
    return aioredis.Redis.from_pool(pool)
