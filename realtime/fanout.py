"""Market channels: one channel-layer subscription per group per process.

Were each socket to join `market.<SYMBOL>` itself, the channel layer would queue every
event once per socket, and Channels would wake each socket's consumer task to decode
and handle it: a queue, a task and a decode per socket per event, most of a delivery's
CPU. Instead the process joins the group once, with a channel of its own, receives
each event once (already serialised: `realtime.broadcast.message`) and hands it to
every local consumer that follows the channel, in the order the layer delivered it.
The consumer keeps the per-socket protocol (seq, gaps, snapshots) and sends the text.

Events that queue up while a fan-out runs go out together: each socket gets all of
them back to back, so the server writes them to its connection at once, and the loop
gets a turn every YIELD_EVERY deliveries. Delivering them one event at a time across all
sockets would cost a write (and two epoll registrations) per socket per event, and not
yielding would hold the loop for as long as a backlog takes.

Each event loop has its own `GroupFanout` (channel layers are per loop too).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

YIELD_EVERY = 500  # deliveries, about, between two turns of the event loop
MAX_BATCH = 50  # queued events sent to each socket in one go
READ_RETRY_PAUSE = 0.05  # seconds after a failed read of a group's channel


class Member(Protocol):
    async def group_event(self, event: dict[str, Any]) -> None: ...


class _Group:
    __slots__ = ("channel", "members", "name", "queue", "reader", "ready", "sender")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[Member, None] = {}  # insertion-ordered set
        self.channel: str | None = None
        self.ready: asyncio.Future | None = None
        self.reader: asyncio.Task | None = None
        self.sender: asyncio.Task | None = None
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()


class GroupFanout:
    """The groups this process follows on behalf of its local consumers."""

    def __init__(self, layer: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.groups: dict[str, _Group] = {}
        self._closing: set[asyncio.Task] = set()

    async def join(self, group: str, member: Member) -> None:
        """Deliver `group`'s events to `member` from now on. Returns once the process
        is in the group: an event published after that reaches the member."""
        g = self.groups.get(group)
        if g is None:
            g = self.groups[group] = _Group(group)
            g.ready = asyncio.ensure_future(self._open(g))
        g.members[member] = None
        # Shielded: a joiner that gives up does not cancel the others' subscription.
        await asyncio.shield(g.ready)

    async def leave(self, group: str, member: Member) -> None:
        """Stop delivering `group` to `member`; the last member out leaves the group."""
        g = self.groups.get(group)
        if g is None or member not in g.members:
            return
        del g.members[member]
        if not g.members:
            await self._close(g)

    def forget(self, member: Member) -> None:
        """Drop `member` from every group at once (a consumer that ended without
        leaving); groups left empty are closed in the background."""
        for g in list(self.groups.values()):
            if g.members.pop(member, 0) is None and not g.members:
                task = asyncio.ensure_future(self._close(g))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def members(self, group: str) -> int:
        g = self.groups.get(group)
        return len(g.members) if g else 0

    async def _open(self, g: _Group) -> None:
        try:
            g.channel = await self.layer.new_channel()
            await self.layer.group_add(g.name, g.channel)
        except BaseException:
            if self.groups.get(g.name) is g:
                del self.groups[g.name]
            raise
        g.reader = asyncio.ensure_future(self._read(g))
        g.sender = asyncio.ensure_future(self._send(g))

    async def _close(self, g: _Group) -> None:
        if self.groups.get(g.name) is g:
            del self.groups[g.name]
        try:
            await g.ready
        except Exception:
            return  # never joined
        g.reader.cancel()
        g.sender.cancel()
        await self.layer.group_discard(g.name, g.channel)

    async def _read(self, g: _Group) -> None:
        """The group's events, in the layer's order, into the group's queue."""
        receive, channel, put = self.layer.receive, g.channel, g.queue.put_nowait
        while True:
            try:
                put(await receive(channel))
            except Exception:
                # A message the layer cannot decode: skip it, keep the group. A pause,
                # so that a layer that keeps failing (Redis gone) is not spun on.
                log.exception("reading group %s failed", g.name)
                await asyncio.sleep(READ_RETRY_PAUSE)

    async def _send(self, g: _Group) -> None:
        """Hand the queued events to every member, each its whole batch in order."""
        queue, since_yield = g.queue, 0
        while True:
            batch = [await queue.get()]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            # A copy: members may come and go while one of them sends.
            for member in list(g.members):
                for event in batch:
                    try:
                        await member.group_event(event)
                    except Exception:
                        log.exception("delivering a %s event failed", event.get("type"))
                since_yield += len(batch)
                if since_yield >= YIELD_EVERY:
                    # Sends do not wait: without this the loop would write nothing and
                    # serve no one else until every socket had the batch.
                    since_yield = 0
                    await asyncio.sleep(0)


_fanouts: dict[int, GroupFanout] = {}


def fanout(layer: Any) -> GroupFanout:
    """The running event loop's fan-out over `layer`."""
    loop = asyncio.get_running_loop()
    f = _fanouts.get(id(loop))
    if f is None or f.loop is not loop or f.layer is not layer:
        for key in [k for k, v in _fanouts.items() if v.loop.is_closed()]:
            del _fanouts[key]
        f = _fanouts[id(loop)] = GroupFanout(layer, loop)
    return f
