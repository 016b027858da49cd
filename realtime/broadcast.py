"""Domain events → channel-layer groups.

trading and accounts send Django signals from `on_commit`; the receivers here turn each
into flat JSON messages, serialised once per event (not per socket), and publish them
in order. Every receiver runs in the thread that committed, after the commit: a client
never hears of a change that was rolled back.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import os
import threading
import time
import weakref
from typing import Any

from asgiref.sync import SyncToAsync
from channels.layers import get_channel_layer
from django.dispatch import receiver

from ledger.signals import balances_changed
from realtime import names
from realtime.buffer import delta_buffer
from trading import signals

log = logging.getLogger(__name__)

# Compact JSON, one encoder for every event (`json.dumps` with options builds one per
# call).
to_json = json.JSONEncoder(separators=(",", ":")).encode


def now_ms() -> int:
    return int(time.time() * 1000)


def message(
    type_: str, channel: str, body: dict[str, Any], ts: int | None = None
) -> dict[str, Any]:
    """A channel-layer event carrying the socket text, serialised here once. Its `ts` is
    `ts`, else the body's own (a trade's or a fill's time, as REST gives it), else now."""
    stamp = ts or body.get("ts") or now_ms()
    msg = {"type": type_, "channel": channel, "ts": stamp}
    for k, v in body.items():
        msg.setdefault(k, v)
    return {
        "type": "ws.forward",
        "channel": channel,
        "kind": type_,
        "ts": stamp,
        "text": to_json(msg),
    }


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The ASGI server's event loop when this thread runs a sync view for it.

    asgiref records it in a thread-local; `async_to_sync` then runs coroutines there,
    on the loop that owns the consumers and the channel layer's connections."""
    local = SyncToAsync.threadlocal
    if getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(local, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


Deltas = list[tuple[str, int, str]]  # (book, seq, depth delta's socket text)


class _Publisher:
    """One thread that publishes for everything outside the server (the matcher, the
    clock, management commands, the order path called from Python or a WSGI worker):
    batches are handed to it and sent in order; the caller does not wait for them.
    Whatever is still queued when the process exits is sent first (`flush`, at exit).

    Where the layer can (`dexsite.channel_layer`: Redis), batches are sent with blocking
    pipelines from this thread, every batch that waits taken in one go: in the matcher
    an asyncio loop's pipeline cost 0.66 ms of CPU an order (bench/matcher.py), which
    its one thread shares the GIL with. Otherwise (the in-memory layer) from an event
    loop of this thread's own, kept between batches with its connections."""

    # Batches sent together at most (a backlog after a stall goes out in a few rounds).
    MAX_TAKEN = 64

    def __init__(self) -> None:
        self.queue: collections.deque[tuple[list[dict[str, Any]], Deltas]] = collections.deque()
        self.changed = threading.Condition()
        self.unsent = 0  # batches handed over and not yet sent
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def submit(self, events: list[dict[str, Any]], deltas: Deltas) -> None:
        with self.changed:
            self.queue.append((events, deltas))
            self.unsent += 1
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self.run, name="realtime-publisher", daemon=True
                )
                self.thread.start()
            self.changed.notify_all()

    def run(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.queue)
                taken = [self.queue.popleft() for _ in range(min(len(self.queue), self.MAX_TAKEN))]
            try:
                self.send(
                    [e for events, _ in taken for e in events],
                    [d for _, deltas in taken for d in deltas],
                )
            except Exception:
                log.exception("publishing realtime events failed")
            finally:
                with self.changed:
                    self.unsent -= len(taken)
                    self.changed.notify_all()

    def send(self, events: list[dict[str, Any]], deltas: Deltas) -> None:
        layer = get_channel_layer()
        buffer = delta_buffer()
        # Looked up on the classes: channels-redis's own pub/sub layer hands any attribute
        # it lacks to its per-loop layer, which needs a running loop (there is none here).
        send_many = getattr(type(layer), "group_send_many_blocking", None)
        add_many = getattr(type(buffer), "add_many_blocking", None)
        if send_many is not None and add_many is not None:
            add_many(buffer, deltas)
            send_many(layer, [(event["channel"], event) for event in events])
            return
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(send_all(layer, events, deltas))

    def flush(self, timeout: float = 10) -> None:
        """Wait until every batch handed over so far has been sent (or `timeout`)."""
        with self.changed:
            if not self.changed.wait_for(lambda: not self.unsent, timeout):
                log.warning("realtime events still unsent after %.0f s", timeout)


_publisher = _Publisher()
atexit.register(_publisher.flush)


class _Held(threading.local):
    """What this thread's current commit has published so far (None: not holding)."""

    depth = 0
    events: list[dict[str, Any]] | None = None
    deltas: list[tuple[str, int, str]] | None = None


_held = _Held()


@receiver(signals.events_started)
def hold(sender, **kw) -> None:
    if _held.depth == 0:
        _held.events, _held.deltas = [], []
    _held.depth += 1


@receiver(signals.events_finished)
def release(sender, **kw) -> None:
    _held.depth -= 1
    if _held.depth == 0:
        events, deltas = _held.events, _held.deltas
        _held.events = _held.deltas = None
        publish(events, deltas)


def publish(events: list[dict[str, Any]], deltas: Deltas = ()) -> None:
    """Store the depth deltas in the resume buffer, then send every event, in order,
    from one sender: per process, a channel sees events in commit order. Between
    `events_started` and `events_finished` (one commit's events), hold them and send
    them all at the end."""
    if _held.events is not None:
        _held.events += events
        _held.deltas += deltas
        return
    # Hand the batch to the publishing loop (the server's, in the server) or thread and
    # return at once: the committing thread does not wait for Redis round trips.
    # Delivery is best effort (the order is committed whatever happens there, and the
    # book's seq lets every subscriber detect what it missed).
    _hand_over(events, list(deltas), _server_loop())


def publish_later(events: list[dict[str, Any]], loop: asyncio.AbstractEventLoop | None) -> None:
    """Send `events` from a thread that committed nothing (realtime.account_updates'),
    on `loop`: the server's loop that the thread which noted the change ran for, while
    it runs; else by the publishing thread."""
    _hand_over(events, [], loop)


async def send_all(layer: Any, events: list[dict[str, Any]], deltas: Deltas) -> None:
    """The deltas into the resume buffer, then each event to its channel's group, in
    order: in one pipeline where the layer can (`dexsite.channel_layer`), else one
    `group_send` after another."""
    buffer = delta_buffer()
    for book, seq, text in deltas:
        await buffer.add(book, seq, text)
    send_many = getattr(type(layer), "group_send_many", None)
    if send_many is not None:
        await layer.group_send_many([(event["channel"], event) for event in events])
        return
    for event in events:
        await layer.group_send(event["channel"], event)


def _hand_over(
    events: list[dict[str, Any]], deltas: Deltas, loop: asyncio.AbstractEventLoop | None
) -> None:
    if not events or get_channel_layer() is None:
        return
    if loop is not None and loop.is_running():
        try:
            loop.call_soon_threadsafe(_in_order(loop).put_nowait, (events, deltas))
            return
        except RuntimeError:  # closed since it was seen running: publish elsewhere
            pass
    _publisher.submit(events, deltas)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Queue] = (
    weakref.WeakKeyDictionary()
)
_queues_lock = threading.Lock()


def _in_order(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    """The queue of `loop`'s one publishing task: batches leave in the order they were
    committed and handed over (per process, as before), one after the other."""
    with _queues_lock:
        queue = _queues.get(loop)
        if queue is None:
            queue = _queues[loop] = asyncio.Queue()
            loop.call_soon_threadsafe(lambda: loop.create_task(_drain(queue)))
    return queue


async def _drain(queue: asyncio.Queue) -> None:
    while True:
        events, deltas = await queue.get()
        try:
            await send_all(get_channel_layer(), events, deltas)
        except Exception:
            log.exception("publishing realtime events failed")
        finally:
            queue.task_done()


@receiver(signals.book_changed)
def on_book_changed(sender, *, market: str, mode: str, seq: int, bids, asks, **kw) -> None:
    channel = names.market_channel(market, mode)
    event = message("depth", channel, {"snapshot": False, "seq": seq, "bids": bids, "asks": asks})
    event["seq"] = seq
    publish([event], [(f"{market}:{mode}", seq, event["text"])])


@receiver(signals.book_quiet)
def on_book_quiet(sender, *, market: str, mode: str, seq: int, **kw) -> None:
    # Not for the client: each socket compares it with the last delta it saw.
    channel = names.market_channel(market, mode)
    publish([{"type": "ws.seq", "channel": channel, "seq": seq}])


@receiver(signals.trade_executed)
def on_trade(sender, *, market: str, mode: str, trade: dict[str, Any], **kw) -> None:
    # The market's ticker follows, read after the commit (realtime.account_updates).
    publish([message("trade", names.market_channel(market, mode), trade)])


def ticker_body(symbol: str, mode: str) -> dict[str, Any]:
    from trading.selectors import markets_list

    found = markets_list(mode=mode, symbol=symbol)
    if not found:
        return {}
    m = found[0]
    keys = ("markPrice", "indexPrice", "lastPrice", "change24h", "volume24h", "openInterest")
    return {"symbol": symbol, "mode": mode, **{k: m[k] for k in keys}}


@receiver(signals.market_state_changed)
def on_market_state(sender, *, market: str, status: str, **kw) -> None:
    body = {"symbol": market, "status": status}
    publish(
        [
            message("marketState", names.admin_channel(market), body),
            message("marketState", names.market_channel(market, "REAL"), body),
            message("marketState", names.market_channel(market, "PAPER"), body),
        ]
    )


@receiver(signals.order_updated)
def on_order(sender, *, trader_id, order: dict[str, Any], **kw) -> None:
    # The message's `type` is "orderUpdate": the order's own type (LIMIT, MARKET) travels
    # as `orderType`.
    body = {**order, "orderType": order["type"]}
    publish([message("orderUpdate", names.trader_channel(trader_id), body)])


@receiver(signals.fill_created)
def on_fill(sender, *, trader_id, fill: dict[str, Any], **kw) -> None:
    publish([message("fill", names.trader_channel(trader_id), fill)])


@receiver(signals.position_updated)
def on_positions(
    sender, *, market: str, mode: str, position_ids, shown: dict | None = None, **kw
) -> None:
    """`shown`: the positions as shown, per trader, when the sender had them (an order's
    transaction has); otherwise they are read."""
    from ledger.selectors import public_trader_ids
    from trading.selectors import positions_in_market

    uuids = public_trader_ids({t for t, _ in position_ids})
    if shown is None:
        shown = positions_in_market(trader_ids=uuids, mode=mode, market=market)
    publish(
        [
            message("positionUpdate", names.trader_channel(uuids[t]), p)
            for t, p in shown.items()
            if t in uuids
        ]
    )


@receiver(balances_changed)
def on_balances(sender, *, balances, **kw) -> None:
    from ledger.selectors import public_trader_ids
    from trading.presenters import balance_dict

    uuids = public_trader_ids({b.trader_id for b in balances})
    publish(
        [
            message("balanceUpdate", names.trader_channel(uuids[b.trader_id]), balance_dict(b))
            for b in balances
            if b.trader_id in uuids
        ]
    )


@receiver(signals.ticker_updated)
def on_ticker(sender, *, market: str, mode: str, ticker: dict[str, Any], **kw) -> None:
    publish([message("ticker", names.market_channel(market, mode), ticker)])


@receiver(signals.funding_rate_updated)
def on_funding_rate(sender, *, market: str, mode: str, rate, next_funding_ts, **kw) -> None:
    body = {"market": market, "mode": mode, "rate": rate, "nextFundingTs": next_funding_ts}
    publish([message("funding", names.market_channel(market, mode), body)])


@receiver(signals.option_iv_updated)
def on_option_iv(sender, *, market: str, mode: str, iv: dict[str, Any], **kw) -> None:
    publish([message("optionIv", names.market_channel(market, mode), {"market": market, **iv})])


@receiver(signals.funding_paid)
def on_funding_paid(sender, *, trader_id, payment: dict[str, Any], **kw) -> None:
    publish([message("funding", names.trader_channel(trader_id), payment)])


@receiver(signals.liquidated)
def on_liquidated(sender, *, trader_id, liquidation: dict[str, Any], **kw) -> None:
    publish([message("liquidation", names.trader_channel(trader_id), liquidation)])
