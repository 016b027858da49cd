"""The WebSocket endpoint `/ws/`: authenticate, join and leave channel-layer groups,
forward what they carry. Nothing else happens here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.sessions import InstanceSessionWrapper

from realtime import metrics, names
from realtime.auth import Identity, Refused, identify, revoke_groups, still_valid
from realtime.buffer import delta_buffer
from realtime.fanout import GroupFanout, fanout
from realtime.slots import SocketSlots, limits_for, socket_slots
from realtime.snapshots import depth_shared, market_known

log = logging.getLogger(__name__)

MAX_CHANNELS = 50
MAX_MESSAGE_BYTES = 4096
MAX_MESSAGES_PER_SECOND = 20
# A client may send this many at once (subscribing to every channel it may hold, say);
# past that, MAX_MESSAGES_PER_SECOND on average.
MAX_MESSAGES_BURST = MAX_CHANNELS + 10
# How long a delta that arrived ahead of its predecessor waits for it (web processes
# publish independently, so two commits of one book can cross on the way) before the
# socket gets a fresh snapshot instead.
GAP_WAIT_SECONDS = 0.5
# The close code of a socket closed for breaking a limit or losing its credential. An
# application may close with 1000 or 3000-4999 only (RFC 6455 7.4.2; WebSocket
# libraries refuse others, and the socket would then end with 1011 and no clean-up):
# 4000 + 1008, the protocol's own "policy violation".
POLICY_VIOLATION = 4008
# How often, at most, a socket re-checks its credential (session, API key) before it
# forwards private data: a revoked key or an expired session stops deliveries within
# this bound, while the fan-out of private events stays free of database work.
REVALIDATE_SECONDS = 30.0


@dataclass
class Subscription:
    channel: names.Channel
    next_seq: int | None = None  # market channels: the seq this socket expects next
    pending: dict[int, str] = field(default_factory=dict)
    behind: int | None = None  # a seq the book has reached that this socket has not seen
    gap_timer: asyncio.TimerHandle | None = None


class TokenBucket:
    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.stamp = capacity, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@database_sync_to_async
def book_seq(symbol: str, mode: str) -> int | None:
    from trading.models import Book

    return (
        Book.objects.filter(market__symbol=symbol, mode=mode).values_list("seq", flat=True).first()
    )


@database_sync_to_async
def cancel_open_orders(user, mode: str | None) -> list[int]:
    from trading.matcher import orders_cancel_all_submit

    return orders_cancel_all_submit(trader=user, mode=mode, market=None, reason="DISCONNECT")


def now_ms() -> int:
    return int(time.time() * 1000)


def frame_sender(send: Callable[[dict], Awaitable[None]]) -> Callable[[dict], Awaitable[None]]:
    """The ASGI send beneath Channels' session middleware. The middleware saves the
    session and sets its cookie on HTTP responses only; for a WebSocket frame it just
    inspects the session, a tenth of a delivery's CPU. Frames go straight down."""
    wrapper = getattr(send, "__self__", None)
    while isinstance(wrapper, InstanceSessionWrapper):
        send = wrapper.real_send
        wrapper = getattr(send, "__self__", None)
    return send


class ExchangeConsumer(AsyncWebsocketConsumer):
    """One socket. Market channels reach it through the process's fan-out
    (`realtime.fanout`, `group_event`); trader, admin and revoke groups through its own
    channel-layer channel (`dispatch`). Both paths take turns through `exclusive()`."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if getattr(self, "tidied", True) is False:
                # The socket ended without its `websocket.disconnect` reaching us (a
                # send to a socket the client had just left raised): tidy up all the
                # same, so that `cancelOnDisconnect` holds however the socket ends.
                await asyncio.shield(self.disconnect(1006))
            # Normally `disconnect()` has left every group and freed its slots already.
            if getattr(self, "fanout", None) is not None:
                self.fanout.forget(self)
            if getattr(self, "slots", None) is not None:
                self.slots.forget(self.channel_name)

    async def connect(self) -> None:
        self.subs: dict[str, Subscription] = {}
        self.lock = asyncio.Lock()
        # Coroutines holding or waiting for `lock`; while any does, market events wait
        # in `backlog` and the holder sends them before it lets go.
        self.busy = 0
        self.backlog: deque[dict] = deque()
        self.fanout: GroupFanout = fanout(self.channel_layer)
        self.send_frame = frame_sender(self.base_send)
        self.bucket = TokenBucket(MAX_MESSAGES_PER_SECOND, MAX_MESSAGES_BURST)
        self.closing = False
        # Whether `disconnect` has run: it must, once, however the socket ends.
        self.tidied = False
        self.counted = False
        self.revoke_groups: list[str] = []
        self.recheck_at = float("inf")
        try:
            self.identity: Identity = await identify(self.scope)
        except Refused as e:
            metrics.REFUSED.labels(reason="handshake").inc()
            log.info("refused WebSocket handshake: %s", e)
            await self.close()
            return
        self.user, self.auth_via = self.identity.user, self.identity.via
        self.slots: SocketSlots = socket_slots()
        try:
            full = await self.slots.claim(self.channel_name, limits_for(self.scope, self.user))
        except Exception:
            # Redis unreachable: the socket goes uncounted rather than refused.
            log.exception("WebSocket slots not counted")
            full = None
        if full is not None:
            _, limit, what = full
            await self.accept()
            return await self.violation(
                "TOO_MANY_SOCKETS", f"at most {limit} open sockets per {what}"
            )
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        first = {k: v[0] for k, v in query.items() if v}
        mode = first.get("mode", "REAL").upper()
        self.cancel_on_disconnect = (
            first.get("cancelOnDisconnect", "").lower() == "true" and self.user.is_authenticated
        )
        self.cancel_mode = mode if "mode" in first and mode in ("REAL", "PAPER") else None
        await self.accept()
        self.counted = True
        metrics.OPEN_SOCKETS.inc()
        if self.user.is_authenticated:
            # A logout or a revoked credential reaches the socket through these groups.
            self.revoke_groups = revoke_groups(self.identity)
            for group in self.revoke_groups:
                await self.channel_layer.group_add(group, self.channel_name)
            self.recheck_at = time.monotonic() + REVALIDATE_SECONDS
        if "market" in first:
            if mode not in ("REAL", "PAPER"):
                await self.send_error("BAD_MESSAGE", "mode must be REAL or PAPER")
            else:
                await self.subscribe(names.market_channel(first["market"], mode))
        if "traderId" in first:
            await self.subscribe(names.trader_channel(first["traderId"]))

    async def disconnect(self, code: int) -> None:
        self.closing = True
        self.tidied = True
        for sub in list(self.subs.values()):
            await self.leave(sub.channel)
            metrics.SUBSCRIPTIONS.labels(kind=sub.channel.kind).dec()
            if sub.gap_timer:
                sub.gap_timer.cancel()
        self.subs.clear()
        self.backlog.clear()
        for group in self.revoke_groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.revoke_groups = []
        if self.counted:
            metrics.OPEN_SOCKETS.dec()
            self.counted = False
        if getattr(self, "slots", None) is not None:
            await self.slots.release(self.channel_name)
        if getattr(self, "cancel_on_disconnect", False):
            canceled = await cancel_open_orders(self.user, self.cancel_mode)
            log.info("socket of %s closed: cancelled %d orders", self.user, len(canceled))

    # -- client messages ----------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return  # sent before our close reached the client: nothing answers it now
        raw = text_data if text_data is not None else bytes_data or b""
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > MAX_MESSAGE_BYTES:
            return await self.violation("MESSAGE_TOO_LARGE", "messages are limited to 4 KiB")
        if not self.bucket.take():
            return await self.violation("RATE_LIMITED", "at most 20 messages per second")
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return await self.send_error("BAD_MESSAGE", "not JSON")
        if not isinstance(msg, dict) or not isinstance(msg.get("action"), str):
            return await self.send_error("BAD_MESSAGE", 'expected {"action": ...}')
        action = msg["action"]
        if action == "ping":
            return await self.send_json({"type": "pong", "channel": None, "ts": now_ms()})
        if action in ("subscribe", "unsubscribe"):
            channel = msg.get("channel")
            if not isinstance(channel, str):
                return await self.send_error("BAD_MESSAGE", f"{action} needs a channel name")
            since = msg.get("sinceSeq")
            if since is not None and (
                not isinstance(since, int) or isinstance(since, bool) or since < 0
            ):
                return await self.send_error(
                    "BAD_MESSAGE", "sinceSeq must be a non-negative integer", channel
                )
            if action == "subscribe":
                return await self.subscribe(channel, since)
            return await self.unsubscribe(channel)
        return await self.send_error("BAD_MESSAGE", f"unknown action {action!r}")

    async def subscribe(self, name: object, since_seq: int | None = None) -> None:
        channel = names.parse(name)
        if channel is None:
            return await self.send_error("UNKNOWN_CHANNEL", "no such channel", name)
        if channel.name in self.subs:
            return  # subscribing twice is a no-op
        if channel.kind == "trader":
            if not self.user.is_authenticated or self.user.trader_id != channel.trader_id:
                return await self.send_error(
                    "FORBIDDEN", "a trader channel is its owner's only", channel.name
                )
            if not await self.credential_current():
                return
        elif not await market_known(channel.symbol):
            return await self.send_error(
                "UNKNOWN_CHANNEL", f"no market {channel.symbol}", channel.name
            )
        if len(self.subs) >= MAX_CHANNELS:
            return await self.violation(
                "TOO_MANY_CHANNELS", f"at most {MAX_CHANNELS} channels per socket"
            )

        # Join the group before reading the snapshot: a delta committed after the read
        # then reaches us through the group, and one already covered is dropped by seq.
        async with self.exclusive():
            sub = Subscription(channel)
            self.subs[channel.name] = sub
            metrics.SUBSCRIPTIONS.labels(kind=channel.kind).inc()
            await self.join(channel)
            await self.send_json({"type": "subscribed", "channel": channel.name, "ts": now_ms()})
            if channel.kind == "market":
                await self.sync_book(sub, since_seq)

    async def sync_book(self, sub: Subscription, since_seq: int | None) -> None:
        """Bring a market subscription up to date: replay the deltas after `since_seq`
        when the buffer still holds them all, else send a snapshot. Caller holds the lock."""
        ch = sub.channel
        if since_seq is not None:
            current = await book_seq(ch.symbol, ch.mode)
            if current is not None and since_seq <= current:
                replay = await delta_buffer().since(ch.book_key, since_seq, current)
                if replay is not None:
                    for text in replay:
                        await self.forward_text(text, "depth")
                    sub.next_seq = current + 1
                    await self.drain(sub)
                    return
        snap = await depth_shared(ch.symbol, ch.mode)
        await self.send_json(
            {
                "type": "depth",
                "channel": ch.name,
                "ts": now_ms(),
                "snapshot": True,
                "seq": snap["seq"],
                "bids": snap["bids"],
                "asks": snap["asks"],
            }
        )
        sub.next_seq = snap["seq"] + 1
        await self.drain(sub)

    async def unsubscribe(self, name: object) -> None:
        channel = names.parse(name)
        if channel is None or channel.name not in self.subs:
            return await self.send_error("UNKNOWN_CHANNEL", "not subscribed to that channel", name)
        async with self.exclusive():
            sub = self.subs.pop(channel.name)
            if sub.gap_timer:
                sub.gap_timer.cancel()
            await self.leave(channel)
            metrics.SUBSCRIPTIONS.labels(kind=channel.kind).dec()
        await self.send_json({"type": "unsubscribed", "channel": channel.name, "ts": now_ms()})

    async def join(self, channel: names.Channel) -> None:
        if channel.kind == "market":
            await self.fanout.join(channel.name, self)
        else:
            await self.channel_layer.group_add(channel.name, self.channel_name)

    async def leave(self, channel: names.Channel) -> None:
        if channel.kind == "market":
            await self.fanout.leave(channel.name, self)
        else:
            await self.channel_layer.group_discard(channel.name, self.channel_name)

    # -- group messages -----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """One coroutine at a time changes the subscriptions or sends group events;
        market events that arrive meanwhile are sent, in order, before it lets go."""
        self.busy += 1
        try:
            async with self.lock:
                yield
                await self.send_backlog()
        finally:
            self.busy -= 1

    async def group_event(self, event: dict) -> None:
        """An event of a market channel, from the process's fan-out. Sent at once
        unless another coroutine has the turn: that one sends it."""
        if self.busy:
            self.backlog.append(event)
            return
        sub = self.subs.get(event["channel"])
        if sub is None or self.closing:
            return
        self.busy += 1
        # Nobody holds or waits for the lock (busy was 0): this takes it at once.
        await self.lock.acquire()
        try:
            if event["type"] == "ws.seq":
                self.seq_reached(sub, event["seq"])
            else:
                await self.forward_event(sub, event)
            if self.backlog:
                await self.send_backlog()
        finally:
            self.lock.release()
            self.busy -= 1

    async def send_backlog(self) -> None:
        backlog = self.backlog
        while backlog:
            event = backlog.popleft()
            sub = self.subs.get(event["channel"])
            if sub is None:
                continue
            if event["type"] == "ws.seq":
                self.seq_reached(sub, event["seq"])
            else:
                await self.forward_event(sub, event)

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale database connections before every handler (and after a
        # socket closes), each a hop to the one thread that serves every consumer's
        # database work and back: per forwarded event, two thirds of a fan-out's CPU;
        # in a reconnect storm, a queue of hops in that thread ahead of the sockets'
        # reads. Every read here goes through `database_sync_to_async`, which closes
        # stale connections itself in that thread, so no handler needs the hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict) -> None:
        # AsyncWebsocketConsumer's, without its hop (see `dispatch`); this consumer
        # leaves its groups itself, in `disconnect`.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def ws_forward(self, event: dict) -> None:
        """An event of a trader or admin channel (or, sent to this socket's own
        channel, of any channel)."""
        async with self.exclusive():
            sub = self.subs.get(event["channel"])
            if sub is None:
                return
            if sub.channel.kind == "trader" and not await self.credential_current():
                return
            await self.forward_event(sub, event)

    async def forward_event(self, sub: Subscription, event: dict) -> None:
        """Send an event, or hold a delta until its predecessors have been sent.
        Caller has the turn."""
        seq = event.get("seq")
        if seq is None or sub.next_seq is None:
            return await self.forward_text(
                event["text"], event.get("kind", "event"), event.get("ts")
            )
        if seq < sub.next_seq:
            metrics.DROPPED.labels(reason="covered").inc()
            return
        sub.pending[seq] = event["text"]
        await self.drain(sub)
        if sub.pending:
            self.gap_wait(sub)

    async def ws_seq(self, event: dict) -> None:
        async with self.exclusive():
            sub = self.subs.get(event["channel"])
            if sub is not None:
                self.seq_reached(sub, event["seq"])

    def seq_reached(self, sub: Subscription, seq: int) -> None:
        """The book has been still since delta `seq`. A socket that has not seen it
        (the web process that committed it died before publishing) waits the usual
        gap time for it, then resyncs from a snapshot."""
        if sub.next_seq is None or seq < sub.next_seq:
            return
        sub.behind = max(sub.behind or 0, seq)
        self.gap_wait(sub)

    def gap_wait(self, sub: Subscription) -> None:
        """Give a missing delta GAP_WAIT_SECONDS to arrive, then resync (once)."""
        if sub.gap_timer is None:
            loop = asyncio.get_running_loop()
            sub.gap_timer = loop.call_later(
                GAP_WAIT_SECONDS, lambda: asyncio.ensure_future(self.resync(sub))
            )

    async def drain(self, sub: Subscription) -> None:
        """Send the buffered deltas that now follow on; drop those already covered."""
        for seq in [s for s in sub.pending if s < sub.next_seq]:
            del sub.pending[seq]
            metrics.DROPPED.labels(reason="covered").inc()
        while sub.next_seq in sub.pending:
            await self.forward_text(sub.pending.pop(sub.next_seq), "depth")
            sub.next_seq += 1
        if sub.behind is not None and sub.behind < sub.next_seq:
            sub.behind = None
        if not sub.pending and sub.behind is None and sub.gap_timer is not None:
            sub.gap_timer.cancel()
            sub.gap_timer = None

    async def resync(self, sub: Subscription) -> None:
        async with self.exclusive():
            sub.gap_timer = None
            if self.subs.get(sub.channel.name) is not sub:
                return
            if not sub.pending and (sub.behind is None or sub.behind < sub.next_seq):
                return
            metrics.DROPPED.labels(reason="gap").inc()
            await self.sync_book(sub, None)

    # -- credentials ----------------------------------------------------------------

    async def credential_current(self) -> bool:
        """Whether the socket's credential still holds; re-checked in the database at
        most every REVALIDATE_SECONDS. A stale one ends the socket."""
        if self.closing:
            return False
        if time.monotonic() < self.recheck_at:
            return True
        if await still_valid(self.identity):
            self.recheck_at = time.monotonic() + REVALIDATE_SECONDS
            return True
        await self.end_session("the credential of this socket is no longer valid")
        return False

    async def auth_revoke(self, event: dict) -> None:
        """The session or API key this socket authenticated with has ended."""
        await self.end_session("signed out: the session of this socket has ended")

    async def end_session(self, message: str) -> None:
        """Stop private deliveries at once, then close (POLICY_VIOLATION)."""
        for name, sub in list(self.subs.items()):
            if sub.channel.kind == "trader":
                del self.subs[name]
                await self.leave(sub.channel)
                metrics.SUBSCRIPTIONS.labels(kind="trader").dec()
        await self.violation("UNAUTHENTICATED", message)

    # -- sending --------------------------------------------------------------------

    async def forward_text(self, text: str, kind: str, ts: int | None = None) -> None:
        if self.closing:
            return  # queued for a socket on its way out
        await self.send_frame({"type": "websocket.send", "text": text})
        metrics.SENT.inc(kind)
        if ts:
            metrics.FANOUT_DELAY.observe(max(0.0, time.time() - ts / 1000))

    async def send_json(self, body: dict) -> None:
        await self.send(text_data=json.dumps(body, separators=(",", ":")))
        metrics.SENT.inc(body.get("type", "event"))

    async def send_error(self, code: str, message: str, channel: object = None) -> None:
        # Every message names its channel; an error of no channel (or of one that is not
        # a name) says null.
        name = channel if isinstance(channel, str) else None
        body = {"type": "error", "channel": name, "code": code, "message": message, "ts": now_ms()}
        await self.send_json(body)

    async def violation(self, code: str, message: str) -> None:
        """Past a limit: say why, then close (POLICY_VIOLATION)."""
        if self.closing:
            return
        self.closing = True
        metrics.REFUSED.labels(reason=code.lower()).inc()
        await self.send_error(code, message)
        await self.close(code=POLICY_VIOLATION)
