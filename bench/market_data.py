"""Market-data reads against trade history: the 24-hour figures of a ticker and the
chart endpoint's candles, read from the stored candles (now) and by scanning every
trade of the period (before candles were kept), in one run on the same data.

The reads, each timed as the median of --repeat calls after one warm-up call, old and
new alternately:

* ``_stats_24h``: volume and opening price over the last 24 hours, for one market;
* ``markets_list(mode="REAL", symbol=...)``: the market list of one market;
* ``ticker_body(symbol, "REAL")`` (realtime.broadcast): what a book publishes after a
  trade (at most four times a second per book per process);
* ``candles_get(symbol, "REAL", interval, None, None)`` for 1m, 1h and 1d: the chart
  endpoint's work, 300 candles ending now.

"Old" is the code of trading/selectors.py before candles (reproduced below, the same
queries): the figures aggregate every trade of the last 24 hours, a chart fetches every
trade of its window and buckets them in Python. For ``markets_list`` and
``ticker_body`` the old ``_stats_24h`` is put in place of the new one during the call.

Data, per size N: one PERP market (BTC-PERP: 0.5 tick, 0.001 lot), mode REAL, N trades
written straight into trading_trade by one ``INSERT ... SELECT FROM generate_series``
(taker and maker order ids 1: there is no database constraint on them), created at
uniform intervals (with jitter) and ids in time order, prices a random walk of one
tick a trade from 64,000, quantities 1-40 lots. The candles are then built by the
migration's ``backfill``. Two loads per size:

* the last 24 hours: the trades fall inside the last 23 h 50 min, so that the old
  window (24 h back from now) and the new one (from the start of the minute 24 h ago)
  hold the same trades, with minutes to spare for the run; the 24-hour figures and the
  1m and 1h charts are measured on it;
* the last --chart-days days (300): the same N trades spread over them, for the 1d
  chart (300 daily candles).

Before timing, the results are compared: old and new 24-hour volume and open (and the
expected ones, from the trades), the whole ``markets_list`` and ticker bodies, and the
candles of each chart with the same end (Decimals compared as numbers). Any difference
aborts the run.

Usage::

    python bench/market_data.py [--quick] [--trades 10000,100000,1000000] [--repeat 7]
        [--chart-days 300] [--seed 1] [--json PATH]

The database is ``$BENCH_DATABASE_URL`` (default
postgres://postgres@127.0.0.1:5432/dexsite_bench_md): created if missing and migrated;
its trades and candles are overwritten.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import orders as common  # noqa: E402

DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/dexsite_bench_md"
SYMBOL = "BTC-PERP"
MODE = "REAL"
DEFAULT_SIZES = [10_000, 100_000, 1_000_000]
QUICK_SIZES = [10_000, 100_000]
# Inside both 24-hour windows (see the module docstring) for about ten minutes.
DAY_SPAN = timedelta(hours=23, minutes=50)
DAY_SPAN_TEXT = "23 h 50 min"
CHARTS_24H = ("1m", "1h")
CHARTS_LONG = ("1d",)

log = common.log


# -- the reads before candles (trading/selectors.py at f3be99e) -----------------------


def old_stats_24h(mode: str, markets: list | None = None) -> dict[int, dict[str, Any]]:
    """Volume and opening price over the last 24 hours, per market, from the trades."""
    from django.db.models import Count, Min, Sum
    from django.utils import timezone

    from trading.models import Trade

    since = timezone.now() - timedelta(hours=24)
    trades = Trade.objects.filter(mode=mode, created_at__gte=since)
    if markets is not None:
        trades = trades.filter(market__in=markets)
    rows = trades.values("market_id").annotate(volume=Sum("qty"), first_id=Min("id"), n=Count("id"))
    stats = {r["market_id"]: r for r in rows}
    first_ids = [r["first_id"] for r in rows]
    firsts = dict(Trade.objects.filter(id__in=first_ids).values_list("market_id", "price"))
    for market_id, r in stats.items():
        r["open"] = firsts.get(market_id)
    return stats


def old_candles_get(
    *, symbol: str, mode: str, interval: str, start_ms: int | None, end_ms: int | None
) -> list[dict[str, Any]]:
    """OHLCV candles from trades, ascending; at most MAX_CANDLES ending at `end_ms`."""
    from django.utils import timezone

    from trading.models import Trade
    from trading.presenters import dec, ms
    from trading.selectors import INTERVALS, MAX_CANDLES, market_get

    market = market_get(symbol)
    step = INTERVALS[interval] * 1000
    now_ms = int(timezone.now().timestamp() * 1000)
    end = end_ms if end_ms is not None else now_ms
    start = start_ms if start_ms is not None else end - step * 300
    start = max(start, end - step * MAX_CANDLES)
    start -= start % step
    to_dt = lambda v: datetime.fromtimestamp(v / 1000, tz=UTC)  # noqa: E731
    rows = (
        Trade.objects.filter(
            market=market, mode=mode, created_at__gte=to_dt(start), created_at__lte=to_dt(end)
        )
        .order_by("id")
        .values_list("created_at", "price", "qty")
    )
    candles: dict[int, dict[str, Any]] = {}
    for created, px, qty in rows.iterator(chunk_size=5000):
        bucket = ms(created)
        bucket -= bucket % step
        c = candles.get(bucket)
        if c is None:
            candles[bucket] = {
                "ts": bucket,
                "open": px,
                "high": px,
                "low": px,
                "close": px,
                "volume": qty,
            }
        else:
            c["high"] = max(c["high"], px)
            c["low"] = min(c["low"], px)
            c["close"] = px
            c["volume"] += qty
    return [
        {k: (dec(v) if k != "ts" else v) for k, v in c.items()} for _, c in sorted(candles.items())
    ]


@contextlib.contextmanager
def old_stats_in_place() -> Iterator[None]:
    """`markets_list` (and so `ticker_body`) with the old `_stats_24h`."""
    from trading import selectors

    new = selectors._stats_24h
    selectors._stats_24h = old_stats_24h
    try:
        yield
    finally:
        selectors._stats_24h = new


# -- data -----------------------------------------------------------------------------

_INSERT = """
    INSERT INTO trading_trade
        (market_id, mode, price, qty, taker_side, taker_order_id, maker_order_id,
         liquidation, created_at)
    SELECT %(market)s, %(mode)s,
           64000 + 0.5 * SUM(step) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING),
           lots * 0.001,
           CASE WHEN buy THEN 'BUY' ELSE 'SELL' END,
           1, 1, false,
           to_timestamp(%(start)s + (i + jitter) * %(slot)s)
    FROM (
        SELECT i, floor(random() * 3)::int - 1 AS step, 1 + floor(random() * 40)::int AS lots,
               random() AS jitter, random() < 0.5 AS buy
        FROM generate_series(0, %(n)s - 1) AS i
    ) AS g
    ORDER BY i
"""


def _vacuum(*tables: str) -> None:
    from django.db import connection

    with connection.cursor() as c:
        c.execute(f"VACUUM ANALYZE {', '.join(tables)}")


def load(market_id: int, n: int, span: timedelta, seed: int) -> dict[str, Any]:
    """Replace the trades and candles with `n` trades over the `span` before now, then
    build their candles with the migration's backfill. Returns what it did and took."""
    from django.apps import apps
    from django.db import connection, transaction
    from django.db.models import Count
    from django.utils import timezone

    from trading.models import Book, Candle, Trade

    backfill = importlib.import_module("trading.migrations.0005_candles").backfill
    t0 = time.perf_counter()
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as c:
        c.execute("TRUNCATE trading_trade, trading_candle RESTART IDENTITY")
        c.execute("SELECT setseed(%s)", [1 / (1 + seed)])
        c.execute(
            _INSERT,
            {
                "market": market_id,
                "mode": MODE,
                "start": (now - span).timestamp(),
                "slot": span.total_seconds() / n,
                "n": n,
            },
        )
    _vacuum("trading_trade")
    t_trades = time.perf_counter() - t0
    backfill(apps, None)
    _vacuum("trading_candle")
    t_candles = time.perf_counter() - t0 - t_trades
    last = Trade.objects.filter(market_id=market_id, mode=MODE).order_by("-id").first()
    Book.objects.filter(market_id=market_id, mode=MODE).update(last_price=last.price)
    per_resolution = dict(
        Candle.objects.values("resolution").annotate(n=Count("id")).values_list("resolution", "n")
    )
    return {
        "trades": Trade.objects.count(),
        "span_s": span.total_seconds(),
        "candles": {str(k): v for k, v in sorted(per_resolution.items())},
        "insert_s": round(t_trades, 2),
        "backfill_s": round(t_candles, 2),
    }


# -- checks ---------------------------------------------------------------------------


class Mismatch(Exception):
    pass


def _numbers(candles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v if k == "ts" else Decimal(v)) for k, v in c.items()} for c in candles]


def _window_ok(market_id: int) -> None:
    """The 24-hour trades are still inside the old (24 h back from now) window."""
    from django.db.models import Min
    from django.utils import timezone

    from trading.models import Trade

    first = Trade.objects.filter(market_id=market_id, mode=MODE).aggregate(t=Min("created_at"))
    if first["t"] <= timezone.now() - timedelta(hours=24):
        raise Mismatch("the 24-hour trades have aged out of the window: run a smaller size")


def check_24h(market: Any) -> dict[str, int]:
    """Old and new 24-hour figures, market lists and tickers are equal, and the figures
    are those of the trades. Returns the rows each way reads."""
    from django.db.models import Min, Sum
    from django.utils import timezone

    from realtime.broadcast import ticker_body
    from trading import candles, selectors
    from trading.models import Candle, Trade

    _window_ok(market.pk)
    trades = Trade.objects.filter(market=market, mode=MODE)
    agg = trades.aggregate(volume=Sum("qty"), first=Min("id"))
    expected = (agg["volume"], trades.get(pk=agg["first"]).price)
    old = old_stats_24h(MODE, [market])[market.pk]
    new = selectors._stats_24h(MODE, [market])[market.pk]
    for name, st in (("old", old), ("new", new)):
        if (st["volume"], st["open"]) != expected:
            raise Mismatch(
                f"24 h figures, {name}: volume {st['volume']} open {st['open']}, trades say "
                f"volume {expected[0]} open {expected[1]}"
            )
    with old_stats_in_place():
        old_list = selectors.markets_list(mode=MODE, symbol=market.symbol)
        old_ticker = ticker_body(market.symbol, MODE)
    new_list = selectors.markets_list(mode=MODE, symbol=market.symbol)
    new_ticker = ticker_body(market.symbol, MODE)
    if old_list != new_list:
        raise Mismatch(f"markets_list differs:\n old {old_list}\n new {new_list}")
    if old_ticker != new_ticker or not new_ticker.get("change24h"):
        raise Mismatch(f"ticker differs:\n old {old_ticker}\n new {new_ticker}")
    since = candles.period_start(timezone.now() - timedelta(hours=24), 60)
    minutes = Candle.objects.filter(market=market, mode=MODE, resolution=60, start__gte=since)
    return {"old_rows": trades.count(), "new_rows": minutes.count()}


def check_chart(market: Any, interval: str) -> dict[str, int]:
    """Old and new candles of one chart, both ending at the same instant, are equal.
    Returns the rows each way reads."""
    from django.utils import timezone

    from trading import candles, selectors
    from trading.models import Candle, Trade

    end = int(timezone.now().timestamp() * 1000)
    args = dict(symbol=market.symbol, mode=MODE, interval=interval, start_ms=None, end_ms=end)
    old = old_candles_get(**args)
    new = selectors.candles_get(**args)
    if not new:
        raise Mismatch(f"chart {interval}: no candles")
    a, b = _numbers(old), _numbers(new)
    if a != b:
        diff = next(((o, n) for o, n in zip(a, b, strict=False) if o != n), "one list is longer")
        raise Mismatch(
            f"chart {interval}: {len(old)} old candles, {len(new)} new; first difference {diff}"
        )
    seconds = selectors.INTERVALS[interval]
    step = seconds * 1000
    start = end - step * 300
    start -= start % step
    lo = datetime.fromtimestamp(start / 1000, tz=UTC)
    hi = datetime.fromtimestamp(end / 1000, tz=UTC)
    scanned = Trade.objects.filter(
        market=market, mode=MODE, created_at__gte=lo, created_at__lte=hi
    ).count()
    read = Candle.objects.filter(
        market=market,
        mode=MODE,
        resolution=candles.resolution_for(seconds),
        start__gte=lo,
        start__lte=hi,
    ).count()
    return {"old_rows": scanned, "new_rows": read, "candles": len(new)}


# -- timing ---------------------------------------------------------------------------


@dataclass
class Row:
    read: str
    trades: int
    span: str
    old_ms: list[float] = field(default_factory=list)
    new_ms: list[float] = field(default_factory=list)
    old_rows: int = 0
    new_rows: int = 0

    @property
    def old_median(self) -> float:
        return statistics.median(self.old_ms)

    @property
    def new_median(self) -> float:
        return statistics.median(self.new_ms)


def time_pair(old: Callable[[], Any], new: Callable[[], Any], repeat: int) -> tuple[list, list]:
    """Wall time in ms of `repeat` calls of each, alternately, after one warm-up each."""
    old()
    new()
    olds, news = [], []
    for _ in range(repeat):
        for fn, out in ((old, olds), (new, news)):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    return olds, news


def measure_24h(market: Any, n: int, repeat: int) -> list[Row]:
    from realtime.broadcast import ticker_body
    from trading import selectors

    rows = check_24h(market)
    symbol = market.symbol

    def old_list() -> Any:
        with old_stats_in_place():
            return selectors.markets_list(mode=MODE, symbol=symbol)

    def old_ticker() -> Any:
        with old_stats_in_place():
            return ticker_body(symbol, MODE)

    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "_stats_24h": (
            lambda: old_stats_24h(MODE, [market]),
            lambda: selectors._stats_24h(MODE, [market]),
        ),
        "markets_list": (old_list, lambda: selectors.markets_list(mode=MODE, symbol=symbol)),
        "ticker_body": (old_ticker, lambda: ticker_body(symbol, MODE)),
    }
    out = []
    for name, (old, new) in pairs.items():
        olds, news = time_pair(old, new, repeat)
        out.append(Row(name, n, "24 h", olds, news, **rows))
        log(f"  {name:<14} old {out[-1].old_median:9.2f} ms  new {out[-1].new_median:7.2f} ms")
    _window_ok(market.pk)
    return out


def measure_charts(
    market: Any, n: int, intervals: tuple[str, ...], span: str, repeat: int
) -> list[Row]:
    from trading import selectors

    out = []
    for interval in intervals:
        rows = check_chart(market, interval)
        args = dict(symbol=market.symbol, mode=MODE, interval=interval, start_ms=None, end_ms=None)
        olds, news = time_pair(
            lambda a=args: old_candles_get(**a), lambda a=args: selectors.candles_get(**a), repeat
        )
        row = Row(f"candles_get {interval}", n, span, olds, news)
        row.old_rows, row.new_rows = rows["old_rows"], rows["new_rows"]
        out.append(row)
        log(
            f"  chart {interval:<8} old {row.old_median:9.2f} ms  new {row.new_median:7.2f} ms"
            f"  ({rows['candles']} candles; {row.old_rows:,} trades vs {row.new_rows:,} "
            "stored candles read)"
        )
    return out


# -- report ---------------------------------------------------------------------------


def tables(rows: list[Row]) -> str:
    out = []
    for read in dict.fromkeys(r.read for r in rows):
        mine = [r for r in rows if r.read == read]
        out.append(f"\n### {read} (trades over the last {mine[0].span})\n")
        out.append("| trades | old ms | new ms | old/new | rows read (old: trades, new: candles) |")
        out.append("|--:|--:|--:|--:|--:|")
        for r in mine:
            ratio = r.old_median / r.new_median
            out.append(
                f"| {r.trades:,} | {r.old_median:,.2f} | {r.new_median:,.2f} | {ratio:,.1f}x | "
                f"{r.old_rows:,} / {r.new_rows:,} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes 10,000 and 100,000")
    ap.add_argument("--trades", help="comma list of sizes (10000,100000,1000000)")
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per read (7)")
    ap.add_argument("--chart-days", type=int, default=300, help="span of the 1d load (300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="results file (bench/results/market-data-*.json)")
    args = ap.parse_args(argv)
    sizes = (
        common.parse_list(args.trades)
        if args.trades
        else (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    )
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.json or out_dir / time.strftime("market-data-%Y%m%d-%H%M%S.json")

    t_start = time.perf_counter()
    common.setup_django(os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    market = common.perp_create(SYMBOL)
    info = common.machine()
    info["git"] = common.git_state()
    log(f"machine: {json.dumps(info)}")
    log(
        f"sizes {sizes}; {args.repeat} timed calls per read after one warm-up, old and new "
        f"alternately; medians. 24 h figures, 1m and 1h charts: N trades over the last "
        f"{DAY_SPAN_TEXT}; 1d chart: a separate load of N trades over the last {args.chart_days} "
        "days"
    )
    rows: list[Row] = []
    loads: list[dict[str, Any]] = []

    def save() -> None:
        out_path.write_text(
            json.dumps(
                dict(
                    machine=info,
                    argv=sys.argv,
                    repeat=args.repeat,
                    chart_days=args.chart_days,
                    loads=loads,
                    rows=[
                        {**asdict(r), "old_median_ms": r.old_median, "new_median_ms": r.new_median}
                        for r in rows
                    ],
                ),
                indent=1,
                default=str,
            )
        )

    long_span = f"{args.chart_days} days (a separate load)"
    try:
        for n in sizes:
            log(f"\n== {n:,} trades over the last {DAY_SPAN_TEXT} ==")
            loads.append(load(market.pk, n, DAY_SPAN, args.seed))
            log(f"  loaded: {json.dumps(loads[-1])}")
            rows += measure_24h(market, n, args.repeat)
            rows += measure_charts(market, n, CHARTS_24H, "24 h", args.repeat)
            save()
            log(f"\n== {n:,} trades over the last {args.chart_days} days ==")
            loads.append(load(market.pk, n, timedelta(days=args.chart_days), args.seed))
            log(f"  loaded: {json.dumps(loads[-1])}")
            rows += measure_charts(market, n, CHARTS_LONG, long_span, args.repeat)
            save()
    except Mismatch as e:
        log(f"\nABORTED: old and new reads differ: {e}")
        save()
        return 1
    log(f"\n== medians of {args.repeat} calls, ms (wall time) ==")
    log(tables(rows))
    log("\nchecked: old and new results equal for every read and size")
    log(f"results: {out_path}  ({time.perf_counter() - t_start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
