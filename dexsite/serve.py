"""`python -m dexsite.serve [-b HOST] [-p PORT] [APP]`: uvicorn (uvloop's event loop,
httptools for HTTP, the sans-I/O `websockets` implementation for WebSockets) serving
HTTP and WebSockets on one port. The Procfile's `ws` role (behind the router, which
sends it `/ws/`) and the embedded run's one web process (Procfile.dev) are this.

Production's plain HTTP is the `http` role's, granian serving `dexsite.wsgi` in 8
threads, not this process's HTTP bridge (dexsite/asgi.py): measured side by side
(bench/serving.py, docs/benchmarks.md "Serving"), the order path costs the same under
either (the matcher's CPU dominates it), but the server's own share of a request is
0.83-0.91 times uvicorn's (a 404: 0.55 against 0.64 ms; a refused order: 1.64 against
1.71 ms), and a router in front, which production needs for TLS anyway, costs
0.06-0.11 ms a request; behind nginx, granian answered 1.14-1.16 (refused orders) and
1.34-1.63 (404s) times the requests/s of uvicorn behind nginx.

Why uvicorn, measured against daphne on uvloop (the web role before) on this project's
2-core machine (docs/benchmarks.md, "The HTTP floor" and "WebSocket fan-out"): 1,000
sockets at 20 events/s are delivered at p99 29 ms and 19.7 µs of server CPU each (the
bare `websockets` server, same run: 26 ms, 14.6 µs; behind the router, 35 ms and 34.5 µs
with nginx's), where daphne took 315 ms and 48.1 µs (its run's baseline: 36 ms,
15.1 µs); HTTP requests cost 0.63 to 0.81 times the server CPU each (orders 113 -> 144/s,
p99 172 -> 131 ms). uvicorn
also hands a request's body to the application as it arrives, with flow control, so the
application refuses an oversized body by its Content-Length or as soon as it passes the limit, before
it is held in memory (daphne read every body whole first).

What the server itself bounds, besides the application's own limits:
  - WebSocket messages past WS_MAX_MESSAGE_BYTES (16 KiB, four times what the
    consumer takes) close the socket (1009) as they arrive;
  - headers: httptools' own limits; idle keep-alive connections close after 5 s.
Client addresses are the socket's: behind a proxy, DRF's NUM_PROXIES reads
X-Forwarded-For (README, "Production"), never uvicorn, which would trust the header
from any local client.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

# A client's command is a few hundred bytes; nothing it may send comes near this.
WS_MAX_MESSAGE_BYTES = int(os.environ.get("WS_MAX_MESSAGE_BYTES", str(16 * 1024)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dexsite.serve", description=__doc__)
    parser.add_argument("-b", "--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("-p", "--port", type=int, default=8000)
    parser.add_argument("app", nargs="?", default="dexsite.asgi:application")
    args = parser.parse_args(argv)
    uvicorn.run(
        args.app,
        host=args.bind,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        # Permessage-deflate costs CPU per message on every socket for small JSON.
        ws_per_message_deflate=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_level=os.environ.get("SERVER_LOG_LEVEL", "warning"),
    )


if __name__ == "__main__":
    main()
