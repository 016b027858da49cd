"""The consumer's own cost per delivered group message, in process (no sockets).

A companion of bench/ws_fanout.py: isolates what ``ExchangeConsumer`` and channels do
for each ``ws.forward`` event and each socket, with a no-op ASGI send, so the numbers
exclude daphne, autobahn, Twisted, the kernel and the channel layer:

* A1. channels' ``AsyncConsumer.dispatch()`` as deployed, for 1,000 consumers at once
  (it awaits ``aclose_old_connections()``, a ``sync_to_async`` hop to the one
  thread-sensitive executor thread, before every handler);
* A2. the same, one consumer after the other;
* B. ``ws_forward()`` called directly (what a ``dispatch`` override for ``ws.forward``
  would do);
* C. B with the two per-delivery Prometheus calls replaced by no-ops;
* D. B without the per-socket ``asyncio.Lock`` (an event without ``seq``);
* E. a bare ``AsyncWebsocketConsumer.send(text_data=...)``;
* F. ``group_event()``, what the per-process market fan-out (realtime/fanout.py) calls
  for each local socket.

Each figure: µs per delivery, median of 5 rounds of (10 x N) calls.

Usage (the app at APP_ROOT, default the work tree; a database URL is needed only for
Django's setup, nothing is queried)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dexsite_bench_ws \\
        python bench/ws_consumer_path.py [--sockets 1000] [--app-root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _Nop:
    def labels(self, **kw):
        return self

    def inc(self, *a) -> None:
        pass

    def observe(self, *a) -> None:
        pass


async def _measure(label: str, fn, consumers, event, rounds: int, concurrent: bool) -> float:
    results = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            if concurrent:
                await asyncio.gather(*(fn(c, event) for c in consumers))
            else:
                for c in consumers:
                    await fn(c, event)
        results.append((time.perf_counter() - t0) / (rounds * len(consumers)) * 1e6)
    med = statistics.median(results)
    print(f"{label:<66} {med:8.2f} µs per delivery (min {min(results):.2f})", flush=True)
    return med


async def run(n: int) -> dict[str, float]:
    from channels.consumer import AsyncConsumer

    from realtime import metrics, names
    from realtime.broadcast import message
    from realtime.consumers import ExchangeConsumer, Subscription, frame_sender

    channel = names.parse("market.WSBENCH-PERP")

    def consumer() -> ExchangeConsumer:
        c = ExchangeConsumer()
        c.scope = {"type": "websocket"}

        async def base_send(msg) -> None:
            pass

        c.base_send = base_send
        # What connect() sets up, without a channel layer or a handshake.
        c.lock = asyncio.Lock()
        c.busy = 0
        c.backlog = deque()
        c.closing = False
        c.send_frame = frame_sender(base_send)
        c.subs = {channel.name: Subscription(channel)}
        return c

    consumers = [consumer() for _ in range(n)]
    body = {"id": 1, "px": "64000.0", "qty": "0.010", "side": "BUY", "liquidation": False}
    event = message("trade", channel.name, body)
    rounds = 10
    out = {}

    async def deployed(c, ev):
        await AsyncConsumer.dispatch(c, ev)

    async def handler(c, ev):
        await c.ws_forward(ev)

    async def no_lock(c, ev):
        if c.subs.get(ev["channel"]) is not None:
            await c.forward_text(ev["text"], ev.get("kind", "event"), ev.get("ts"))

    async def group_event(c, ev):
        await c.group_event(ev)

    async def bare(c, ev):
        await c.send(text_data=ev["text"])

    out["A1"] = await _measure(
        f"A1. dispatch() as deployed, {n} consumers at once", deployed, consumers, event, 2, True
    )
    out["A2"] = await _measure(
        "A2. dispatch() as deployed, one after the other", deployed, consumers, event, 2, False
    )
    out["B"] = await _measure(
        "B.  ws_forward() alone (dispatch override)", handler, consumers, event, rounds, False
    )
    sent, delay = metrics.SENT, metrics.FANOUT_DELAY
    metrics.SENT, metrics.FANOUT_DELAY = _Nop(), _Nop()
    try:
        out["C"] = await _measure(
            "C.  B without the per-delivery metrics", handler, consumers, event, rounds, False
        )
    finally:
        metrics.SENT, metrics.FANOUT_DELAY = sent, delay
    out["D"] = await _measure(
        "D.  B without the per-socket lock", no_lock, consumers, event, rounds, False
    )
    out["F"] = await _measure(
        "F.  group_event(): what the market fan-out calls per socket",
        group_event,
        consumers,
        event,
        rounds,
        False,
    )
    out["E"] = await _measure(
        "E.  bare AsyncWebsocketConsumer.send(text)", bare, consumers, event, rounds, False
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--app-root", type=Path, default=ROOT)
    args = p.parse_args()
    sys.path.insert(0, str(args.app_root.resolve()))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench-only-not-secret")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    asyncio.run(run(args.sockets))


if __name__ == "__main__":
    main()
