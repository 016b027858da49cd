"""Publisher for bench/ws_fanout.py: trades into a market group, from outside the server.

A separate process with Django set up (DATABASE_URL, REDIS_URL, CHANNEL_LAYER_BACKEND
come from the environment, as for the server), publishing the way the exchange does
after a commit: ``realtime.broadcast.publish([message("trade", channel, body)])``. The
body is a trade as trading.services emits it plus the bench's ``bench`` (run id),
``id`` (0..count-1) and ``tus`` (publish time, epoch µs; the message's ``ts`` is the
same instant in ms). One message every 1/rate s on an absolute schedule (a late one
goes out at once, the next ones keep the schedule); a message's time is its slot on
the schedule, which is when it is published as long as publish() keeps up (the
reported max_late_s says whether it did).

Protocol: prints {"event": "ready"} once Django and the channel layer are warm, waits
for a line on stdin, publishes, prints {"event": "published", ...} and exits.

Usage: python bench/ws_publisher.py --symbol WSBENCH-PERP --run R --count 400 --rate 20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ws_baseline import trade_body  # noqa: E402


class _Errors(logging.Handler):
    """publish() logs and swallows failures: count them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record.getMessage()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbol", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    args = p.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dexsite.settings")
    import django

    django.setup()
    from channels.layers import get_channel_layer
    from django.conf import settings

    from realtime import names
    from realtime.broadcast import message, publish

    errors = _Errors()
    logging.getLogger("realtime.broadcast").addHandler(errors)
    channel = names.market_channel(args.symbol, "REAL")
    layer = get_channel_layer()
    # Warm up: the publisher loop, its Redis connection (and, for the core layer, the
    # Lua script cache) before the first timed message.
    publish([message("trade", channel + "-warmup", {"warmup": True})])
    print(
        json.dumps(
            {
                "event": "ready",
                "pid": os.getpid(),
                "layer": f"{type(layer).__module__}.{type(layer).__name__}",
                "redis": settings.REDIS_URL,
            }
        ),
        flush=True,
    )
    sys.stdin.readline()

    durations = []
    max_late = 0.0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    wall0 = time.time_ns() // 1000
    for k in range(args.count):
        target = t0 + k / args.rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            max_late = max(max_late, -delay)
        # The trade's time is its slot on the schedule (the actual publish time while
        # publish() keeps up): time lost blocking in publish() counts as latency.
        tus = wall0 + round(k * 1e6 / args.rate)
        event = message("trade", channel, trade_body(args.run, k, tus), ts=tus // 1000)
        s = time.perf_counter()
        publish([event])
        durations.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    durations.sort()
    print(
        json.dumps(
            {
                "event": "published",
                "count": args.count,
                "seconds": round(elapsed, 3),
                "rate": round(args.count / elapsed, 2) if elapsed else None,
                "publish_ms_p50": round(statistics.median(durations) * 1000, 3),
                "publish_ms_p99": round(durations[int(len(durations) * 0.99)] * 1000, 3),
                "publish_ms_max": round(durations[-1] * 1000, 3),
                "max_late_s": round(max_late, 4),
                "cpu_s": round(cpu, 3),
                "errors": errors.count,
                "last_error": errors.last,
                "text_bytes": len(event["text"]),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
