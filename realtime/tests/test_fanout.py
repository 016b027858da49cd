"""The per-process fan-out of market channels, and the consumer's turn-taking with it."""

import asyncio
import json
from collections import deque

import pytest

from realtime import names
from realtime.broadcast import message
from realtime.consumers import ExchangeConsumer, Subscription
from realtime.fanout import fanout
from realtime.tests.conftest import communicator
from trading.tests.factories import MarketFactory

pytestmark = [pytest.mark.asyncio]
GROUP = "market.FANOUT-PERP"


class Recorder:
    def __init__(self) -> None:
        self.got: list[dict] = []

    async def group_event(self, event: dict) -> None:
        self.got.append(event)


class Failing:
    async def group_event(self, event: dict) -> None:
        raise RuntimeError("a broken socket")


def delta(seq: int, channel: str = GROUP) -> dict:
    event = message("depth", channel, {"snapshot": False, "seq": seq, "bids": [], "asks": []})
    event["seq"] = seq
    return event


async def until(predicate, timeout: float = 3) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_subscription_feeds_every_member_in_order(layer):
    hub = fanout(layer)
    a, b, broken = Recorder(), Recorder(), Failing()
    await hub.join(GROUP, a)
    await hub.join(GROUP, broken)
    await hub.join(GROUP, b)
    assert hub.members(GROUP) == 3
    for seq in (1, 2, 3):
        await layer.group_send(GROUP, delta(seq))
    await until(lambda: len(a.got) == 3 and len(b.got) == 3)
    assert [e["seq"] for e in a.got] == [e["seq"] for e in b.got] == [1, 2, 3]

    await hub.leave(GROUP, a)
    await layer.group_send(GROUP, delta(4))
    await until(lambda: len(b.got) == 4)
    assert len(a.got) == 3

    hub.forget(broken)
    await hub.leave(GROUP, b)
    await until(lambda: GROUP not in hub.groups)
    # The process has left the group: a new member joins it afresh.
    c = Recorder()
    await hub.join(GROUP, c)
    await layer.group_send(GROUP, delta(5))
    await until(lambda: len(c.got) == 1)
    await hub.leave(GROUP, c)


async def test_a_long_fan_out_lets_the_loop_run_and_keeps_the_order(layer, monkeypatch):
    from realtime import fanout as fanout_module

    monkeypatch.setattr(fanout_module, "YIELD_EVERY", 1)
    hub = fanout(layer)
    members = [Recorder() for _ in range(3)]
    for m in members:
        await hub.join(GROUP, m)
    for seq in range(1, 6):
        await layer.group_send(GROUP, delta(seq))
    await until(lambda: all(len(m.got) == 5 for m in members))
    assert all([e["seq"] for e in m.got] == [1, 2, 3, 4, 5] for m in members)
    for m in members:
        await hub.leave(GROUP, m)
    assert GROUP not in hub.groups


async def test_queued_events_reach_each_socket_back_to_back(layer):
    """Events that queued up meanwhile go to one socket after the other, each socket
    getting all of them in order (the server then writes them in one go)."""
    hub = fanout(layer)
    log: list[tuple[str, int]] = []

    class Logger:
        def __init__(self, name: str) -> None:
            self.name = name

        async def group_event(self, event: dict) -> None:
            log.append((self.name, event["seq"]))

    a, b = Logger("a"), Logger("b")
    await hub.join(GROUP, a)
    await hub.join(GROUP, b)
    for seq in (1, 2, 3):  # as the reader queues what the layer had waiting
        hub.groups[GROUP].queue.put_nowait(delta(seq))
    await until(lambda: len(log) == 6)
    assert log == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("b", 3)]
    await hub.leave(GROUP, a)
    await hub.leave(GROUP, b)


def bare_consumer(channel: str = GROUP) -> tuple[ExchangeConsumer, list[str]]:
    """A consumer without a socket: what it sends lands in the list."""
    sent: list[str] = []

    async def base_send(msg: dict) -> None:
        sent.append(msg["text"])

    c = ExchangeConsumer()
    c.base_send = c.send_frame = base_send
    c.subs, c.lock, c.busy, c.closing = {}, asyncio.Lock(), 0, False
    c.backlog = deque()
    sub = Subscription(names.parse(channel), next_seq=1)
    c.subs[channel] = sub
    return c, sent


async def test_events_that_arrive_during_another_turn_follow_it_in_order():
    c, sent = bare_consumer()
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with c.exclusive():
            entered.set()
            await release.wait()
            await c.forward_text('{"first":true}', "event")

    holder = asyncio.ensure_future(hold())
    await entered.wait()
    trade = message("trade", GROUP, {"px": "1"})
    await c.group_event(delta(2))
    await c.group_event(trade)
    await c.group_event(delta(1))
    assert sent == [] and len(c.backlog) == 3
    release.set()
    await holder
    seqs = [json.loads(t).get("seq") for t in sent]
    # The turn's own send first, then the backlog: the trade as it came, the two
    # deltas once contiguous.
    assert sent[0] == '{"first":true}'
    assert seqs[1:] == [None, 1, 2]
    assert c.subs[GROUP].next_seq == 3 and not c.backlog and c.busy == 0

    # Free again: the next event goes out at once; covered and foreign ones do not.
    await c.group_event(delta(3))
    await c.group_event(delta(2))
    await c.group_event(delta(9, "market.OTHER-PERP"))
    assert [json.loads(t).get("seq") for t in sent[4:]] == [3]


async def test_a_closing_consumer_takes_no_events():
    c, sent = bare_consumer()
    c.closing = True
    await c.group_event(delta(1))
    assert sent == [] and not c.backlog


@pytest.mark.django_db(transaction=True)
async def test_sockets_of_one_process_share_one_membership(layer):
    from channels.db import database_sync_to_async

    await database_sync_to_async(MarketFactory)()
    channel = "market.BTC-PERP.paper"
    comms = [communicator("/ws/?market=BTC-PERP&mode=PAPER") for _ in range(3)]
    for comm in comms:
        assert (await comm.connect())[0]
        assert json.loads(await comm.receive_from())["type"] == "subscribed"
        assert json.loads(await comm.receive_from())["snapshot"] is True
    hub = fanout(layer)
    assert hub.members(channel) == 3
    await layer.group_send(channel, delta(1, channel))
    for comm in comms:
        assert json.loads(await comm.receive_from())["seq"] == 1
    await comms[0].send_json_to({"action": "unsubscribe", "channel": channel})
    assert json.loads(await comms[0].receive_from())["type"] == "unsubscribed"
    assert hub.members(channel) == 2
    await comms[1].disconnect()
    await until(lambda: hub.members(channel) == 1)
    await layer.group_send(channel, delta(2, channel))
    assert json.loads(await comms[2].receive_from())["seq"] == 2
    assert await comms[0].receive_nothing(timeout=0.2)
    await comms[0].disconnect()
    await comms[2].disconnect()
    await until(lambda: channel not in hub.groups)


async def test_frames_skip_the_session_middleware():
    from channels.sessions import InstanceSessionWrapper

    from realtime.consumers import frame_sender

    async def real_send(msg: dict) -> None:
        pass

    wrapper = InstanceSessionWrapper({"cookies": {}}, real_send)
    assert frame_sender(wrapper.send) is real_send
    assert frame_sender(real_send) is real_send


async def test_sends_are_counted_per_socket_and_scraped_in_prometheus_format():
    from prometheus_client import generate_latest

    from realtime import metrics

    sent_before = metrics.SENT.value("trade")
    delays_before = metrics.FANOUT_DELAY.count()
    consumers = [bare_consumer() for _ in range(3)]
    trade = message("trade", GROUP, {"px": "1"})
    for c, _ in consumers:
        await c.group_event(trade)
    assert all(len(sent) == 1 for _, sent in consumers)
    assert metrics.SENT.value("trade") == sent_before + 3
    assert metrics.FANOUT_DELAY.count() == delays_before + 3

    text = generate_latest().decode()
    assert f'dex_ws_messages_sent_total{{type="trade"}} {sent_before + 3}.0' in text
    assert "# TYPE dex_ws_fanout_delay_seconds histogram" in text
    buckets = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("dex_ws_fanout_delay_seconds_bucket")
    ]
    assert len(buckets) == 12 and buckets == sorted(buckets)
    assert f'dex_ws_fanout_delay_seconds_bucket{{le="+Inf"}} {delays_before + 3}.0' in text
    assert 'le="0.0025"' in text and 'le="1.0"' in text


async def test_delay_buckets_are_upper_bounds():
    from realtime.metrics import DelayHistogram

    h = DelayHistogram((0.01, 0.1))
    for seconds in (0.0, 0.01, 0.05, 0.1, 7.0):
        h.observe(seconds)
    assert h.counts == [2, 2, 1] and h.count() == 5
    assert abs(h.sum - 7.16) < 1e-9


class FlakyLayer:
    """A layer whose reads fail a few times, then deliver."""

    def __init__(self, failures: int) -> None:
        self.failures, self.reads = failures, 0
        self.events: asyncio.Queue = asyncio.Queue()

    async def new_channel(self) -> str:
        return "fanout.flaky"

    async def group_add(self, group: str, channel: str) -> None:
        pass

    async def group_discard(self, group: str, channel: str) -> None:
        pass

    async def receive(self, channel: str) -> dict:
        self.reads += 1
        if self.reads <= self.failures:
            raise ValueError("cannot decode")
        return await self.events.get()


async def test_failed_reads_pause_and_the_group_keeps_delivering():
    from realtime.fanout import READ_RETRY_PAUSE, GroupFanout

    layer = FlakyLayer(failures=3)
    hub = GroupFanout(layer, asyncio.get_running_loop())
    member = Recorder()
    await hub.join(GROUP, member)
    started = asyncio.get_running_loop().time()
    await layer.events.put(delta(1))
    await until(lambda: len(member.got) == 1)
    # Three failures, each followed by a pause: no busy loop on a failing layer.
    assert asyncio.get_running_loop().time() - started >= 3 * READ_RETRY_PAUSE * 0.9
    assert 4 <= layer.reads <= 5  # the next read may already be waiting
    await hub.leave(GROUP, member)
