"""Sockets per client address and per account (realtime/slots.py), on the configured
layer and Redis."""

import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime import slots
from realtime.tests.conftest import communicator, token
from trading.tests.factories import UserFactory

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def opened(comm) -> None:
    """The socket is open and answering."""
    assert (await comm.connect())[0]
    await comm.send_json_to({"action": "ping"})
    assert json.loads(await comm.receive_from())["type"] == "pong"


async def refused(comm, what: str) -> None:
    """The socket is told why, then closed with 4008."""
    assert (await comm.connect())[0]
    error = json.loads(await comm.receive_from())
    assert (error["type"], error["code"]) == ("error", "TOO_MANY_SOCKETS")
    assert what in error["message"]
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4008}


@pytest.fixture
def caps(settings):
    settings.WS_MAX_SOCKETS_PER_ADDRESS = 3
    settings.WS_MAX_SOCKETS_PER_ACCOUNT = 2


async def test_one_address_holds_so_many_sockets_and_a_closed_one_frees_its_slot(layer, caps):
    held = [communicator(client="10.0.0.1") for _ in range(3)]
    for comm in held:
        await opened(comm)
    await refused(communicator(client="10.0.0.1"), "per client address")
    elsewhere = communicator(client="10.0.0.2")
    await opened(elsewhere)

    await held[0].disconnect()
    again = communicator(client="10.0.0.1")
    await opened(again)
    await refused(communicator(client="10.0.0.1"), "per client address")
    for comm in [*held[1:], again, elsewhere]:
        await comm.disconnect()


async def test_one_account_holds_so_many_sockets_from_any_address(layer, caps):
    alice, bob = await database_sync_to_async(lambda: (UserFactory(), UserFactory()))()
    key = await database_sync_to_async(token)(alice)
    held = [communicator(token=key, client=f"10.0.1.{i}") for i in range(2)]
    for comm in held:
        await opened(comm)
    await refused(communicator(token=key, client="10.0.1.9"), "per account")
    # Another account from that address, and the address itself, are not at a limit.
    other = communicator(token=await database_sync_to_async(token)(bob), client="10.0.1.9")
    await opened(other)

    await held[1].disconnect()
    again = communicator(token=key, client="10.0.1.9")
    await opened(again)
    for comm in [held[0], again, other]:
        await comm.disconnect()


async def test_behind_a_proxy_the_address_is_the_one_it_forwarded(layer, caps, settings):
    settings.REST_FRAMEWORK = {**django_settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    def via_proxy(client: str):
        # The client may send an X-Forwarded-For of its own: the proxy appends to it.
        forwarded = f"6.6.6.6, {client}".encode()
        return communicator(client="10.9.9.9", headers=[(b"x-forwarded-for", forwarded)])

    held = [via_proxy("1.1.1.1") for _ in range(3)]
    for comm in held:
        await opened(comm)
    await refused(via_proxy("1.1.1.1"), "per client address")
    other = via_proxy("2.2.2.2")
    await opened(other)
    for comm in [*held, other]:
        await comm.disconnect()


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="the count shared through Redis")
async def test_processes_share_the_count_and_a_dead_ones_slots_lapse(layer):
    limit = [(slots._key("address", "10.0.3.1"), 1, "client address")]
    one, two = (
        slots.SocketSlots(django_settings.REDIS_URL),
        slots.SocketSlots(django_settings.REDIS_URL),
    )
    try:
        assert await one.claim("socket-a", limit) is None
        assert await two.claim("socket-b", limit) == limit[0]
        # The first process dies: nothing renews its socket's lease, which lapses.
        one.renewer.cancel()
        await one.redis.zadd(limit[0][0], {"socket-a": 0})
        assert await two.claim("socket-b", limit) is None
        await two.release("socket-b")
        assert await one.redis.zcard(limit[0][0]) == 0
    finally:
        for s in (one, two):
            if s.renewer is not None:
                s.renewer.cancel()
            await s.redis.aclose()


async def test_after_a_storm_of_closes_every_client_can_open_its_socket_again(layer, settings):
    """Hundreds of sockets closing at once (a network blip, a load balancer's restart)
    free every slot at once: each client reconnecting at once gets its socket back,
    rather than waiting out the lease of a slot whose release failed."""
    import asyncio

    settings.WS_MAX_SOCKETS_PER_ADDRESS = 1
    clients = [f"10.0.5.{i // 250}.{i % 250}" for i in range(400)]

    async def ponged(comm) -> str:
        assert (await comm.connect(timeout=60))[0]
        await comm.send_json_to({"action": "ping"})
        first = json.loads(await comm.receive_from(timeout=60))
        return first.get("code") or first["type"]

    first = [communicator(client=c) for c in clients]
    assert set(await asyncio.gather(*(ponged(c) for c in first))) == {"pong"}
    await asyncio.gather(*(c.disconnect() for c in first))
    again = [communicator(client=c) for c in clients]
    outcomes = await asyncio.gather(*(ponged(c) for c in again))
    assert outcomes.count("pong") == len(clients), outcomes.count("TOO_MANY_SOCKETS")
    await asyncio.gather(*(c.disconnect() for c in again))
