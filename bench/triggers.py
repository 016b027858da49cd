"""Conditional orders: how long after the price crosses a trigger the triggered order is
placed, with the real clock (``manage.py runclock``) sweeping for crossed triggers; and
what the sweep's statement (``conditional.triggers_due``) costs with many orders waiting.

One PERP book (BENCH1-PERP, PAPER; 0.5 tick, 0.001 lot) at 64,000, emptied and funded
as bench/orders.py does. The clock runs as a subprocess on the bench database, with
INDEX_MANUAL=true and no index feed (the index is the script's), on Redis
(``$BENCH_REDIS_URL``, default redis://127.0.0.1:6379/10; empty: the in-memory layer).

A crossing, --crossings times after --warmup not counted, for each count of --waiting:

1. a trader places a STOP_LIMIT BUY (0.001 at 64,000, IOC) triggered at 64,100, through
   ``order_place`` (held UNTRIGGERED); then a random pause of 0-100 ms, so that the
   crossings fall anywhere in the clock's turn;
2. the price crosses 64,100, and ``t0`` is taken when that transaction has committed:

   * ``MARK``: one transaction sets the BTC index to 64,100 as ``set_index_price`` does
     (``index_set``) and writes the mark of the market's books as
     ``prices.marks_refresh`` would compute it (``pricing.futures_mark``: the book is
     empty, so the mark is the index), ``Book.mark_price`` and, for REAL,
     ``Market.mark_price``. The clock's own marks job, once a second, then computes the
     same mark from the index. It can still read the old index just before the commit
     and write the old mark just after it: a crossing whose mark is seen undone before
     the order fires is counted as ``undone`` and crossed again (a new ``t0``);
   * ``LAST``: a trade prints at 64,100 through the order path (a maker's GTC sell,
     then a taker's IOC buy; ``t0`` when the taker's ``order_place`` returns, after
     its commit): the way a last-price trigger is crossed in real life, by any web
     process at any moment of the clock's turn;

3. the script polls the order's row (one indexed read a millisecond) until its status
   is no longer UNTRIGGERED: ``t1``. The triggered IOC finds nothing to buy at 64,000
   and ends CANCELED or EXPIRED in the transaction that places it; the outcomes are
   counted (a REJECTED one would mean the order path refused it);
4. the price goes back to 64,000 (MARK: index and mark; LAST: a trade at 64,000, which
   leaves the taker flat).

--waiting N: N other conditional orders wait in the same book, never crossed (stops and
take-profits on both sides, MARK and LAST, triggers 25-33 % away), written straight
into trading_order; the sweep reads every one of them each time.

Reported: the latency t1 - t0 (median, p90, p99, max, the share within 100 ms) per
triggerBy and waiting count, and the clock's own duration of the sweep that placed it;
then, with the clock stopped, ``triggers_due()`` timed in this process (median of
--repeat calls, nothing due) for each waiting count and for --sweep-waiting (10,000),
and the execution time of its statement under ``EXPLAIN (ANALYZE, BUFFERS)`` (the plan
printed at --sweep-waiting).

Usage::

    python bench/triggers.py [--crossings 200] [--warmup 5] [--waiting 1,1000]
        [--by MARK,LAST] [--sweep-waiting 10000] [--repeat 20] [--json PATH]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench_triggers): created if missing and
migrated; its data is overwritten. Results: bench/results/triggers-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_bench_triggers"
DEFAULT_REDIS = "redis://127.0.0.1:6379/10"
SYMBOL = common.SYMBOLS[0]
MODE = common.MODE
MID = common.MID
CROSS = MID + 100
QTY = Decimal("0.001")
POLL_SECONDS = 0.001
TIMEOUT_SECONDS = 10.0
log = common.log


# -- data -----------------------------------------------------------------------------

# Stops and take-profits on both sides, never crossed near 64,000: a BUY stop or a SELL
# take-profit fires as the price rises to 80,000+, a SELL stop or a BUY take-profit as
# it falls to 48,000-.
_WAITING = """
    INSERT INTO trading_order
        (trader_id, market_id, mode, side, type, time_in_force, price, qty, filled_qty,
         filled_notional, status, reduce_only, covered, reserved, reserve_asset, source,
         cancel_reason, trigger_price, trigger_by, attached, created_at, updated_at)
    SELECT %(trader)s, %(market)s, %(mode)s,
           CASE WHEN i %% 4 IN (0, 3) THEN 'BUY' ELSE 'SELL' END,
           CASE WHEN i %% 4 < 2 THEN 'STOP_MARKET' ELSE 'TAKE_PROFIT_MARKET' END,
           'IOC', NULL, 0.001, 0, 0, 'UNTRIGGERED', false, false, 0, 'USDC', 'USER', '',
           CASE WHEN i %% 4 IN (0, 2) THEN 80000 + 0.5 * (i %% 10000)
                ELSE 48000 - 0.5 * (i %% 10000) END,
           CASE WHEN i %% 8 < 4 THEN 'MARK' ELSE 'LAST' END, '', now(), now()
    FROM generate_series(0, %(n)s - 1) AS i
"""


def waiting_set(market: Any, trader: Any, n: int) -> None:
    """Exactly n never-crossed conditional orders of `trader` waiting in the book."""
    from django.db import connection

    from trading.models import Order

    Order.objects.filter(trader=trader, status="UNTRIGGERED").delete()
    with connection.cursor() as c:
        c.execute(_WAITING, {"trader": trader.pk, "market": market.pk, "mode": MODE, "n": n})
        c.execute(f"ANALYZE {Order._meta.db_table}")


def mark_write(market: Any, index: Decimal) -> Decimal:
    """Index and marks in one transaction, as `set_index_price` then `marks_refresh`
    would leave them for this market's books; the PAPER book's mark."""
    from django.db import transaction

    from trading import pricing
    from trading.models import Book, Market
    from trading.services.prices import impact_prices_get, index_set

    with transaction.atomic():
        index_set(underlying=market.underlying, price=index)
        books = list(Book.objects.select_related("market").filter(market=market))
        impact = impact_prices_get(books=books)
        for book in books:
            bid, ask = impact[(market.pk, book.mode)]
            book.mark_price = pricing.futures_mark(
                index=index,
                basis_avg=book.basis_avg,
                impact_bid=bid,
                impact_ask=ask,
                band=market.mark_band,
                tick=market.tick_size,
            )
        Book.objects.bulk_update(books, ["mark_price"])
        for book in books:
            if book.mode == "REAL":
                Market.objects.filter(pk=market.pk).update(mark_price=book.mark_price)
    return next(b.mark_price for b in books if b.mode == MODE)


def trade_print(maker: Any, taker: Any, side: str, price: Decimal) -> None:
    """A trade at `price` through the order path: the taker's `side` against the maker."""
    from trading.orders.place import order_place

    other = "SELL" if side == "BUY" else "BUY"
    kw = dict(market=SYMBOL, mode=MODE, type="LIMIT", price=price, qty=QTY)
    order_place(trader=maker, side=other, time_in_force="GTC", **kw)
    placed, _ = order_place(trader=taker, side=side, time_in_force="IOC", **kw)
    assert placed["status"] == "FILLED", placed


# -- the clock ------------------------------------------------------------------------


def clock_start(db_url: str, redis_url: str, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, DATABASE_URL=db_url, DJANGO_SETTINGS_MODULE="dexsite.settings")
    env.update(common.SERVER_ENV)
    # INFO: its first line says it has started (and each sweep that fired, how long).
    env.update(INDEX_FEEDS="", INDEX_MANUAL="true", PYTHONUNBUFFERED="1", LOG_LEVEL="INFO")
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    out = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runclock"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while "index" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            common.process_group_stop(proc)
            raise RuntimeError(f"the clock did not start: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


# -- crossings ------------------------------------------------------------------------


_POLL = """
    SELECT o.status, b.mark_price, b.last_price
    FROM trading_order o, trading_book b
    WHERE o.id = %s AND b.id = %s
"""


def crossings(
    by: str, n: int, warmup: int, market: Any, book: Any, fx: Any, rng: random.Random
) -> dict[str, Any]:
    """`warmup` + `n` crossings (see the module docstring): latencies in ms."""
    from django.db import connection

    from trading.orders.place import order_place

    owner, maker, taker = fx.traders[0], fx.traders[1], fx.traders[2]
    latencies: list[float] = []
    ids: list[int] = []
    outcomes: Counter[str] = Counter()
    undone = 0
    with connection.cursor() as c:
        for i in range(warmup + n):
            placed, _ = order_place(
                trader=owner,
                market=SYMBOL,
                mode=MODE,
                side="BUY",
                type="STOP_LIMIT",
                qty=QTY,
                price=MID,
                time_in_force="IOC",
                trigger_price=CROSS,
                trigger_by=by,
            )
            order_id = int(placed["id"])
            time.sleep(rng.uniform(0, 0.1))
            while True:
                if by == "MARK":
                    assert mark_write(market, CROSS) == CROSS
                else:
                    trade_print(maker, taker, "BUY", CROSS)
                t0 = time.perf_counter()
                while True:
                    c.execute(_POLL, [order_id, book.pk])
                    status, mark, last = c.fetchone()
                    t1 = time.perf_counter()
                    if status != "UNTRIGGERED":
                        break
                    if (mark if by == "MARK" else last) != CROSS:
                        break
                    if t1 - t0 > TIMEOUT_SECONDS:
                        raise RuntimeError(f"order {order_id} not triggered in {TIMEOUT_SECONDS} s")
                    time.sleep(POLL_SECONDS)
                if status != "UNTRIGGERED":
                    break
                undone += 1  # the clock's marks job wrote the old mark back: cross again
            if i >= warmup:
                latencies.append((t1 - t0) * 1000)
                ids.append(order_id)
                outcomes[status] += 1
            if by == "MARK":
                mark_write(market, MID)
            else:
                trade_print(maker, taker, "SELL", MID)
    return {
        "by": by,
        "crossings": n,
        "median_ms": statistics.median(latencies),
        "p90_ms": common.percentile(latencies, 90),
        "p99_ms": common.percentile(latencies, 99),
        "max_ms": max(latencies),
        "min_ms": min(latencies),
        "within_100ms": sum(x <= 100 for x in latencies) / len(latencies),
        "outcomes": dict(outcomes),
        "undone": undone,
        "latencies_ms": [round(x, 2) for x in latencies],
        "order_ids": ids,
    }


def sweeps_placing(clock_log: str, ids: list[int]) -> list[float]:
    """The clock's duration (ms, as it logs it) of the sweep that placed each of `ids`:
    `triggers_due()` and the placements of that sweep."""
    took = {}
    for m in re.finditer(r"^triggers: (.*) \((\d+) ms\)$", clock_log, re.M):
        for order_id in re.findall(r"(\d+), [A-Z_]+", m[1]):
            took[int(order_id)] = float(m[2])
    return [took[i] for i in ids if i in took]


# -- the sweep's statement ------------------------------------------------------------


def sweep_timed(repeat: int) -> tuple[float, str]:
    """Median ms of `repeat` calls of `triggers_due()` (none due), and its SQL."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from trading.orders.conditional import triggers_due

    with CaptureQueriesContext(connection) as ctx:
        assert triggers_due() == []
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        triggers_due()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), ctx.captured_queries[0]["sql"]


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as c:
        c.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(r[0] for r in c.fetchall())


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--crossings", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--waiting", default="1,1000", help="never-crossed orders waiting (1,1000)")
    p.add_argument("--by", default="MARK,LAST", help="triggerBy of the crossed orders")
    p.add_argument("--sweep-waiting", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=20, help="timed calls of triggers_due()")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", type=Path, help="results file (bench/results/triggers-*.json)")
    args = p.parse_args(argv)
    waiting_counts = common.parse_list(args.waiting)
    kinds = [k.strip().upper() for k in args.by.split(",") if k.strip()]
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.json or out_dir / time.strftime("triggers-%Y%m%d-%H%M%S.json")

    t_start = time.perf_counter()
    db_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    os.environ.pop("REDIS_URL", None)
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    os.environ["INDEX_FEEDS"] = ""
    common.setup_django(db_url)
    from django.db import connection

    from trading.models import Book
    from trading.services.prices import index_set

    fx = common.make_fixture(4, with_tokens=False)
    common.reset_data(fx)
    market = common.perp_create(SYMBOL)
    Book.objects.filter(market=market).update(basis_avg=None)
    index_set(underlying=market.underlying, price=MID)
    assert mark_write(market, MID) == MID
    book = Book.objects.get(market=market, mode=MODE)
    waiter = fx.traders[3]
    trade_print(fx.traders[1], fx.traders[2], "SELL", MID)  # a last price, at 64,000
    info = common.machine()
    info["git"] = common.git_state()
    info["load_before"] = os.getloadavg()
    info["redis"] = redis_url or "in-memory channel layer"
    log(f"machine: {json.dumps(info)}")
    result: dict[str, Any] = {"machine": info, "argv": sys.argv, "runs": [], "sweep": []}

    def save() -> None:
        out_path.write_text(json.dumps(result, indent=1, default=str))

    rng = random.Random(args.seed)
    log_path = Path(tempfile.mkdtemp(prefix="bench-triggers-")) / "clock.log"
    connection.close()
    clock = clock_start(db_url, redis_url, log_path)
    log(f"clock started (pid {clock.pid}, log {log_path})")
    try:
        for n in waiting_counts:
            waiting_set(market, waiter, n)
            for by in kinds:
                t = time.perf_counter()
                run = crossings(by, args.crossings, args.warmup, market, book, fx, rng)
                run["waiting"] = n
                sweeps = sweeps_placing(log_path.read_text(), run["order_ids"])
                run["sweep_job_median_ms"] = statistics.median(sweeps) if sweeps else None
                run["sweep_job_p90_ms"] = common.percentile(sweeps, 90)
                run["sweep_job_max_ms"] = max(sweeps, default=None)
                result["runs"].append(run)
                save()
                log(
                    f"{by:>4}, {n:>5} waiting: {run['crossings']} crossings in "
                    f"{time.perf_counter() - t:.0f} s: median {run['median_ms']:.1f} ms, "
                    f"p90 {run['p90_ms']:.1f}, p99 {run['p99_ms']:.1f}, max {run['max_ms']:.1f}"
                    f" (min {run['min_ms']:.1f}); {run['outcomes']}, undone {run['undone']}; "
                    f"the clock's sweep that placed it: median {run['sweep_job_median_ms']} ms, "
                    f"p90 {run['sweep_job_p90_ms']}, max {run['sweep_job_max_ms']}"
                )
    finally:
        common.process_group_stop(clock)
    clock_log = log_path.read_text()
    result["clock_failures"] = clock_log.count("failed")
    result["machine"]["load_after"] = os.getloadavg()
    if result["clock_failures"]:
        log(f"clock job failures: {result['clock_failures']} (see {log_path})")

    for n in sorted({*waiting_counts, args.sweep_waiting}):
        waiting_set(market, waiter, n)
        sweep_timed(3)  # warm
        ms, sql = sweep_timed(args.repeat)
        plan = explain(sql)
        executed = float(re.search(r"Execution Time: ([\d.]+) ms", plan)[1])
        row: dict[str, Any] = {
            "waiting": n,
            "triggers_due_median_ms": ms,
            "explain_execution_ms": executed,
            "explain": plan,
        }
        if n == args.sweep_waiting:
            row["sql"] = sql
        result["sweep"].append(row)
        log(
            f"triggers_due(), {n:>6} waiting: median {ms:.2f} ms of {args.repeat}; "
            f"EXPLAIN ANALYZE: {executed:.2f} ms"
        )
    log("\n" + result["sweep"][-1]["explain"])
    save()

    log(
        "\n| triggerBy | waiting | crossings | median | p90 | p99 | max | ≤ 100 ms | sweep job median |"
    )
    log("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in result["runs"]:
        log(
            f"| {r['by']} | {r['waiting']:,} | {r['crossings']} | {r['median_ms']:.0f} ms "
            f"| {r['p90_ms']:.0f} ms | {r['p99_ms']:.0f} ms | {r['max_ms']:.0f} ms "
            f"| {r['within_100ms']:.0%} | {r['sweep_job_median_ms']} ms |"
        )
    log("\n| waiting | triggers_due() median | EXPLAIN ANALYZE execution |")
    log("|--:|--:|--:|")
    for r in result["sweep"]:
        log(
            f"| {r['waiting']:,} | {r['triggers_due_median_ms']:.2f} ms "
            f"| {r['explain_execution_ms']:.2f} ms |"
        )
    log(f"\nresults: {out_path}  ({time.perf_counter() - t_start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
