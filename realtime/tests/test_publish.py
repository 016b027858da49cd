"""Publishing outside a server (the order path called from Python, a WSGI worker, a
management command): the committing thread hands its events over and goes on; they
leave in order."""

import asyncio
import json
import threading

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import broadcast

pytestmark = pytest.mark.asyncio

GROUP = "market.PUBTEST-PERP.paper"


def publish_while_the_publisher_is_held(ids: range) -> bool:
    """Publish one trade per id, each on its own, while the publishing thread is held
    busy sending the first; let it go afterwards and wait until it has sent them.
    Returns whether every call returned while the thread was still held: a caller that
    waited for it could return only after it was let go (here: after the hold gave up,
    10 s on)."""
    held, release, let_go = threading.Event(), threading.Event(), threading.Event()
    send = broadcast._publisher.send

    def held_send(events, deltas) -> None:
        if not held.is_set():
            held.set()
            release.wait(10)
            let_go.set()
        send(events, deltas)

    broadcast._publisher.send = held_send
    try:
        broadcast.publish([broadcast.message("trade", GROUP, {"id": -1})])
        assert held.wait(10), "the publishing thread did not run"
        for i in ids:
            broadcast.publish([broadcast.message("trade", GROUP, {"id": i})])
        returned_while_held = not let_go.is_set()
        release.set()
        broadcast._publisher.flush()
    finally:
        del broadcast._publisher.send
    return returned_while_held


async def test_the_publisher_does_not_hold_up_the_caller_and_keeps_the_order(layer):
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    # A thread of no server (not asgiref's), as a WSGI worker's or a command's.
    returned_while_held = await asyncio.get_running_loop().run_in_executor(
        None, publish_while_the_publisher_is_held, range(20)
    )
    assert returned_while_held, "publish waited for the publishing loop"
    got = [
        json.loads((await asyncio.wait_for(layer.receive(channel), 10))["text"])["id"]
        for _ in range(21)
    ]
    assert got == [-1, *range(20)]


@pytest.mark.skipif(not settings.REDIS_URL, reason="a Redis channel layer")
async def test_channels_redis_own_pubsub_layer_is_published_to_from_a_thread(settings):
    """A deployment may name channels-redis's pub/sub layer (CHANNEL_LAYER_BACKEND),
    which has no blocking sender and answers a look for one with an error when no loop
    runs: the publishing thread sends through its own event loop instead."""
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": config}
    }
    layer = get_channel_layer()
    assert type(layer).__module__ == "channels_redis.pubsub"
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)

    def publish_and_flush() -> None:
        broadcast.publish([broadcast.message("trade", GROUP, {"id": 7})])
        broadcast._publisher.flush()

    try:
        await asyncio.get_running_loop().run_in_executor(None, publish_and_flush)
        got = await asyncio.wait_for(layer.receive(channel), 10)
        assert json.loads(got["text"])["id"] == 7
    finally:
        await layer.flush()
