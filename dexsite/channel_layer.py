"""The channel layer: channels-redis's pub/sub layer, with `group_send_many`.

One commit of the order path publishes about eight events (book delta, trades, orders,
fills, positions, balances). Sent with `group_send` one after another, each is a
`PUBLISH` awaited on its own: measured in the matcher (bench/matcher.py), publishing
took almost half of its CPU. `group_send_many` sends a commit's events as one pipeline
per Redis shard, in order: each group's messages keep the order they were given (a
group lives on one shard), and the subscribers receive exactly what `group_send` would
have sent them.

It uses the layer's own shard connection, naming and serializer (channels-redis 4.3,
pinned in requirements.txt): the parts `group_send` itself is made of.

`group_send_many_blocking` does the same from a thread with no event loop, over
blocking connections of redis-py (one pool per shard, safe across threads): what the
publishing thread of processes without a server uses (`realtime.broadcast`).
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer


class PubSubChannelLayer(RedisPubSubChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._blocking: tuple[RedisPubSubLoopLayer, dict[Any, redis.Redis]] | None = None
        self._blocking_lock = threading.Lock()

    def _blocking_shards(self) -> tuple[RedisPubSubLoopLayer, dict[Any, redis.Redis]]:
        """The layer's naming and sharding (a loop layer never connected) and a blocking
        client per shard (by the loop layer's shard)."""
        with self._blocking_lock:
            if self._blocking is None:
                naming = RedisPubSubLoopLayer(*self._args, **self._kwargs, channel_layer=self)
                clients = {}
                for shard in naming._shards:
                    host = dict(shard.host)
                    address = host.pop("address", None)
                    clients[shard] = (
                        redis.Redis.from_url(address, **host) if address else redis.Redis(**host)
                    )
                self._blocking = (naming, clients)
            return self._blocking

    def group_send_many_blocking(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """`group_send_many`, blocking, from any thread."""
        naming, clients = self._blocking_shards()
        pipes: dict[Any, Any] = {}
        for group, message in messages:
            channel = naming._get_group_channel_name(group)
            shard = naming._get_shard(channel)
            pipe = pipes.get(shard)
            if pipe is None:
                pipe = pipes[shard] = clients[shard].pipeline(transaction=False)
            pipe.publish(channel, self.serialize(message))
        for pipe in pipes.values():
            pipe.execute()

    async def group_send_many(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """`group_send` of each (group, message), in order, one round trip per shard."""
        layer = self._get_layer()
        by_shard: dict[Any, list[tuple[str, bytes]]] = {}
        for group, message in messages:
            channel = layer._get_group_channel_name(group)
            by_shard.setdefault(layer._get_shard(channel), []).append(
                (channel, self.serialize(message))
            )
        for shard, publishes in by_shard.items():
            async with shard._lock:
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for channel, data in publishes:
                    pipe.publish(channel, data)
                await pipe.execute()
