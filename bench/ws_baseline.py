"""The floor for bench/ws_fanout.py: a bare ``websockets`` broadcast server.

Every socket on ``/ws/`` is greeted with ``{"type": "subscribed", ...}`` (as the
exchange's consumer does once it joined the market group) and then receives every
broadcast. A socket on ``/control`` sends ``{"run": ..., "count": ..., "rate": ...}``:
the server then builds ``count`` trade messages, the same text as
``realtime.broadcast.message("trade", channel, body)`` with the same body as the
exchange publisher (bench/ws_publisher.py), one every 1/rate s on an absolute schedule,
and sends each to all sockets at once with ``websockets.broadcast`` (one frame encoding
per socket, no per-socket task, no channel layer). A message's time (``tus``/``ts``)
is its slot on the schedule, as with the publisher. It replies
``{"sent": n, "max_late_s": ...}``.

No Django: run as ``python bench/ws_baseline.py --port P [--uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

import websockets
from websockets.asyncio.server import ServerConnection, serve

CHANNEL = "market.WSBENCH-PERP"
CLIENTS: set[ServerConnection] = set()


def trade_body(run: str, k: int, tus: int) -> dict:
    """The body bench/ws_publisher.py publishes (a trade as trading.services emits it,
    plus the bench's run, id and microsecond publish time)."""
    return {
        "id": k,
        "px": f"{64000 + (k % 40) * 0.5:.1f}",
        "qty": "0.010",
        "side": "BUY" if k % 2 else "SELL",
        "liquidation": False,
        "bench": run,
        "tus": tus,
    }


def trade_text(run: str, k: int, tus: int) -> str:
    """What realtime.broadcast.message() puts in "text" (same key order, separators)."""
    msg = {"type": "trade", "channel": CHANNEL, "ts": tus // 1000}
    for key, v in trade_body(run, k, tus).items():
        msg.setdefault(key, v)
    return json.dumps(msg, separators=(",", ":"))


async def broadcaster(run: str, count: int, rate: float) -> dict:
    t0 = time.perf_counter()
    wall0 = time.time_ns() // 1000
    late = 0.0
    for k in range(count):
        target = t0 + k / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        # The trade's time is its slot on the schedule: a server too busy to keep the
        # schedule shows it as latency, as it would with a separate publisher.
        websockets.broadcast(CLIENTS, trade_text(run, k, wall0 + round(k * 1e6 / rate)))
    return {"sent": count, "max_late_s": round(late, 4), "clients": len(CLIENTS)}


async def handler(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else ""
    if path.startswith("/control"):
        cmd = json.loads(await ws.recv())
        result = await broadcaster(cmd["run"], cmd["count"], cmd["rate"])
        await ws.send(json.dumps(result))
        return
    await ws.send(
        json.dumps(
            {"type": "subscribed", "channel": CHANNEL, "ts": int(time.time() * 1000)},
            separators=(",", ":"),
        )
    )
    CLIENTS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CLIENTS.discard(ws)


async def main_async(host: str, port: int) -> None:
    async with serve(handler, host, port, compression=None, max_size=2**16, backlog=1024):
        print(f"baseline listening on {host}:{port} pid {os.getpid()}", flush=True)
        await asyncio.Future()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop (default: asyncio)")
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        asyncio.run(main_async(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
