"""Orders per second through `POST /api/v1/trade/batch` against the same orders sent one
request each, in one run: what sharing a transaction per batch buys.

One client in this process calls Django's WSGI handler directly (no server, no network:
the figure is the exchange's own cost per order), with the flow of bench/orders.py (GTC
limits around 64,000, about half crossing, 64 funded traders) on one book. Each
repetition measures both ways on the same state (the tables are emptied and the traders
re-funded before each), alternately; it prints orders/s and ms per request for each,
the ratio, and after each measurement that every acknowledged order is in the database
and `check_invariants()` is empty. Results are medians over the repetitions.

Usage::

    python bench/batch.py [--batches 100] [--size 20] [--repeat 3]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench), created and migrated if missing;
its data is overwritten.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402


def _post(handler: Any, path: str, token: str, body: dict) -> dict:
    raw = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(raw),
        "CONTENT_LENGTH": str(len(raw)),
        "CONTENT_TYPE": "application/json",
        "HTTP_AUTHORIZATION": f"Token {token}",
    }
    status: list[str] = []
    data = b"".join(handler(environ, lambda s, h: status.append(s)))
    if not status[0].startswith(("200", "201")):
        raise RuntimeError(f"{path}: {status[0]} {data[:300]!r}")
    return json.loads(data)


def _flow(fx: common.Fixture, n: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ti, symbol, side, price, qty = common.next_order(rng, len(fx.traders), fx.symbols[:1])
        body = {
            "market": symbol,
            "mode": common.MODE,
            "side": side,
            "type": "LIMIT",
            "price": str(price),
            "qty": str(qty),
        }
        out.append((fx.tokens[ti], body))
    return out


def measure(handler: Any, fx: common.Fixture, way: str, batches: int, size: int, seed: int):
    """(orders/s, ms per request, acknowledged ids)."""
    flow = _flow(fx, batches * size, seed)
    acked: list[int] = []
    t0 = time.perf_counter()
    if way == "batch":
        # One trader's batch per request: the flow's orders, each batch sent by the
        # token of its first order's trader.
        for k in range(batches):
            part = flow[k * size : (k + 1) * size]
            results = _post(
                handler, "/api/v1/trade/batch", part[0][0], {"orders": [b for _, b in part]}
            )["results"]
            acked += [r["id"] for r in results if "id" in r]
        requests = batches
    else:
        for token, body in flow:
            acked.append(_post(handler, "/api/v1/trade", token, body)["id"])
        requests = len(flow)
    elapsed = time.perf_counter() - t0
    return len(flow) / elapsed, elapsed / requests * 1000, acked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--size", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    db_url = os.environ.get("BENCH_DATABASE_URL", common.DEFAULT_DB)
    common.setup_django(db_url)
    common.set_broadcast(False)
    from django.core.handlers.wsgi import WSGIHandler

    from trading.invariants import check_invariants
    from trading.models import Order

    handler = WSGIHandler()
    fx = common.make_fixture(64)
    common.log(
        f"one book, one client, {args.batches} batches of {args.size} vs the same orders "
        f"one per request; {args.repeat} repetitions"
    )
    figures: dict[str, list[tuple[float, float]]] = {"single": [], "batch": []}
    for rep in range(args.repeat):
        for way in ("single", "batch"):
            common.reset_data(fx)
            # Warm-up: the engine book and the prepared statements.
            measure(handler, fx, way, 5, args.size, seed=10_000 + rep)
            common.reset_data(fx)
            per_s, ms, acked = measure(handler, fx, way, args.batches, args.size, seed=rep)
            found = Order.objects.filter(pk__in=acked).count()
            problems = check_invariants()
            ok = "OK" if found == len(acked) and not problems else "FAIL"
            common.log(
                f"  rep {rep + 1} {way:<6}: {per_s:7.0f} orders/s  {ms:6.2f} ms/request"
                f"  acknowledged {len(acked)}, in the database {found},"
                f" check_invariants()={problems!r} -> {ok}"
            )
            if ok != "OK":
                sys.exit(1)
            figures[way].append((per_s, ms))
    single = statistics.median(p for p, _ in figures["single"])
    batch = statistics.median(p for p, _ in figures["batch"])
    common.log(
        f"medians: one per request {single:.0f} orders/s"
        f" ({statistics.median(m for _, m in figures['single']):.2f} ms/request);"
        f" batches of {args.size} {batch:.0f} orders/s"
        f" ({statistics.median(m for _, m in figures['batch']):.2f} ms/request);"
        f" ratio {batch / single:.2f}x"
    )


if __name__ == "__main__":
    main()
