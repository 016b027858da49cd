"""Depth reads of a deep book: what `depth?levels=N` costs, old way and new, and what a
crowd of depth readers does to a bystander's request on the web process.

Data: one PERP book (BENCH1-PERP, PAPER; 0.5 tick, 0.001 lot) holding --levels price
levels, half bids below 64,000 and half asks above, one resting order each (every
third level two), written straight into trading_order by one ``INSERT ... SELECT FROM
generate_series``; the book's seq is moved on so that no process takes a cached copy
as current.

1. In this process, each read timed as the median of --repeat calls, old and new
   alternately, after checking that all of them give the same levels:

   * ``old``: the read before trading/depth.py (reproduced below): one statement summing
     every open level of the book, sorted in Python, cut to ``levels``;
   * ``database``: trading/depth.py with no snapshot and no engine copy in the process
     (another process moved the book): the book's seq, then each side's best levels;
   * ``engine``: the same with this process's engine copy current (it placed the last
     order): the seq, then the levels read in memory;
   * ``snapshot``: a read at a seq already read: the seq alone.

2. Over HTTP (``--http``, on by default): the Procfile's web role started on the bench
   database; --clients coroutines read ``GET depth?levels=1`` as fast as they are
   answered for --duration seconds, while a bystander sends ``GET /api/v1/me`` one after
   another; then the bystander alone. Reported: depth reads/s and the bystander's p50 /
   p95. ``--server-root DIR`` serves from another checkout (an A/B against the code
   before: ``git archive <rev> | tar -x -C DIR``; its schema is this one's).

Usage::

    python bench/depth.py [--levels 10000] [--repeat 15] [--no-http] [--clients 16]
        [--duration 10] [--server-root DIR] [--json PATH]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench_depth): created if missing and
migrated; its data is overwritten.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_bench_depth"
SYMBOL = common.SYMBOLS[0]
MODE = "PAPER"
log = common.log


# -- the read before trading/depth.py (trading/selectors.py at 8953097) --------------------

_OLD_SQL = """
    SELECT b.seq, o.side, o.price, SUM(o.qty - o.filled_qty), NULL
    FROM trading_book b
    JOIN trading_market m ON m.id = b.market_id
    LEFT JOIN trading_order o
      ON o.market_id = b.market_id AND o.mode = b.mode
     AND o.status IN ('NEW', 'PARTIALLY_FILLED')
    WHERE m.symbol = %s AND b.mode = %s
    GROUP BY b.seq, o.side, o.price
"""


def old_depth_get(*, symbol: str, mode: str, levels: int) -> dict[str, Any]:
    from django.db import connection

    from trading.presenters import dec

    with connection.cursor() as cur:
        cur.execute(_OLD_SQL, [symbol, mode])
        rows = cur.fetchall()
    seq = rows[0][0]
    sides: dict[str, dict[Decimal, Decimal]] = {"BUY": {}, "SELL": {}}
    for _, side, price, qty, _ in rows:
        if side is not None:
            sides[side][price] = sides[side].get(price, Decimal(0)) + qty
    bids = sorted(sides["BUY"].items(), reverse=True)[:levels]
    asks = sorted(sides["SELL"].items())[:levels]
    return {
        "market": symbol,
        "mode": mode,
        "seq": seq,
        "bids": [[dec(p), dec(q)] for p, q in bids],
        "asks": [[dec(p), dec(q)] for p, q in asks],
    }


# -- data -----------------------------------------------------------------------------

_INSERT = """
    INSERT INTO trading_order
        (trader_id, market_id, mode, side, type, time_in_force, price, qty, filled_qty,
         filled_notional, status, reduce_only, reserved, reserve_asset, source,
         cancel_reason, created_at, updated_at)
    SELECT %(trader)s, %(market)s, %(mode)s, side, 'LIMIT', 'GTC', price, 0.001, 0, 0,
           'NEW', false, 0, '', 'USER', '', now(), now()
    FROM (
        SELECT CASE WHEN i %% 2 = 0 THEN 'BUY' ELSE 'SELL' END AS side,
               CASE WHEN i %% 2 = 0 THEN 64000 - 0.5 * (i / 2 + 1)
                    ELSE 64000 + 0.5 * (i / 2 + 1) END AS price,
               i
        FROM generate_series(0, %(n)s - 1) AS i
        CROSS JOIN LATERAL generate_series(1, CASE WHEN i %% 6 < 2 THEN 2 ELSE 1 END)
    ) AS g
    ORDER BY i
"""


def load(levels: int) -> tuple[Any, Any]:
    """The deep book (see the module docstring): (its market, its trader)."""
    from django.db import connection

    from trading.models import Book, Order

    fx = common.make_fixture(1, with_tokens=True)
    common.reset_data(fx)
    market = common.perp_create(SYMBOL)
    with connection.cursor() as c:
        c.execute(
            _INSERT, {"trader": fx.traders[0].pk, "market": market.pk, "mode": MODE, "n": levels}
        )
        c.execute(f"VACUUM ANALYZE {Order._meta.db_table}")
    Book.objects.filter(market=market, mode=MODE).update(seq=int(time.time()))
    return market, fx


# -- in process -----------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None] | None = None) -> float:
    """Median ms of `repeat` calls of fn (each after `before`)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def in_process(market: Any, repeat: int) -> list[dict[str, Any]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trading import depth
    from trading.models import Book
    from trading.services.books import engine_book_build, engine_book_return, engine_cache_clear

    book = Book.objects.select_related("market").get(market=market, mode=MODE)

    def engine_current() -> None:
        engine_book_return(book, engine_book_build(book), book.seq)

    def read(levels: int) -> Callable[[], dict]:
        return lambda: depth.depth_get(symbol=SYMBOL, mode=MODE, levels=levels)

    def statements(fn: Callable[[], Any]) -> int:
        with CaptureQueriesContext(connection) as ctx:
            fn()
        return len(ctx.captured_queries)

    rows = []
    for levels in (1, 50, 500):
        old = lambda levels=levels: old_depth_get(symbol=SYMBOL, mode=MODE, levels=levels)  # noqa: E731
        want = old()
        engine_cache_clear()
        depth.snapshots_clear()
        assert read(levels)() == want, "database"
        engine_current()
        depth.snapshots_clear()
        assert read(levels)() == want, "engine"
        assert read(levels)() == want, "snapshot"
        engine_cache_clear()
        depth.snapshots_clear()
        row = {
            "levels": levels,
            "old_ms": timed(old, repeat),
            "database_statements": statements(read(levels)),
            "database_ms": timed(read(levels), repeat, depth.snapshots_clear),
        }
        engine_current()
        row["engine_ms"] = timed(read(levels), repeat, depth.snapshots_clear)
        row["snapshot_ms"] = timed(read(levels), repeat)
        row["snapshot_statements"] = statements(read(levels))
        engine_cache_clear()
        log(
            f"levels={levels:>4}: old {row['old_ms']:.2f} ms | database {row['database_ms']:.3f} ms"
            f" ({row['database_statements']} statements) | engine {row['engine_ms']:.3f} ms"
            f" | snapshot {row['snapshot_ms']:.3f} ms ({row['snapshot_statements']} statement)"
        )
        rows.append(row)
    return rows


# -- over HTTP ------------------------------------------------------------------------


async def _storm(port: int, token: str, clients: int, duration: float) -> dict[str, Any]:
    import aiohttp

    base = f"http://{common.HOST}:{port}/api/v1"
    depth_url = f"{base}/markets/{SYMBOL}/depth?mode={MODE}&levels=1"
    me = {"Authorization": f"Token {token}"}
    conn = aiohttp.TCPConnector(limit=clients + 1)
    async with aiohttp.ClientSession(connector=conn) as session:
        stop = time.perf_counter() + duration
        reads = 0
        errors = 0

        async def reader() -> None:
            nonlocal reads, errors
            while time.perf_counter() < stop:
                async with session.get(depth_url) as r:
                    await r.read()
                    if r.status == 200:
                        reads += 1
                    else:
                        errors += 1

        async def bystander(until: float) -> list[float]:
            out = []
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                async with session.get(f"{base}/me", headers=me) as r:
                    await r.read()
                    assert r.status == 200, r.status
                out.append((time.perf_counter() - t0) * 1000)
            return out

        crowd = [asyncio.create_task(reader()) for _ in range(clients)]
        busy = await bystander(stop)
        await asyncio.gather(*crowd)
        quiet = await bystander(time.perf_counter() + min(duration, 5))
    return {
        "clients": clients,
        "depth_reads_per_s": reads / duration,
        "depth_errors": errors,
        "me_p50_ms": common.percentile(busy, 50),
        "me_p95_ms": common.percentile(busy, 95),
        "me_alone_p50_ms": common.percentile(quiet, 50),
        "me_alone_p95_ms": common.percentile(quiet, 95),
    }


def over_http(db_url: str, fx: Any, clients: int, duration: float, root: Path) -> dict[str, Any]:
    out_dir = Path(tempfile.mkdtemp(prefix="bench-depth-"))
    saved = common.ROOT
    common.ROOT = root
    try:
        server = common.Server("web", db_url, out_dir)
    finally:
        common.ROOT = saved
    try:
        server.wait_ready()
        result = asyncio.run(_storm(server.port, fx.tokens[0], clients, duration))
    finally:
        server.stop()
    result["server_root"] = str(root)
    log(
        f"HTTP ({root}): {clients} clients on depth?levels=1: "
        f"{result['depth_reads_per_s']:.0f} reads/s ({result['depth_errors']} errors); "
        f"GET /me meanwhile p50 {result['me_p50_ms']:.1f} ms, p95 {result['me_p95_ms']:.1f} ms; "
        f"alone p50 {result['me_alone_p50_ms']:.1f} ms, p95 {result['me_alone_p95_ms']:.1f} ms"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--levels", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--no-http", dest="http", action="store_false")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--server-root", type=Path, default=ROOT)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    common.setup_django(db_url)
    market, fx = load(args.levels)
    log(f"{args.levels:,} levels on {SYMBOL} {MODE}")
    result: dict[str, Any] = {"levels": args.levels, "reads": in_process(market, args.repeat)}
    if args.http:
        from django.db import connections

        connections.close_all()
        result["http"] = over_http(db_url, fx, args.clients, args.duration, args.server_root)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
