"""Publishing outside a server (the order path called from Python, a WSGI worker, a
management command): the committing thread hands its events over and goes on; they
leave in order."""

import asyncio
import json
import time

import pytest

from realtime import broadcast

pytestmark = pytest.mark.asyncio

GROUP = "market.PUBTEST-PERP.paper"


def publish_from_a_plain_thread(ids: range) -> float:
    """Publish one trade per id, each on its own, with the publishing loop busy for
    half a second; returns how long the publishing took the caller."""
    broadcast.publish([broadcast.message("trade", GROUP, {"id": -1})])  # (starts the loop)
    broadcast._publisher.loop.call_soon_threadsafe(time.sleep, 0.5)
    started = time.monotonic()
    for i in ids:
        broadcast.publish([broadcast.message("trade", GROUP, {"id": i})])
    took = time.monotonic() - started
    broadcast._publisher.flush()
    return took


async def test_the_publisher_does_not_hold_up_the_caller_and_keeps_the_order(layer):
    channel = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    # A thread of no server (not asgiref's), as a WSGI worker's or a command's.
    took = await asyncio.get_running_loop().run_in_executor(
        None, publish_from_a_plain_thread, range(20)
    )
    assert took < 0.25
    got = [json.loads((await layer.receive(channel))["text"])["id"] for _ in range(21)]
    assert got == [-1, *range(20)]
